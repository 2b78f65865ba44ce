"""SVD + CUR merge: our reconstruction of Lu et al. (Findings of ACL 2026) from its abstract.

**Reconstruction, not the paper's algorithm.** Only the abstract of "On the Representation
Geometry of LoRA Model Merging" could be read: it combines "the shared structure captured by SVD
with the task-specific components preserved by CUR". The selection rule, the CUR core, how the
parts are combined and the defaults below are our design (methods.md §2), labelled
"experimental, unverified" wherever the method is offered.

Space: ΔW (computed exactly on the factors; depends only on each ``ΔW_t``, so ``(B·M, M⁻¹·A)``
gives the same result as ``(B, A)``). Per module:

1. Shared part: the top-``k_s`` SVD of the task-arithmetic sum, ``Δ_TA = Σ_t ΔW_t``
   (``k_s = ⌊κ_s · rank(Δ_TA)⌉``), ``ΔW_shared = U_k diag(S_k) V_kᵀ``.
2. Task-specific part: each task's residual outside the shared column space,
   ``E_t = (I − U_k U_kᵀ) B_t A_t`` (still a factor pair ``((I − P) B_t, A_t)``), is
   approximated by CUR with ``c_t = ⌊κ_c · rank(E_t)⌉`` actual columns and rows of ``E_t``,
   chosen by rank-``c_t`` leverage scores (top scores, or sampled ∝ score with the generator):
   ``C = E_t[:, J]``, ``R = E_t[I, :]``, ``U = C⁺ E_t R⁺``, ``ΔW_spec,t = C U R``.
   Once ``c_t = rank(E_t)`` this CUR is exact; smaller ``c_t`` keeps the entries with the most
   leverage (the "localised" updates).
3. ``ΔW = λ (ΔW_shared + β Σ_t ΔW_spec,t)``, kept as LoRA factors of rank ``≤ k_s + Σ_t c_t``.

With ``κ_s = 1`` (and ``A_stk`` of full row rank) this is ``λ`` times Task Arithmetic; with
``κ_c = 1`` and β = 1 it is also Task Arithmetic, for any ``κ_s``.

Abstract: https://aclanthology.org/2026.findings-acl.261/
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet
from merging_core.factors import CORE_DTYPE, LowRankSVD, svd_of_product
from merging_core.methods.registry import Param, register_method
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    result_from_modules,
)
from merging_core.spectral import drop_below, noise_floor, sum_svd

SELECTIONS = ("deterministic", "sampled")


def fraction_of(rank: int, fraction: float) -> int:
    """``⌊fraction · rank⌉`` (half rounds up), at least 1 when both are positive."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    count = int(math.floor(fraction * rank + 0.5))
    return max(count, 1) if fraction > 0.0 and rank > 0 else count


def leverage_scores(basis: torch.Tensor) -> torch.Tensor:
    """Rank-``c`` leverage scores ``‖basis[i, :]‖² / c`` of an ``(N, c)`` orthonormal basis."""
    return (basis**2).sum(dim=1) / max(basis.shape[1], 1)


def select_indices(
    scores: torch.Tensor, count: int, *, selection: str, generator: torch.Generator | None
) -> torch.Tensor:
    """``count`` indices by leverage: the top scores (ties by index) or sampled ∝ score.

    Returns:
        Sorted ``(count,)`` long tensor.
    """
    if selection == "deterministic":
        picked = torch.argsort(-scores, stable=True)[:count]
    elif selection == "sampled":
        picked = torch.multinomial(scores, count, replacement=False, generator=generator)
    else:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    return torch.sort(picked).values


