"""TARA-Merging (Jeong, Lee, Yoon, CVPR 2026): preference-aligned per-direction LoRA merge weights.

Space: factors. The merged update of every module is ``B · Σ_f diag(φ_f) A_f`` over a direction
bank (:mod:`merging_core.directional`): Variant A weights each rank-1 LoRA direction
``φ_ij b_ij a_ijᵀ``; Variant B weights the task blocks of the exact SVD of ``[ΔW_1 | … | ΔW_N]``,
``φ_ik σ_k u_k v_{k,i}ᵀ``. The result is exact factors of rank ``Σ r_i`` (A) or
``min(Σ r_i, d_out)`` (B). Variant B acts on ΔW (its bank is the SVD of the ΔWs, so
``(B·M, M⁻¹·A)`` gives the same answer as ``(B, A)``). Variant A deliberately acts on the LoRA
factors (its directions are the stored rank-1 pairs), so only its starting point is
factorisation-invariant.

``φ`` is learned by minimising the smooth-Tchebycheff scalarisation of the per-task prediction
entropies on unlabeled validation batches against the anchors ``z_i`` (each adapter's own
entropy), as the official code runs it (tara.md §3): init ``λ/N = 0.4`` (= Task Arithmetic at
``λ = 0.4``), AdamW lr 1e-3, one batch of 16 per task per step, 250 steps, ``α = 1``, ``ρ = 1/N``.

The entropies (and anchors) are those of ``softmax(s · cos)`` with ``s = entropy_scale``. The
official code uses un-scaled cosines (``s = 1``, tara.md §6.1); our bundles' heads use CLIP's
``logit_scale`` (≈ 14.5 on vision8). The default ``s = 3`` was chosen on vision8's validation
split (seed 0, 250 steps; average normalised accuracy TARA-A 42.1 / 45.8 / 41.1 and TARA-B
29.9 / 30.2 / 29.9 at s = 1 / 3 / 14.5). Every setting stays below Task Arithmetic there.

Reference: https://arxiv.org/abs/2603.26299
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.directional import (
    DirectionBank,
    DirectionCoefficients,
    ShouldStop,
    TrainConfig,
    build_banks,
    compute_anchors,
    merged_result,
    task_indices,
    train_coefficients,
)
from merging_core.merge import MergeResult, Progress
from merging_core.methods.registry import Param, register_method
from merging_core.preference import SCALARISATIONS, normalise_preference, scalarise

PAPER_URL = "https://arxiv.org/abs/2603.26299"
_BANK_CACHE: OrderedDict[tuple[str, str, str], dict[str, DirectionBank]] = OrderedDict()
_BANK_CACHE_SIZE = 8
DEFAULT_ENTROPY_SCALE = 3.0  # chosen on vision8 validation accuracy (module docstring)


@dataclass(frozen=True)
class TaraRun:
    """One TARA (or AdaMerging) optimisation.

    Attributes:
        method: ``"tara_a"``, ``"tara_b"``, ``"adamerging_task"`` or ``"adamerging_layer"``.
        rho: preference used (simplex). alpha: STCH smoothing. scalarisation: loss form.
        state: trained coefficients (module path -> φ for TARA; ``{"lambda": λ}`` for
            AdaMerging), CPU; pass as ``init_phi`` to warm-start the next run.
        losses: objective per step. entropies: per step, the N task batch entropies.
        anchors: ``z_i`` used (computed, not hard-coded). result: the merge in exact factors.
        steps_done / stopped: progress when cancelled. seconds: wall time of the loop.
    """

    method: str
    rho: tuple[float, ...]
    alpha: float
    scalarisation: str
    state: Mapping[str, torch.Tensor]
    losses: list[float]
    entropies: list[list[float]]
    anchors: tuple[float, ...]
    result: MergeResult
    steps_done: int
    stopped: bool
    seconds: float
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def phi(self) -> Mapping[str, torch.Tensor]:
        """Alias of :attr:`state` (TARA's φ per module)."""
        return self.state


def adapter_set_key(adapter_set: AdapterSet) -> str:
    """Content hash of an adapter set (adapter hashes in order, module list)."""
    h = hashlib.sha256()
    for adapter in adapter_set.adapters:
        h.update(adapter.content_hash().encode())
    h.update("|".join(adapter_set.modules).encode())
    return h.hexdigest()


def cached_banks(
    adapter_set: AdapterSet, *, variant: str, device: torch.device
) -> dict[str, DirectionBank]:
    """Direction banks (the Variant-B SVDs included) cached per (adapters, variant, device)."""
    key = (adapter_set_key(adapter_set), variant, str(device))
    if key in _BANK_CACHE:
        _BANK_CACHE.move_to_end(key)
        return _BANK_CACHE[key]
    banks = {p: b.to(device) for p, b in build_banks(adapter_set, variant=variant).items()}
    _BANK_CACHE[key] = banks
    while len(_BANK_CACHE) > _BANK_CACHE_SIZE:
        _BANK_CACHE.popitem(last=False)
    return banks


def resolve_device(context: Any, device: torch.device | str | None) -> torch.device:
    """The context's device; an explicit ``device`` must match it (the encoder is not moved).

    Raises:
        ValueError: ``device`` differs from where the context's encoder lives.
    """
    here = torch.device(context.device)
    if device is not None and torch.device(device).type != here.type:
        raise ValueError(
            f"device {device!r} differs from the context's device {str(here)!r}; "
            "build the context on that device (bundle.context(device))"
        )
    return here


def used_scale(context: Any, entropy_scale: float | None) -> float:
    """The logit scale the entropy objective ran at (None = the context's own)."""
    return float(context.logit_scale if entropy_scale is None else entropy_scale)


def run_tara(
    adapter_set: AdapterSet,
    context: Any,
    *,
    variant: str = "b",
    rho: Sequence[float] | None = None,
    alpha: float = 1.0,
    scalarisation: str = "stch",
    steps: int = 250,
    lr: float = 1e-3,
    batch_size: int = 16,
    init: float = 0.4,
    entropy_scale: float | None = DEFAULT_ENTROPY_SCALE,
    seed: int = 0,
    init_phi: Mapping[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TaraRun:
    """Learn TARA's per-direction weights ``φ`` for ``adapter_set`` on ``context``'s data.

    Args:
        adapter_set: adapters named like the context's tasks (task order = set order).
        context: a bundle's ``TaskContext`` (encoder, heads, unlabeled validation inputs).
        variant: ``"a"`` (per LoRA rank-1 direction) or ``"b"`` (shared SVD directions).
        rho: preference, normalised onto the simplex (None = uniform ``1/N``).
        alpha: STCH smoothing ``α > 0``. scalarisation: ``"stch"``, ``"stch_abs"``, ``"linear"``.
        steps, lr, batch_size: AdamW loop (250, 1e-3, 16 per task per step).
        init: initial φ for every direction (0.4 = Task Arithmetic at λ = 0.4).
        entropy_scale: logit scale inside the entropies and anchors (None = the bundle's own
            ``logit_scale``; 1.0 = un-scaled cosines as in the official code). Evaluation is
            never affected.
        seed: seeds the batch order. init_phi: warm start (a previous run's ``state``).
        device: must match ``context.device`` (CUDA when the bundle built it there).
        progress: ``callback(fraction, message)``. should_stop: polled each step to cancel.

    Returns:
        A :class:`TaraRun` whose ``result`` holds exact factors.
    """
    if variant not in ("a", "b"):
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    if scalarisation not in SCALARISATIONS:
        raise ValueError(
            f"scalarisation must be one of {list(SCALARISATIONS)}, got {scalarisation!r}"
        )
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    dev = resolve_device(context, device)
    prefs = normalise_preference(rho, count=len(adapter_set))
    tasks = task_indices(adapter_set, context)
    anchors = compute_anchors(adapter_set, context, scale=entropy_scale)
    banks = cached_banks(adapter_set, variant=variant, device=dev)
    coeffs = DirectionCoefficients(banks, init=init, warm=init_phi)
    rho_t, z_t = torch.tensor(prefs, device=dev), torch.tensor(anchors, device=dev)

    def objective(H: torch.Tensor) -> torch.Tensor:
        return scalarise(H, rho_t, z_t, kind=scalarisation, alpha=alpha)

    trace = train_coefficients(
        context, tasks, banks, coeffs, objective,
        config=TrainConfig(steps=int(steps), lr=lr, batch_size=batch_size, optimizer="adamw",
                           entropy_scale=entropy_scale),
        generator=torch.Generator().manual_seed(int(seed)),
        progress=progress, should_stop=should_stop,
    )  # fmt: skip
    state = coeffs.state()
    method = f"tara_{variant}"
    result = merged_result(
        adapter_set, banks, coeffs(), diagnostics=_diagnostics(prefs, anchors, trace, alpha),
        extras={"phi": state, "variant": variant},
    )  # fmt: skip
    params = {"rho": prefs, "alpha": float(alpha), "scalarisation": scalarisation,
              "steps": int(steps), "lr": float(lr), "batch_size": int(batch_size),
              "init": float(init), "entropy_scale": used_scale(context, entropy_scale)}  # fmt: skip
    result = replace(result, method=method, params=params, seed=int(seed))
    return TaraRun(
        method=method, rho=prefs, alpha=float(alpha), scalarisation=scalarisation, state=state,
        losses=trace.losses, entropies=trace.entropies, anchors=anchors, result=result,
        steps_done=trace.steps_done, stopped=trace.stopped, seconds=trace.seconds,
    )  # fmt: skip


def _diagnostics(prefs, anchors, trace, alpha) -> dict[str, Any]:
    return {
        "rho": list(prefs),
        "alpha": float(alpha),
        "anchors": list(anchors),
        "loss_first": trace.losses[0] if trace.losses else None,
        "loss_last": trace.losses[-1] if trace.losses else None,
        "entropies_last": trace.entropies[-1] if trace.entropies else None,
        "steps_done": trace.steps_done,
        "stopped": trace.stopped,
        "seconds": trace.seconds,
    }


def seed_from(generator: torch.Generator | None) -> int:
    """A run seed drawn from ``merge()``'s generator (0 without one)."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


ENTROPY_SCALE_PARAM = Param(
    "entropy_scale", "float", DEFAULT_ENTROPY_SCALE, low=0.1, high=100.0, log=True,
    help="Logit scale inside the entropy objective and the anchors: softmax(s · cos). 1 = "
         "un-scaled cosines as in the official TARA code; the bundle's heads use ≈ 14.5. "
         "Evaluation is never affected.",
)  # fmt: skip

TARA_PARAMS = (
    Param("rho", "weights", None, low=0.0, high=1e6,
          help="Preference ρ over tasks (one weight per adapter, normalised onto the simplex; "
               "default uniform 1/N)."),
    Param("alpha", "float", 1.0, low=1e-3, high=1e3, log=True,
          help="STCH smoothing α: small focuses on the worst task, large approaches linear."),
    Param("scalarisation", "choice", "stch", choices=SCALARISATIONS,
          help="stch: α·log Σ exp(ρ(H−z)/α) as in the official code; stch_abs: |H−z| inside; "
               "linear: Σ ρ(H−z)."),
    Param("steps", "int", 250, low=0, high=5000, step=10,
          help="Optimisation steps (one batch per task per step); 250 in the released scripts."),
    Param("lr", "float", 1e-3, low=1e-5, high=1.0, log=True, help="AdamW learning rate."),
    Param("batch_size", "int", 16, low=1, high=512, help="Unlabeled inputs per task per step."),
    Param("init", "float", 0.4, low=-2.0, high=4.0, step=0.05,
          help="Initial φ for every direction; 0.4 starts exactly at Task Arithmetic λ = 0.4."),
    ENTROPY_SCALE_PARAM,
)  # fmt: skip


def _registered(variant: str):
    def method(
        adapter_set: AdapterSet,
        *,
        context: Any,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        **params: Any,
    ) -> MergeResult:
        run = run_tara(
            adapter_set, context, variant=variant, seed=seed_from(generator), progress=progress,
            **params,
        )  # fmt: skip
        return run.result

    return method


@register_method(
    name="tara_a",
    pretty_name="TARA-A (per-rank directions)",
    reference_url=PAPER_URL,
    space="factors",
    params=TARA_PARAMS,
    needs_data=True,
    tags=("data-driven", "preference"),
)
def tara_a(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """TARA-A: one learned signed weight per LoRA rank-1 direction, STCH entropy objective."""
    return _registered("a")(adapter_set, **kwargs)


@register_method(
    name="tara_b",
    pretty_name="TARA-B (shared SVD directions)",
    reference_url=PAPER_URL,
    space="factors",
    params=TARA_PARAMS,
    needs_data=True,
    tags=("data-driven", "preference"),
)
def tara_b(adapter_set: AdapterSet, **kwargs: Any) -> MergeResult:
    """TARA-B: learned weights per task block of the exact SVD of the concatenated updates."""
    return _registered("b")(adapter_set, **kwargs)
