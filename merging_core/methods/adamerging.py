"""AdaMerging (Yang et al., ICLR 2024) for LoRA: entropy-learned task or (module, task) weights.

Space: ΔW, computed in factor space. ``ΔW = Σ_t λ_t ΔW_t`` (task-wise) or per module
``Σ_t λ_{t,l} ΔW_t^l`` (layer-wise, one λ per LoRA module and task), run through the shared
coefficient-weighted forward (:mod:`merging_core.directional`) with ``φ = λ`` tied over each
adapter's rank-1 directions, so the forward is ``W_0 x + Σ_t λ_t B_t (A_t x)`` and the result is
exact stacked factors (rank ``Σ r_t``). It depends on ΔW only.

Two variants (methods.md §9, tara.md §3.6):

* ``original``: λ clamped to [0, 1] at every forward, init 0.3, Adam lr 1e-3, 500 steps, two
  batches of 16 per task per step, loss = plain sum of the task entropies. The paper draws the
  unlabeled batches from the *test* split; a bundle context only exposes unlabeled validation
  inputs, so we use those (as TARA does).
* ``tara_repo``: as the TARA repository runs it: no clamp, init 0.4, AdamW lr 1e-3, 250 steps,
  one batch of 16, loss = ``Σ_i ρ_i (H_i − z_i)`` (linear preference-weighted, anchors ``z_i``).

The entropies are those of ``softmax(s · cos)``, ``s = entropy_scale``; by default the bundle's
own ``logit_scale`` (≈ 14.5 on vision8), which AdaMerging's own recipe uses and which scored best
on vision8's validation split (layer-wise original, seed 0: 55.3 at the bundle's scale, 40.9 at
``s = 1``). TARA's default differs (see :mod:`merging_core.methods.tara`).

Reference: https://arxiv.org/abs/2310.02575
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.directional import (
    ShouldStop,
    TaskCoefficients,
    TrainConfig,
    compute_anchors,
    merged_result,
    task_indices,
    train_coefficients,
)
from merging_core.merge import MergeResult, Progress
from merging_core.methods.registry import Param, register_method
from merging_core.methods.tara import (
    TaraRun,
    cached_banks,
    resolve_device,
    seed_from,
    used_scale,
)
from merging_core.preference import normalise_preference

PAPER_URL = "https://arxiv.org/abs/2310.02575"

VARIANTS: dict[str, dict[str, Any]] = {
    "original": dict(init=0.3, clamp=True, optimizer="adam", steps=500, batches_per_step=2),
    "tara_repo": dict(init=0.4, clamp=False, optimizer="adamw", steps=250, batches_per_step=1),
}


def run_adamerging(
    adapter_set: AdapterSet,
    context: Any,
    *,
    layerwise: bool = True,
    variant: str = "original",
    rho: Sequence[float] | None = None,
    steps: int | None = None,
    lr: float = 1e-3,
    batch_size: int = 16,
    entropy_scale: float | None = None,
    seed: int = 0,
    init_phi: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TaraRun:
    """Learn AdaMerging coefficients on ``context``'s unlabeled data.

    Args:
        adapter_set: adapters named like the context's tasks.
        context: a bundle's ``TaskContext``.
        layerwise: one λ per (module, task) (else one per task).
        variant: ``"original"`` or ``"tara_repo"`` (see the module docstring).
        rho: preference for ``tara_repo``'s linear loss (ignored by ``original``).
        steps: optimiser steps (None = the variant's default, 500 or 250).
        lr, batch_size, seed: loop settings and batch-order seed.
        entropy_scale: logit scale inside the entropies and anchors (None = the bundle's own,
            the default; 1.0 = un-scaled cosines). Evaluation is never affected.
        init_phi: warm start (a previous run's ``state``, ``{"lambda": ...}``).
        device: must match ``context.device``. progress / should_stop: as in ``run_tara``.

    Returns:
        A :class:`~merging_core.methods.tara.TaraRun` (``state["lambda"]`` holds λ, unclamped).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    spec = VARIANTS[variant]
    dev = resolve_device(context, device)
    prefs = normalise_preference(rho, count=len(adapter_set))
    tasks = task_indices(adapter_set, context)
    banks = cached_banks(adapter_set, variant="a", device=dev)
    coeffs = TaskCoefficients(
        banks, num_tasks=len(adapter_set), layerwise=layerwise, init=spec["init"],
        clamp=spec["clamp"], warm=init_phi,
    )  # fmt: skip
    objective, anchors = _objective(adapter_set, context, variant, prefs, dev, entropy_scale)
    config = TrainConfig(
        steps=int(spec["steps"] if steps is None else steps), lr=lr, batch_size=batch_size,
        batches_per_step=spec["batches_per_step"], optimizer=spec["optimizer"],
        entropy_scale=entropy_scale,
    )  # fmt: skip
    trace = train_coefficients(
        context, tasks, banks, coeffs, objective, config=config,
        generator=torch.Generator().manual_seed(int(seed)), progress=progress,
        should_stop=should_stop,
    )  # fmt: skip
    state = coeffs.state()
    diagnostics = {
        "lambda": _used_lambda(coeffs).tolist(),
        "loss_first": trace.losses[0] if trace.losses else None,
        "loss_last": trace.losses[-1] if trace.losses else None,
        "steps_done": trace.steps_done,
        "variant": variant,
        "anchors": list(anchors),
    }
    result = merged_result(adapter_set, banks, coeffs(), diagnostics=diagnostics, extras=state)
    method = "adamerging_layer" if layerwise else "adamerging_task"
    params = {"variant": variant, "steps": config.steps, "lr": float(lr),
              "batch_size": int(batch_size), "rho": prefs,
              "entropy_scale": used_scale(context, entropy_scale)}  # fmt: skip
    result = replace(result, method=method, params=params, seed=int(seed))
    return TaraRun(
        method=method, rho=prefs, alpha=0.0,
        scalarisation="linear" if variant == "tara_repo" else "sum", state=state,
        losses=trace.losses, entropies=trace.entropies, anchors=anchors, result=result,
        steps_done=trace.steps_done, stopped=trace.stopped, seconds=trace.seconds,
    )  # fmt: skip


def _used_lambda(coeffs: TaskCoefficients) -> torch.Tensor:
    lam = coeffs.lam.detach().cpu()
    return lam.clamp(0.0, 1.0) if coeffs.clamp else lam


def _objective(adapter_set, context, variant, prefs, dev, entropy_scale):
    if variant == "original":
        return (lambda H: H.sum()), tuple(0.0 for _ in prefs)
    anchors = compute_anchors(adapter_set, context, scale=entropy_scale)
    rho_t, z_t = torch.tensor(prefs, device=dev), torch.tensor(anchors, device=dev)
    return (lambda H: torch.sum(rho_t * (H - z_t))), anchors


ADA_PARAMS = (
    Param("variant", "choice", "original", choices=tuple(VARIANTS),
          help="original: clamp [0,1], init 0.3, Adam, entropy sum; tara_repo: TARA repo's "
               "baseline (init 0.4, AdamW, Σρ(H−z))."),
    Param("steps", "int", 0, low=0, high=5000, step=10,
          help="Optimisation steps; 0 = the variant's default (500 original, 250 tara_repo)."),
    Param("lr", "float", 1e-3, low=1e-5, high=1.0, log=True, help="Learning rate."),
    Param("batch_size", "int", 16, low=1, high=512, help="Unlabeled inputs per task per batch."),
    Param("rho", "weights", None, low=0.0, high=1e6,
          help="Preference ρ for the tara_repo loss (normalised; ignored by original)."),
    Param("entropy_scale", "float", 0.0, low=0.0, high=100.0, step=0.5,
          help="Logit scale inside the entropy objective: softmax(s · cos); 0 = the bundle's own "
               "logit scale (default, as AdaMerging's own recipe; 1 = un-scaled cosines). "
               "Evaluation is never affected."),
)  # fmt: skip


def _method(layerwise: bool):
    def method(
        adapter_set, *, context, generator=None, progress=None, steps=0, entropy_scale=0.0,
        **params,
    ):  # fmt: skip
        run = run_adamerging(
            adapter_set, context, layerwise=layerwise, steps=steps or None,
            entropy_scale=entropy_scale or None, seed=seed_from(generator), progress=progress,
            **params,
        )  # fmt: skip
        return run.result

    return method


@register_method(
    name="adamerging_task",
    pretty_name="AdaMerging (task-wise)",
    reference_url=PAPER_URL,
    space="factors",
    params=ADA_PARAMS,
    needs_data=True,
    tags=("data-driven",),
)
def adamerging_task(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """Task-wise AdaMerging: one entropy-learned λ per adapter."""
    return _method(False)(adapter_set, **kwargs)


@register_method(
    name="adamerging_layer",
    pretty_name="AdaMerging (layer-wise)",
    reference_url=PAPER_URL,
    space="factors",
    params=ADA_PARAMS,
    needs_data=True,
    tags=("data-driven",),
)
def adamerging_layer(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """Layer-wise AdaMerging: one entropy-learned λ per LoRA module and adapter."""
    return _method(True)(adapter_set, **kwargs)
