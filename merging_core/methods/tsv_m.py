"""TSV-M, Task Singular Vectors Merge (Gargiulo et al., CVPR 2025), on LoRA updates.

Space: ΔW (the default mode computes it exactly on the factors). Per module, each task's update
``ΔW_t = B_t A_t`` is decomposed as ``U_t diag(σ_t) V_tᵀ`` and its top-``k_t`` triplets are
kept. The kept bases are placed side by side, ``U_cat = [U_1 … U_T]`` ``(m, K)`` and
``V_cat = [V_1 … V_T]`` ``(n, K)`` with ``K = Σ k_t``, and replaced by their polar factors
(nearest matrices with orthonormal columns, ``X = P Σ Qᵀ -> P Qᵀ``; this is the official code's
SVD-based orthogonalisation). The merge is

    ΔW = λ · polar(U_cat) diag(σ_cat) polar(V_cat)ᵀ.

Two modes (methods.md §6):

* ``"low_rank"`` (default): ``k_t = min(rank(ΔW_t), ⌊min(m, n)/T⌋)``. Per-task SVDs come from the
  factors (QR both sides, ``r_t × r_t`` core) and only numerically non-zero triplets are kept, so
  the result is exact LoRA factors ``B = λ polar(U_cat) diag(σ_cat)`` ``(m, K)``,
  ``A = polar(V_cat)ᵀ`` ``(K, n)``. Cost ``O((m + n) K²)``. Depends on ΔW only, so
  ``(B·M, M⁻¹·A)`` gives the same result as ``(B, A)``. If the stacked bases are exactly
  dependent (identical adapters), the polar step is the partial isometry on their range, so no
  direction outside the adapters' spans appears (two copies of one adapter merge to it).
* ``"official"``: ``k = ⌊min(m, n)/T⌋`` for every task, as the reference code does, with a dense
  float32 SVD of each ``ΔW_t`` (streamed one module at a time; result kept dense). For LoRA this
  ``k`` usually exceeds ``r_t``: the extra triplets have ``σ ≈ 0`` and directions fixed only by
  LAPACK rounding, yet they enter the polar step and rotate the real directions. Use it to
  reproduce published TSV-M baselines, not as a faithful low-rank merge. (The reference code's
  zero-padding of ``U_cat`` to ``min(m, n)`` columns is skipped: padded columns carry ``σ = 0``
  and do not change the product.)

Reference: https://arxiv.org/abs/2412.00081 (code: AntoAndGar/task_singular_vectors,
``compute_and_sum_svd_mem_reduction``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.factors import CORE_DTYPE, LowRankSVD, svd_of_product
from merging_core.methods.registry import Param, register_method
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    result_from_modules,
)
from merging_core.spectral import RANK_RTOL, polar_factor

TSV_MODES = ("low_rank", "official")


def tsv_k(shape: tuple[int, int], num_tasks: int) -> int:
    """The official per-task budget ``⌊min(m, n)/T⌋``."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    return min(shape) // num_tasks


def task_triplets(B: torch.Tensor, A: torch.Tensor, k: int, *, mode: str) -> LowRankSVD:
    """Top-``k`` singular triplets of ``ΔW = B @ A`` (``(m, r) @ (r, n)``), float64.

    ``"low_rank"`` uses the factored SVD and drops numerically zero triplets (so at most
    ``min(k, rank)`` come back); ``"official"`` runs a dense float32 SVD and keeps exactly ``k``.
    """
    if mode == "low_rank":
        svd = svd_of_product(B.to(CORE_DTYPE), A.to(CORE_DTYPE)).drop_zeros(RANK_RTOL)
        return svd.truncate(k)[0]
    if mode == "official":
        dense = B.float() @ A.float()  # (m, r) @ (r, n) -> (m, n)
        U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
        return LowRankSVD(U[:, :k].double(), S[:k].double(), Vh[:k].T.double())
    raise ValueError(f"mode must be one of {list(TSV_MODES)}, got {mode!r}")


def tsv_bases(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], *, mode: str = "low_rank"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthogonalised TSV-M bases of one module: ``ΔW_merged = U diag(s) Vᵀ`` (before λ).

    Args:
        Bs: per task ``(m, r_t)``, scale folded. As: per task ``(r_t, n)``.
        mode: ``"low_rank"`` or ``"official"`` (see the module docstring).

    Returns:
        ``U (m, K)`` and ``V (n, K)`` with orthonormal columns, and ``s (K,)`` the kept singular
        values in task order (not sorted), all float64.
    """
    if len(Bs) == 0 or len(Bs) != len(As):
        raise ValueError(f"need one A per B and at least one task, got {len(Bs)} and {len(As)}")
    k = tsv_k((Bs[0].shape[0], As[0].shape[1]), len(Bs))
    parts = [task_triplets(B, A, k, mode=mode) for B, A in zip(Bs, As, strict=True)]
    U_cat = torch.cat([p.U for p in parts], dim=1)  # (m, K)
    V_cat = torch.cat([p.V for p in parts], dim=1)  # (n, K)
    s_cat = torch.cat([p.S for p in parts])  # (K,)
    if s_cat.numel() == 0:
        return U_cat, s_cat, V_cat
    partial = mode == "low_rank"
    return polar_factor(U_cat, partial=partial), s_cat, polar_factor(V_cat, partial=partial)


def _merge_module(
    mods: Sequence[LoraModule], *, mode: str, scaling: float
) -> tuple[MergedModule, int]:
    """One module's TSV-M update (factors, or dense in official mode) and its triplet count."""
    U, s, V = tsv_bases([m.B for m in mods], [m.A for m in mods], mode=mode)
    B = (scaling * U * s).float()  # (m, K) * (K,) -> (m, K)
    A = V.T.contiguous().float()  # (K, n)
    if mode == "official":
        return MergedModule.from_dense(mods[0], B @ A), int(s.numel())
    return MergedModule.from_factors(mods[0], B, A), int(s.numel())


@register_method(
    name="tsv_m",
    pretty_name="TSV-M (Task Singular Vectors)",
    tags=("deterministic", "tradeoff-baseline"),  # deterministic: the app hides the seed
    reference_url="https://arxiv.org/abs/2412.00081",
    space="factors",
    params=(
        Param(
            "mode",
            "choice",
            "low_rank",
            choices=TSV_MODES,
            help="low_rank: k_t ≤ rank(ΔW_t), exact factors. official: k = min(m,n)/T per task "
            "with dense SVDs, as the reference code (adds null-space directions for LoRA).",
        ),
        Param(
            "scaling",
            "float",
            1.0,
            low=-3.0,
            high=3.0,
            step=0.05,
            help="λ applied to the merged update (the paper searches 0.1–3; ≈1 is typical).",
        ),
    ),
)
def tsv_m(
    adapter_set: AdapterSet,
    *,
    mode: str = "low_rank",
    scaling: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """λ · polar(U_cat) diag(σ_cat) polar(V_cat)ᵀ per module (TSV-M); acts on ΔW."""
    if mode not in TSV_MODES:
        raise ValueError(f"mode must be one of {list(TSV_MODES)}, got {mode!r}")
    modules: dict[str, MergedModule] = {}
    kept: dict[str, int] = {}
    for name, mods in each_module(adapter_set, progress):
        modules[name], kept[name] = _merge_module(mods, mode=mode, scaling=scaling)
    return result_from_modules(adapter_set, modules, diagnostics={"kept_triplets": kept})
