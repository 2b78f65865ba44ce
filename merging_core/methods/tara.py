"""TARA-Merging (Jeong, Lee, Yoon, CVPR 2026): preference-aligned per-direction LoRA merge weights.

Space: factors. The merged update of every module is ``B · Σ_f diag(φ_f) A_f`` over a direction
bank (:mod:`merging_core.adaptive.banks`): Variant A weights each rank-1 LoRA direction
``φ_ij b_ij a_ijᵀ``; Variant B weights the task blocks of the exact SVD of ``[ΔW_1 | … | ΔW_N]``,
``φ_ik σ_k u_k v_{k,i}ᵀ``. The result is exact factors of rank ``Σ r_i`` (A) or
``min(Σ r_i, d_out)`` (B). Variant B acts on ΔW (its bank is the SVD of the ΔWs, so
``(B·M, M⁻¹·A)`` gives the same answer as ``(B, A)``). Variant A deliberately acts on the LoRA
factors (its directions are the stored rank-1 pairs), so only its starting point is
factorisation-invariant.

``φ`` is learned by minimising the smooth-Tchebycheff scalarisation of the per-task prediction
entropies on unlabeled validation batches against the anchors ``z_i`` (each adapter's own
entropy), as the official code runs it (tara.md §3): init ``λ/N = 0.4`` (= Task Arithmetic at
``λ = 0.4``), AdamW lr 1e-3, one batch of 16 per task per step, ``α = 1``, ``ρ = 1/N``.

The entropies (and anchors) are those of ``softmax(s · z)``, ``z`` the head's un-scaled logits
(cosines for zero-shot heads, as in the official code, tara.md §6.1; raw logits for trained
heads) and ``s = entropy_scale``; 0 (the default) takes the task data's own scale, which a bundle
may record (``base_model.entropy_scale``) and which is 1 — the official un-scaled form —
otherwise. Neither shipped bundle records one. (An earlier round picked ``s = 3`` on vision8's
validation split; that tuned a method's default to a bundle, and is gone.)

Steps: 0 (the default) follows the official schedule, 5 epochs of ``min(50, ⌈N_val / batch⌉)``
steps, where ``N_val`` is the smallest task's unlabeled split (250 only when every task has
≥ 800 inputs at batch 16; 40 on vision8, 160 on nli6).

Reference: https://arxiv.org/abs/2603.26299
"""

from __future__ import annotations

import math
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.cache import AdaptiveCache, anchors_for, banks_for
from merging_core.adaptive.coefficients import DirectionCoefficients
from merging_core.adaptive.common import (
    check_inputs,
    resolve_entropy_scale,
    run_record,
    seed_from,
    warm_state,
)
from merging_core.adaptive.loop import (
    PRECISIONS,
    ShouldStop,
    TrainConfig,
    merged_result,
    train_coefficients,
)
from merging_core.methods.registry import Param, register_method
from merging_core.preference import SCALARISATIONS, normalise_preference, scalarise
from merging_core.results import MergeResult, Progress
from merging_core.taskdata import TaskData

PAPER_URL = "https://arxiv.org/abs/2603.26299"
OFFICIAL_EPOCHS, OFFICIAL_MAX_STEPS_PER_EPOCH = 5, 50


def official_steps(data: TaskData, tasks: list[str], batch_size: int) -> int:
    """The official schedule: ``5 × min(50, ⌈N_val / batch_size⌉)`` (smallest task's split)."""
    n = min(data.num_unlabeled(t) for t in tasks)
    return OFFICIAL_EPOCHS * min(OFFICIAL_MAX_STEPS_PER_EPOCH, math.ceil(n / batch_size))


