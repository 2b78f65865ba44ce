"""Iso-C and Iso-CTS (Marczak et al., ICML 2025, "No Task Left Behind"), on LoRA updates.

Space: ΔW (the default mode computes it exactly on the factors). Both flatten the spectrum of a
merged update: every kept singular value is replaced by their mean ``σ̄``, then the result is
scaled by α.

* **Iso-C**: ``Δ_TA = Σ_t ΔW_t = U Σ Vᵀ``; ``ΔW = α σ̄ U Vᵀ``.
* **Iso-CTS**: a common subspace (top-``k`` of ``Δ_TA``, ``k ≈ κ·N``) plus, for each task, the
  top-``s`` directions of its residual ``(I − U_k U_kᵀ) ΔW_t``, with ``k + T·s = N``. The stacked
  bases are orthogonalised by their polar factors and
  ``ΔW = α σ̄ polar(U*) polar(V*)ᵀ``, ``σ̄`` = mean of all the kept singular values.

Two modes (methods.md §7):

* ``"low_rank"`` (default): everything in factor space, on the numerically non-zero spectrum, so
  no direction outside the adapters' spans is invented. Iso-C averages the ``R' = rank(Δ_TA)``
  non-zero singular values (``R' ≤ Σ r_t``) and returns factors ``B = α σ̄ U`` ``(m, R')``,
  ``A = Vᵀ``. Iso-CTS uses ``N = R'`` as its budget; a task whose residual has fewer than ``s``
  non-zero directions contributes only those. Exact, ``O((m + n) R² + T R³)``.
* ``"official"``: the reference code's dense SVD of the ``m × n`` matrix (float32, streamed one
  module at a time, dense result). With ``N = min(m, n)`` it also averages the ≈0 singular values
  and keeps their singular vectors, which are arbitrary (set by LAPACK rounding): for LoRA the
  result is full rank and most of its energy lies outside the merged adapters' subspace.
  Restricted to that subspace it is ``(R'/min(m, n))`` times the low-rank Iso-C.

Reference: https://arxiv.org/abs/2502.04959 (code: danielm1405/iso-merging, ``src/utils/iso.py``).
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
from merging_core.spectral import drop_below, noise_floor, polar_factor, sum_svd

ISO_MODES = ("low_rank", "official")
PAPER_URL = "https://arxiv.org/abs/2502.04959"

MODE = Param(
    "mode",
    "choice",
    "low_rank",
    choices=ISO_MODES,
    help="low_rank: flatten only the non-zero spectrum (exact factors). official: dense SVD "
    "over all min(m,n) values, as the reference code (adds arbitrary null-space directions).",
)
SCALING = Param(
    "scaling",
    "float",
    1.0,
    low=0.0,
    high=10.0,
    step=0.05,
    help="α applied to the isotropic update (the paper searches 0.1–3 on validation data).",
)


def _check_mode(mode: str) -> None:
    if mode not in ISO_MODES:
        raise ValueError(f"mode must be one of {list(ISO_MODES)}, got {mode!r}")


def _dense_sum(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> torch.Tensor:
    """``Σ_t B_t A_t`` as a dense float32 ``(m, n)`` (official modes only)."""
    return sum(B.float() @ A.float() for B, A in zip(Bs, As, strict=True))


def _dense_svd(matrix: torch.Tensor) -> LowRankSVD:
    """Thin dense SVD in the input's dtype (float32, as the reference code), returned as float64."""
    U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
    return LowRankSVD(U.double(), S.double(), Vh.T.double())


def iso_c_factors(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], *, mode: str = "low_rank"
) -> LowRankSVD:
    """Iso-C of one module before α: ``U diag(σ̄, …, σ̄) Vᵀ``.

    Args:
        Bs: per task ``(m, r_t)``, scale folded. As: per task ``(r_t, n)``.
        mode: ``"low_rank"`` (``R'`` non-zero directions) or ``"official"`` (all ``min(m, n)``).

    Returns:
        LowRankSVD (float64) whose singular values all equal ``σ̄``.
    """
    _check_mode(mode)
    if mode == "official":
        svd = _dense_svd(_dense_sum(Bs, As))
    else:
        svd = drop_below(sum_svd(Bs, As), noise_floor(Bs, As))
    if svd.rank == 0:
        return svd
    return LowRankSVD(svd.U, torch.full_like(svd.S, float(svd.S.mean())), svd.V)


