"""AdaMerging (Yang et al., ICLR 2024) for LoRA: entropy-learned task or (module, task) weights.

Space: ΔW, computed in factor space. ``ΔW = Σ_t λ_t ΔW_t`` (task-wise) or per module
``Σ_t λ_{t,l} ΔW_t^l`` (layer-wise, one λ per LoRA module and task), run through the shared
coefficient-weighted forward (:mod:`merging_core.adaptive`) with ``φ = λ`` tied over each
adapter's rank-1 directions, so the forward is ``W_0 x + Σ_t λ_t B_t (A_t x)`` and the result is
exact stacked factors (rank ``Σ r_t``). It depends on ΔW only.

Two variants (methods.md §9, tara.md §3.6):

* ``original``: λ clamped to [0, 1] at every forward, init 0.3, Adam lr 1e-3, 500 steps, two
  batches of 16 per task per step, loss = plain sum of the task entropies. The paper draws the
  unlabeled batches from the *test* split; a bundle context only exposes unlabeled validation
  inputs, so we use those (as TARA does).
* ``tara_repo``: as the TARA repository runs it: no clamp, init 0.4, AdamW lr 1e-3, 250 steps,
  one batch of 16, loss = ``Σ_i ρ_i (H_i − z_i)`` (linear preference-weighted, anchors ``z_i``).

The entropies are those of the heads' own logits by default (``entropy_scale = 0``; on vision8
CLIP's ``logit_scale`` ≈ 14.5 times the cosines, as AdaMerging's own recipe uses); ``s > 0`` uses
``softmax(s · z)`` with ``z`` the un-scaled logits. TARA's default differs (see
:mod:`merging_core.methods.tara`).

Reference: https://arxiv.org/abs/2310.02575
"""

from __future__ import annotations

from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.cache import AdaptiveCache, anchors_for, banks_for
from merging_core.adaptive.coefficients import TaskCoefficients
from merging_core.adaptive.common import check_inputs, run_record, seed_from, warm_state
from merging_core.adaptive.loop import (
    PRECISIONS,
    ShouldStop,
    TrainConfig,
    merged_result,
    train_coefficients,
)
from merging_core.methods.registry import Param, register_method
from merging_core.preference import normalise_preference
from merging_core.results import MergeResult, Progress
from merging_core.taskdata import TaskData

PAPER_URL = "https://arxiv.org/abs/2310.02575"

VARIANTS: dict[str, dict[str, Any]] = {
    "original": dict(init=0.3, clamp=True, optimizer="adam", steps=500, batches_per_step=2),
    "tara_repo": dict(init=0.4, clamp=False, optimizer="adamw", steps=250, batches_per_step=1),
}