def cur_factors(
    B: torch.Tensor,
    A: torch.Tensor,
    count: int,
    *,
    selection: str = "deterministic",
    generator: torch.Generator | None = None,
    svd: LowRankSVD | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CUR of ``E = B @ A`` (``(m, r) @ (r, n)``) with ``count`` columns and rows, as factors.

    Never forms ``E``: ``C = B A[:, J]`` ``(m, c)``, ``R = B[I, :] A`` ``(c, n)`` and the core
    ``U = (C⁺ B)(A R⁺)`` ``(c, c)``.

    Args:
        svd: the thin SVD of ``B @ A`` if already computed (its top ``count`` singular vectors
            give the leverage scores).

    Returns:
        ``(C U)`` ``(m, c)`` and ``R`` ``(c, n)``, float64, with ``C U R`` the CUR approximation.
    """
    B, A = B.to(CORE_DTYPE), A.to(CORE_DTYPE)
    svd = svd_of_product(B, A) if svd is None else svd
    cols = select_indices(
        leverage_scores(svd.V[:, :count]), count, selection=selection, generator=generator
    )
    rows = select_indices(
        leverage_scores(svd.U[:, :count]), count, selection=selection, generator=generator
    )
    C = B @ A[:, cols]  # (m, r) @ (r, c) -> (m, c)
    R = B[rows] @ A  # (c, r) @ (r, n) -> (c, n)
    core = (torch.linalg.pinv(C) @ B) @ (A @ torch.linalg.pinv(R))  # (c, r) @ (r, c)
    return C @ core, R


def svd_cur_factors(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    *,
    shared_fraction: float = 0.5,
    cur_fraction: float = 0.5,
    beta: float = 1.0,
    selection: str = "deterministic",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Shared SVD part plus β times each task's CUR part, for one module (before λ).

    Args:
        Bs: per task ``(m, r_t)``, scale folded. As: per task ``(r_t, n)``.
        shared_fraction: κ_s. cur_fraction: κ_c. beta: weight of the task-specific parts.
        selection: ``"deterministic"`` or ``"sampled"`` (uses ``generator``).

    Returns:
        ``B (m, k)``, ``A (k, n)`` float64 and counts ``{"shared": k_s, "cur": Σ c_t}``.
    """
    Bs64 = [B.to(CORE_DTYPE) for B in Bs]
    As64 = [A.to(CORE_DTYPE) for A in As]
    floor = noise_floor(Bs64, As64)
    total = drop_below(sum_svd(Bs64, As64), floor)
    shared = total.truncate(fraction_of(total.rank, shared_fraction))[0]
    B_parts, A_parts = [shared.U * shared.S], [shared.V.T]
    cur_total = 0
    for B, A in zip(Bs64, As64, strict=True):
        B_res = B - shared.U @ (shared.U.T @ B)  # (m, r_t): residual outside col(U_k)
        svd = drop_below(svd_of_product(B_res, A), floor)
        count = fraction_of(svd.rank, cur_fraction)
        if count == 0:
            continue
        CU, R = cur_factors(B_res, A, count, selection=selection, generator=generator, svd=svd)
        B_parts.append(beta * CU)
        A_parts.append(R)
        cur_total += count
    counts = {"shared": shared.rank, "cur": cur_total}
    return torch.cat(B_parts, dim=1), torch.cat(A_parts, dim=0), counts


@register_method(
    name="svd_cur",
    pretty_name="SVD + CUR (experimental, unverified reconstruction)",
    reference_url="https://aclanthology.org/2026.findings-acl.261/",
    space="factors",
    reconstructed=True,
    params=(
        Param(
            "shared_fraction",
            "float",
            0.5,
            low=0.0,
            high=1.0,
            step=0.05,
            help="κ_s: share of the summed update's rank kept as the shared SVD part.",
        ),
        Param(
            "cur_fraction",
            "float",
            0.5,
            low=0.0,
            high=1.0,
            step=0.05,
            help="κ_c: CUR columns/rows per task as a share of its residual's rank (1 = exact).",
        ),
        Param(
            "beta",
            "float",
            1.0,
            low=0.0,
            high=2.0,
            step=0.05,
            help="β: weight of the task-specific CUR parts relative to the shared part.",
        ),
        Param(
            "scaling",
            "float",
            0.4,
            low=-2.0,
            high=4.0,
            step=0.05,
            help="λ: global scale of the merged update (as Task Arithmetic's).",
        ),
        Param(
            "selection",
            "choice",
            "deterministic",
            choices=SELECTIONS,
            help="Pick CUR columns/rows by top leverage score, or sample them ∝ score (seeded).",
        ),
    ),
)
def svd_cur(
    adapter_set: AdapterSet,
    *,
    shared_fraction: float = 0.5,
    cur_fraction: float = 0.5,
    beta: float = 1.0,
    scaling: float = 0.4,
    selection: str = "deterministic",
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """λ (shared SVD part + β Σ_t CUR of task residuals); reconstruction, acts on ΔW."""
    modules: dict[str, MergedModule] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, mods in each_module(adapter_set, progress):
        B, A, counts[name] = svd_cur_factors(
            [m.B for m in mods],
            [m.A for m in mods],
            shared_fraction=shared_fraction,
            cur_fraction=cur_fraction,
            beta=beta,
            selection=selection,
            generator=generator,
        )
        modules[name] = MergedModule.from_factors(mods[0], (scaling * B).float(), A.float())
    return result_from_modules(adapter_set, modules, diagnostics={"components": counts})