def split_budget(total: int, num_tasks: int, common_fraction: float) -> tuple[int, int]:
    """Iso-CTS's split of ``total`` directions into ``k`` common and ``s`` per task.

    As the reference code: ``k = ⌊κ·total⌋``, then the task-specific total ``T·s`` is
    ``round((total − k)/T)·T`` (Python rounding) and ``k = total − T·s``; ``s`` is capped so that
    ``k ≥ 0``.

    Raises:
        ValueError: ``common_fraction`` outside [0, 1] or ``num_tasks < 1``.
    """
    if not 0.0 <= common_fraction <= 1.0:
        raise ValueError(f"common_fraction must be in [0, 1], got {common_fraction}")
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    k = int(total * common_fraction)
    s = min(round((total - k) / num_tasks), total // num_tasks)
    return total - num_tasks * s, s


def _task_residual(
    B: torch.Tensor, A: torch.Tensor, U_k: torch.Tensor, mode: str, floor: float
) -> LowRankSVD:
    """SVD of ``(I − U_k U_kᵀ) B A``; factored ``((I − P) B, A)`` in low-rank mode."""
    if mode == "official":
        dw = B.float() @ A.float()  # (m, n)
        Uk = U_k.float()
        return _dense_svd(dw - Uk @ (Uk.T @ dw))
    B64 = B.to(CORE_DTYPE)
    B_res = B64 - U_k @ (U_k.T @ B64)  # (m, r) - (m, k) @ (k, r)
    return drop_below(svd_of_product(B_res, A.to(CORE_DTYPE)), floor)


def iso_cts_factors(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    *,
    common_fraction: float = 0.8,
    mode: str = "low_rank",
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Iso-CTS of one module before α: ``ΔW = σ̄ · U Vᵀ``.

    Args:
        Bs: per task ``(m, r_t)``, scale folded. As: per task ``(r_t, n)``.
        common_fraction: κ, the share of the budget given to the common subspace.
        mode: ``"low_rank"`` (budget ``rank(Δ_TA)``) or ``"official"`` (budget ``min(m, n)``).

    Returns:
        ``U (m, N)`` and ``V (n, N)`` with orthonormal columns (float64) and ``σ̄``.
    """
    _check_mode(mode)
    if mode == "official":
        floor, total = 0.0, _dense_svd(_dense_sum(Bs, As))
    else:
        floor = noise_floor(Bs, As)
        total = drop_below(sum_svd(Bs, As), floor)
    k, s = split_budget(total.rank, len(Bs), common_fraction)
    common = total.truncate(k)[0]
    parts = [common] + [
        _task_residual(B, A, common.U, mode, floor).truncate(s)[0]
        for B, A in zip(Bs, As, strict=True)
    ]
    sigmas = torch.cat([p.S for p in parts])
    if sigmas.numel() == 0:
        return common.U, 0.0, common.V
    partial = mode == "low_rank"
    U = polar_factor(torch.cat([p.U for p in parts], dim=1), partial=partial)  # (m, N)
    V = polar_factor(torch.cat([p.V for p in parts], dim=1), partial=partial)  # (n, N)
    return U, float(sigmas.mean()), V


def _to_module(
    like: LoraModule, U: torch.Tensor, sigma: float, V: torch.Tensor, mode: str
) -> MergedModule:
    """``σ · U Vᵀ`` as factors ``(σU, Vᵀ)``, or dense in official mode."""
    B = (sigma * U).float()  # (m, N)
    A = V.T.contiguous().float()  # (N, n)
    if mode == "official":
        return MergedModule.from_dense(like, B @ A)
    return MergedModule.from_factors(like, B, A)


@register_method(
    name="iso_c",
    pretty_name="Iso-C (isotropic merge)",
    tags=("deterministic", "tradeoff-baseline"),  # deterministic: the app hides the seed
    reference_url=PAPER_URL,
    space="factors",
    params=(MODE, SCALING),
)
def iso_c(
    adapter_set: AdapterSet,
    *,
    mode: str = "low_rank",
    scaling: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """α σ̄ U Vᵀ from the SVD of the task-arithmetic sum (flat spectrum); acts on ΔW."""
    _check_mode(mode)
    modules: dict[str, MergedModule] = {}
    sigma_bar: dict[str, float] = {}
    for name, mods in each_module(adapter_set, progress):
        iso = iso_c_factors([m.B for m in mods], [m.A for m in mods], mode=mode)
        sigma = float(iso.S[0]) if iso.rank else 0.0
        modules[name] = _to_module(mods[0], iso.U, scaling * sigma, iso.V, mode)
        sigma_bar[name] = sigma
    return result_from_modules(adapter_set, modules, diagnostics={"sigma_bar": sigma_bar})


@register_method(
    name="iso_cts",
    pretty_name="Iso-CTS (common + task-specific isotropic merge)",
    tags=("deterministic",),  # ignores the seed (the app hides its seed box)
    reference_url=PAPER_URL,
    space="factors",
    params=(
        MODE,
        Param(
            "common_fraction",
            "float",
            0.8,
            low=0.0,
            high=1.0,
            step=0.05,
            help="κ: share of the directions taken from the common (summed) subspace; "
            "the rest is split equally among the tasks' residuals (paper default 0.8).",
        ),
        SCALING,
    ),
)
def iso_cts(
    adapter_set: AdapterSet,
    *,
    mode: str = "low_rank",
    common_fraction: float = 0.8,
    scaling: float = 1.0,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """α σ̄ polar(U*) polar(V*)ᵀ over common + task-specific subspaces; acts on ΔW."""
    _check_mode(mode)
    modules: dict[str, MergedModule] = {}
    sigma_bar: dict[str, float] = {}
    for name, mods in each_module(adapter_set, progress):
        U, sigma, V = iso_cts_factors(
            [m.B for m in mods], [m.A for m in mods], common_fraction=common_fraction, mode=mode
        )
        modules[name] = _to_module(mods[0], U, scaling * sigma, V, mode)
        sigma_bar[name] = sigma
    return result_from_modules(adapter_set, modules, diagnostics={"sigma_bar": sigma_bar})