def run_adamerging(
    adapter_set: AdapterSet,
    *,
    layerwise: bool,
    task_data: TaskData,
    variant: str,
    rho: tuple[float, ...] | None,
    steps: int,
    lr: float,
    batch_size: int,
    entropy_scale: float,
    precision: str = "bfloat16",
    generator: torch.Generator | None = None,
    warm_start: Any = None,
    should_stop: ShouldStop | None = None,
    device: Any = None,
    cache: AdaptiveCache | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Learn AdaMerging coefficients (the registered methods call this; use ``merge``).

    ``state["lambda"]`` holds λ (unclamped); ``steps = 0`` takes the variant's default.
    """
    method = "adamerging_layer" if layerwise else "adamerging_task"
    spec = VARIANTS[variant]
    dev = check_inputs(adapter_set, task_data, device)
    prefs = normalise_preference(rho, count=len(adapter_set))
    scale = float(entropy_scale) if entropy_scale > 0 else None  # None: the heads' own logits
    banks = banks_for(cache, adapter_set, variant="a", device=dev)
    warm = warm_state(warm_start, method)
    coeffs = TaskCoefficients(
        banks, num_tasks=len(adapter_set), layerwise=layerwise, init=spec["init"],
        clamp=spec["clamp"], warm=warm,
    )  # fmt: skip
    objective, anchors = _objective(adapter_set, task_data, variant, prefs, dev, scale, cache)
    config = TrainConfig(
        steps=int(steps or spec["steps"]), lr=lr, batch_size=int(batch_size),
        batches_per_step=spec["batches_per_step"], optimizer=spec["optimizer"],
        entropy_scale=scale, precision=precision,
    )  # fmt: skip
    trace = train_coefficients(
        task_data, list(adapter_set.names), banks, coeffs, objective, config=config,
        generator=torch.Generator().manual_seed(seed_from(generator)), progress=progress,
        should_stop=should_stop,
    )  # fmt: skip
    diagnostics = {
        "lambda": coeffs.used().detach().cpu().tolist(),
        "loss_first": trace.losses[0] if trace.losses else None,
        "loss_last": trace.losses[-1] if trace.losses else None,
        "variant": variant, "anchors": list(anchors), "entropy_scale_used": scale,
        "steps_planned": config.steps,
    }  # fmt: skip
    return merged_result(
        adapter_set, banks, coeffs(), diagnostics=diagnostics, state=coeffs.state(),
        run=run_record(trace, task_data, dev, warm), extras={"warm_start": warm} if warm else None,
    )  # fmt: skip


def _objective(adapter_set, data, variant, prefs, dev, scale, cache):
    if variant == "original":
        return (lambda H: H.sum()), tuple(0.0 for _ in prefs)
    anchors = anchors_for(cache, adapter_set, data, scale=scale)
    rho_t, z_t = torch.tensor(prefs, device=dev), torch.tensor(anchors, device=dev)
    return (lambda H: torch.sum(rho_t * (H - z_t))), anchors


ADA_PARAMS = (
    Param("variant", "choice", "original", choices=tuple(VARIANTS),
          help="original: clamp [0,1], init 0.3, Adam, entropy sum; tara_repo: TARA repo's "
               "baseline (init 0.4, AdamW, Σρ(H−z))."),
    Param("steps", "int", 0, low=0, high=2000, step=10,
          help="Optimisation steps; 0 = the variant's default (500 original, 250 tara_repo)."),
    Param("lr", "float", 1e-3, low=1e-5, high=1.0, log=True, help="Learning rate."),
    Param("batch_size", "int", 16, low=1, high=512, help="Unlabeled inputs per task per batch."),
    Param("rho", "weights", None, low=0.0, high=1e6,
          help="Preference ρ for the tara_repo loss (normalised; ignored by original)."),
    Param("entropy_scale", "float", 0.0, low=0.0, high=100.0, step=0.5,
          help="Scale inside the entropy objective: softmax(s · z), z the un-scaled logits; 0 = "
               "the heads' own logits (default, as AdaMerging's own recipe). Evaluation is never "
               "affected."),
    Param("precision", "choice", "bfloat16", choices=PRECISIONS,
          help="Forward precision while learning (bfloat16 autocast, the default, is faster on "
               "CPU with the same accuracies on vision8; evaluation is never affected)."),
)  # fmt: skip


@register_method(
    name="adamerging_task",
    pretty_name="AdaMerging (task-wise)",
    reference_url=PAPER_URL,
    space="factors",
    params=ADA_PARAMS,
    needs_data=True,
    tags=("data-driven", "preference"),
)
def adamerging_task(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """Task-wise AdaMerging: one entropy-learned λ per adapter."""
    return run_adamerging(adapter_set, layerwise=False, **kwargs)


@register_method(
    name="adamerging_layer",
    pretty_name="AdaMerging (layer-wise)",
    reference_url=PAPER_URL,
    space="factors",
    params=ADA_PARAMS,
    needs_data=True,
    tags=("data-driven", "preference"),
)
def adamerging_layer(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """Layer-wise AdaMerging: one entropy-learned λ per LoRA module and adapter."""
    return run_adamerging(adapter_set, layerwise=True, **kwargs)
