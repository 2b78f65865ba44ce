"""KnOTS (Stoica et al., ICLR 2025): align LoRA updates by one SVD, merge the aligned blocks.

Space: factors (exact route), acting on ΔW. Per module the column concatenation
``[ΔW_1 | … | ΔW_T] = U diag(S) [V_1ᵀ | … | V_Tᵀ]`` is computed from the factors without forming
it (:func:`merging_core.factors.concat_blocks`: Cholesky of the Grams of ``B_cat`` and of every
``A_tᵀ``, an ``R × R`` core SVD in float64, blocks built directly in row layout). Components with
``S <= singular_value_floor`` are dropped (the official code's absolute cut-off 1e-5; the LoRA
scale is folded in first, so the cut-off sees the real update). Each task is then represented
by ``Z_t = diag(S) V_tᵀ = Uᵀ ΔW_t`` ``(k, d_in)``: the official code folds S into V and merges
these blocks, not ``V_tᵀ``. Across modules the blocks are merged as one flattened vector per task:

    ``"ta"``:   Z = λ Σ_t w_t Z_t (then ΔW = λ Σ_t w_t ΔW_t exactly: KnOTS-TA *is* TA);
    ``"ties"``: TIES on the blocks, top-``density`` trim over all of a task's modules (global, as
                the official ``ties_masking``), sign by summed values, disjoint mean, times λ;
    ``"dare"``: DARE on the blocks (drop ``drop_rate``, rescale 1/(1-p)), then the same TIES
                (``density = 1`` reproduces the official KnOTS-DARE-TIES config, topK=100).

The merged update is ``ΔW = U @ Z`` with ``U (d_out, k)``, ``Z (k, d_in)``: exact factors of rank
``k <= R = Σ r_t``, added to the base with scale 1. ``Z_t = Uᵀ ΔW_t`` depends on the factors only
through ΔW_t (flipping a singular vector's sign flips the same row of every ``Z_t`` and of the
TIES result), so (B·M, M⁻¹·A) gives the same answer.

Memory: the blocks of all modules are kept (``T · k · d_in`` floats per module, about ``T`` times
the adapters' own size), since the global trim reads them three times.

Reference: https://arxiv.org/abs/2410.19735 (code: github.com/gstoica27/KnOTS)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.elementwise.steps import check_choice
from merging_core.elementwise.streaming import (
    dropped_tensors,
    mask_seeds,
    scaled_progress,
    ties_merge_parts,
    weighted_sum_parts,
)
from merging_core.factors import concat_blocks
from merging_core.methods.registry import Param, register_method
from merging_core.methods.shared import DENSITY, DROP_RATE, SCALING, WEIGHTS, adapter_weights
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)

VARIANTS = ("ta", "ties", "dare")


def aligned_blocks(
    modules: Sequence[LoraModule], *, singular_value_floor: float = 1e-5
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The shared basis and per-task blocks of one module, exactly from the factors.

    Args:
        modules: the module's factors in every task (``B_t (m, r_t)``, ``A_t (r_t, n)``).
        singular_value_floor: drop components with ``S <= floor`` (absolute).

    Returns:
        ``U (m, k)`` with orthonormal columns and ``Z_t = diag(S) V_tᵀ (k, n)`` per task, so that
        ``ΔW_t = U @ Z_t``.
    """
    if singular_value_floor < 0:
        raise ValueError(f"singular_value_floor must be >= 0, got {singular_value_floor}")
    cat = concat_blocks(
        [m.B for m in modules], [m.A for m in modules], floor=singular_value_floor
    )  # Gram route; blocks built directly as (k, n)
    return cat.U, list(cat.Z)