def run_tara(
    adapter_set: AdapterSet,
    *,
    variant: str,
    task_data: TaskData,
    rho: tuple[float, ...] | None,
    alpha: float,
    scalarisation: str,
    steps: int,
    lr: float,
    batch_size: int,
    init: float,
    entropy_scale: float,
    precision: str = "bfloat16",
    generator: torch.Generator | None = None,
    warm_start: Any = None,
    should_stop: ShouldStop | None = None,
    device: Any = None,
    cache: AdaptiveCache | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Learn TARA's per-direction weights ``φ`` (the registered methods call this; use ``merge``).

    Returns a factored ``MergeResult`` whose ``state`` is ``φ`` per module and whose ``run``
    records steps, time, device, the task data's fingerprint and the warm start's hash.
    """
    method = f"tara_{variant}"
    dev = check_inputs(adapter_set, task_data, device)
    tasks = list(adapter_set.names)
    scale = resolve_entropy_scale(task_data, entropy_scale)
    prefs = normalise_preference(rho, count=len(adapter_set))
    anchors = anchors_for(cache, adapter_set, task_data, scale=scale)
    banks = banks_for(cache, adapter_set, variant=variant, device=dev)
    warm = warm_state(warm_start, method)
    coeffs = DirectionCoefficients(banks, init=init, warm=warm)
    rho_t, z_t = torch.tensor(prefs, device=dev), torch.tensor(anchors, device=dev)
    n_steps = int(steps) or official_steps(task_data, tasks, int(batch_size))

    def objective(H: torch.Tensor) -> torch.Tensor:
        return scalarise(H, rho_t, z_t, kind=scalarisation, alpha=alpha)

    trace = train_coefficients(
        task_data, tasks, banks, coeffs, objective,
        config=TrainConfig(steps=n_steps, lr=lr, batch_size=int(batch_size), optimizer="adamw",
                           entropy_scale=scale, precision=precision),
        generator=torch.Generator().manual_seed(seed_from(generator)),
        progress=progress, should_stop=should_stop,
    )  # fmt: skip
    diagnostics = {
        "rho": list(prefs), "alpha": float(alpha), "anchors": list(anchors),
        "entropy_scale_used": scale, "steps_planned": n_steps,
        "loss_first": trace.losses[0] if trace.losses else None,
        "loss_last": trace.losses[-1] if trace.losses else None,
        "entropies_last": trace.entropies[-1] if trace.entropies else None,
    }  # fmt: skip
    return merged_result(
        adapter_set, banks, coeffs(), diagnostics=diagnostics, state=coeffs.state(),
        run=run_record(trace, task_data, dev, warm), extras={"warm_start": warm} if warm else None,
    )  # fmt: skip


ENTROPY_SCALE_PARAM = Param(
    "entropy_scale", "float", 0.0, low=0.0, high=100.0, step=0.5,
    help="Scale inside the entropy objective and anchors: softmax(s · z), z the head's un-scaled "
         "logits (cosines for zero-shot heads, as in the official TARA code). 0 = the task "
         "data's own (1 unless the bundle records one). Evaluation is never affected.",
)  # fmt: skip

PRECISION_PARAM = Param(
    "precision", "choice", "bfloat16", choices=PRECISIONS,
    help="Forward precision while learning: bfloat16 autocast (the default; the official NLI runs "
         "use it too) cuts CPU time by about a quarter with the same accuracies on vision8; φ, "
         "its gradients and the entropies stay float32. Evaluation is never affected.",
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
    Param("steps", "int", 0, low=0, high=2000, step=10,
          help="Optimisation steps (one batch per task per step); 0 = the official schedule, "
               "5 epochs × min(50, validation batches per epoch)."),
    Param("lr", "float", 1e-3, low=1e-5, high=1.0, log=True, help="AdamW learning rate."),
    Param("batch_size", "int", 16, low=1, high=512, help="Unlabeled inputs per task per step."),
    Param("init", "float", 0.4, low=-2.0, high=4.0, step=0.05,
          help="Initial φ for every direction; 0.4 starts exactly at Task Arithmetic λ = 0.4."),
    ENTROPY_SCALE_PARAM,
    PRECISION_PARAM,
)  # fmt: skip


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
    return run_tara(adapter_set, variant="a", **kwargs)


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
    return run_tara(adapter_set, variant="b", **kwargs)