def merge_blocks(
    blocks: list[list[torch.Tensor]],
    *,
    variant: str,
    density: float,
    drop_rate: float,
    weights: Sequence[float],
    scaling: float,
    generator: torch.Generator | None,
    progress: Progress | None = None,
) -> list[torch.Tensor]:
    """Merge ``blocks[module][task]`` (each ``(k_module, n)``) into one block per module."""
    check_choice("variant", variant, VARIANTS)

    def served(i: int, t: int) -> torch.Tensor:
        return blocks[i][t]

    num_parts, num_tasks = len(blocks), len(weights)
    if variant == "ta":
        return weighted_sum_parts(
            served, num_parts=num_parts, weights=weights, scaling=scaling, progress=progress
        )
    if variant == "dare":
        served = dropped_tensors(served, mask_seeds(generator, num_parts, num_tasks), drop_rate)
    merged, _ = ties_merge_parts(
        served,
        num_parts=num_parts,
        num_tasks=num_tasks,
        density=density,
        threshold="global",
        weights=weights,
        scaling=scaling,
        progress=progress,
    )
    return merged


@register_method(
    name="knots",
    pretty_name="KnOTS",
    reference_url="https://arxiv.org/abs/2410.19735",
    space="factors",
    tags=("tradeoff-baseline",),
    params=(
        Param(
            "variant",
            "choice",
            "ties",
            choices=VARIANTS,
            help="Merge rule on the aligned blocks: TA (equals plain TA), TIES, or DARE then TIES.",
        ),
        replace(
            DENSITY,
            help="TIES/DARE: kept fraction of each task's block entries (official ViT-B/32: 0.2).",
        ),
        replace(DROP_RATE, default=0.1),
        replace(
            SCALING, default=0.6, help="λ applied to the merged blocks (official ViT-B/32: 0.6)."
        ),
        WEIGHTS,
        Param(
            "singular_value_floor",
            "float",
            1e-5,
            low=0.0,
            high=1.0,
            help="Drop shared components with singular value <= this (official: 1e-5, absolute).",
        ),
    ),
)
def knots(
    adapter_set: AdapterSet,
    *,
    variant: str = "ties",
    density: float = 0.2,
    drop_rate: float = 0.1,
    scaling: float = 0.6,
    weights: Sequence[float] | None = None,
    singular_value_floor: float = 1e-5,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """KnOTS: SVD of the concatenation (exact, factor space), then TA/TIES/DARE on ``diag(S)V_tᵀ``.

    Args:
        adapter_set: the adapters; task order = set order.
        variant: ``"ta"``, ``"ties"`` or ``"dare"``. density: TIES kept fraction (global trim).
        drop_rate: DARE ``p`` (``"dare"`` only). scaling: λ. weights: per-adapter ``w_t``.
        singular_value_floor: absolute cut-off on the shared spectrum.
        generator: source of the DARE masks. progress: optional callback.

    Returns:
        Exact factors ``(U, Z)`` per module, rank ``<= Σ r_t``; diagnostics ``shared_rank``.
    """
    check_choice("variant", variant, VARIANTS)
    names = adapter_set.modules
    w = adapter_weights(weights, len(adapter_set))
    bases, blocks = [], []
    for i, name in enumerate(names):
        U, Z = aligned_blocks(adapter_set.factors(name), singular_value_floor=singular_value_floor)
        bases.append(U)
        blocks.append(Z)
        report_progress(progress, 0.5 * (i + 1) / len(names), f"aligning {name}")
    merged = merge_blocks(
        blocks,
        variant=variant,
        density=density,
        drop_rate=drop_rate,
        weights=w,
        scaling=scaling,
        generator=generator,
        progress=scaled_progress(progress, 0.5, 1.0),
    )
    modules = {
        name: MergedModule.from_factors(adapter_set.factors(name)[0], U, Z)
        for name, U, Z in zip(names, bases, merged, strict=True)
    }
    report_progress(progress, 1.0, "KnOTS merged")
    shared = {name: int(U.shape[1]) for name, U in zip(names, bases, strict=True)}
    return result_from_modules(adapter_set, modules, diagnostics={"shared_rank": shared})
