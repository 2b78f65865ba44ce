"""SVD vs CUR geometry of the merged update (seed 004: Lu et al., Findings of ACL 2026).

**Reconstructed from the paper's abstract, not the paper's algorithm.** The abstract says only
that SVD-based decompositions model shared components, CUR-based ones keep task-specific,
localised updates, and that the two are "geometrically misaligned". The selection rule, the core
and the combination are unpublished (methods.md §2). What we measure, per module:

* ``ΔW_TA = Σ_t ΔW_t`` (Task-Arithmetic sum; a global λ changes nothing here).
* SVD view: the top-``k`` left/right singular subspaces ``U_k`` ``(m, k)`` and ``V_k`` ``(n, k)``.
* CUR view: deterministic top-``k`` leverage selection from the same rank-``k`` SVD —
  columns ``J`` by ``‖V_k[j, :]‖²``, rows ``I`` by ``‖U_k[i, :]‖²`` (ties broken by the lower
  index) — giving ``C = ΔW_TA[:, J]`` and ``R = ΔW_TA[I, :]``.
* Principal angles between ``col(U_k)`` and ``col(C)`` (left) and between ``col(V_k)`` and
  ``row(R)`` (right), in degrees, ascending.
* ``cur_misalignment_left = 1 − ‖U_kᵀ Q_C‖_F² / k`` (mean ``sin²`` of the angles, a missing
  dimension of a rank-deficient ``C`` counting as 90°), the same on the right, and
  ``cur_misalignment`` their mean: 0 = CUR keeps the SVD subspace, 1 = orthogonal.
* ``svd_energy_k`` / ``cur_energy_k``: fraction of ``‖ΔW_TA‖_F²`` in ``col(U_k)`` (Eckart–Young
  optimum) and in ``col(C)``.

``k`` defaults to the largest task rank and is clipped to the numerical rank of ``ΔW_TA``
(``k = 0`` for a zero module: no angles, misalignment 0). Space: ΔW — everything is a function of
``ΔW_TA`` alone (invariant under ``(B M, M⁻¹ A)`` up to round-off and exact leverage ties).
Cost: the ``R × R`` core SVD plus ``(m + n) R k`` for the leverage scores; nothing ``m × n``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from merging_core.geometry._gram import CoreSVD, ModuleBatch, build_batch, check_pairs, sum_svd
from merging_core.geometry.spectra import ZERO_RTOL, clean_spectrum

CUR_LABEL = "SVD vs CUR (reconstructed from the paper's abstract, not the paper's algorithm)"
CUR_KEYS = (
    "cur_k",
    "cur_misalignment",
    "cur_misalignment_left",
    "cur_misalignment_right",
    "svd_energy_k",
    "cur_energy_k",
)


@dataclass(frozen=True)
class CurComparison:
    """SVD vs CUR for one module (see the module docstring).

    Attributes:
        k: subspace dimension used. columns: the ``k`` selected column indices of ΔW (``d_in``).
        rows: the ``k`` selected row indices (``d_out``). left_angles, right_angles: degrees.
        misalignment, misalignment_left, misalignment_right: in ``[0, 1]``.
        svd_energy, cur_energy: energy fractions of ``ΔW_TA`` in ``col(U_k)`` and ``col(C)``.
    """

    k: int
    columns: tuple[int, ...]
    rows: tuple[int, ...]
    left_angles: tuple[float, ...]
    right_angles: tuple[float, ...]
    misalignment: float
    misalignment_left: float
    misalignment_right: float
    svd_energy: float
    cur_energy: float


def _orth(X: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of ``col(X)`` for ``(G, R, k)``; null directions become zero columns."""
    U, s, _ = torch.linalg.svd(X, full_matrices=False)
    keep = s > ZERO_RTOL * s[..., :1]
    return U * keep.unsqueeze(-2).to(U.dtype)


def _basis_dim(Q: torch.Tensor) -> torch.Tensor:
    """Number of nonzero columns of a basis from :func:`_orth`, ``(G,)``."""
    return (Q.abs().sum(dim=-2) > 0).sum(dim=-1)


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(G, k)`` of the largest scores, ties to the lower index."""
    return torch.argsort(scores, dim=-1, descending=True, stable=True)[..., :k]


def _side(
    basis: torch.Tensor, picked: torch.Tensor, k_eff: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosines ``(G, k)``, misalignment ``(G,)`` and the CUR basis for one side."""
    Q = _orth(picked)
    cos = torch.linalg.svdvals(basis.mT @ Q).clamp(0.0, 1.0)  # (G, k)
    kf = k_eff.to(cos.dtype)
    mis = torch.where(kf > 0, 1.0 - (cos**2).sum(dim=-1) / kf.clamp_min(1.0), 0.0)
    return cos, mis.clamp(0.0, 1.0), Q


def cur_from_batch(
    batch: ModuleBatch, core: CoreSVD, k: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """SVD-vs-CUR scalars ``(G,)`` (keys :data:`CUR_KEYS`) and per-module details.

    Returns:
        ``(scalars, extras)``; extras: ``cos_left``, ``cos_right`` ``(G, k)``, ``n_left``,
        ``n_right`` ``(G,)`` valid angle counts, ``columns``, ``rows`` ``(G, k)`` indices.
    """
    k = max(0, min(int(k), batch.edges[-1]))
    sigma = clean_spectrum(core.S)
    k_eff = torch.clamp((sigma > 0).sum(dim=-1), max=k)  # (G,)
    mask = (torch.arange(k) < k_eff.unsqueeze(-1)).to(sigma.dtype)  # (G, k)
    Uk = core.Uc[..., :k] * mask.unsqueeze(-2)  # (G, R, k) coordinates in Q_B
    Vk = core.Vc[..., :k] * mask.unsqueeze(-2)  # (G, R, k) coordinates in Q_A
    U_rows = batch.B_cat @ (core.root_b.P @ Uk)  # (G, m, R) @ (G, R, k) -> (G, m, k) = U_k
    V_cols = (core.root_a.P @ Vk).mT @ batch.A_stk  # (G, k, R) @ (G, R, n) -> (G, k, n) = V_kᵀ
    lev_rows, lev_cols = (U_rows**2).sum(dim=-1), (V_cols**2).sum(dim=-2)  # (G, m), (G, n)
    rows, cols = _top_k(lev_rows, k), _top_k(lev_cols, k)
    R = batch.edges[-1]
    A_J = torch.gather(batch.A_stk, 2, cols.unsqueeze(1).expand(-1, R, -1))  # (G, R, k)
    B_I = torch.gather(batch.B_cat, 1, rows.unsqueeze(-1).expand(-1, -1, R))  # (G, k, R)
    C = (core.root_b.S @ A_J) * mask.unsqueeze(-2)  # ΔW[:, J] in Q_B coordinates (G, R, k)
    Rr = (core.root_a.S @ B_I.mT) * mask.unsqueeze(-2)  # rows of ΔW[I, :] in Q_A coordinates
    cos_l, mis_l, Qc = _side(Uk, C, k_eff)
    cos_r, mis_r, Qr = _side(Vk, Rr, k_eff)
    core_m = core.root_b.S @ core.root_a.S.mT  # (G, R, R): ΔW_TA in (Q_B, Q_A) coordinates
    total = (sigma**2).sum(dim=-1)
    svd_e = (sigma[..., :k] ** 2 * mask).sum(dim=-1)
    cur_e = ((Qc.mT @ core_m) ** 2).sum(dim=(-2, -1))
    scalars = {
        "cur_k": k_eff.to(sigma.dtype),
        "cur_misalignment": 0.5 * (mis_l + mis_r),
        "cur_misalignment_left": mis_l,
        "cur_misalignment_right": mis_r,
        "svd_energy_k": torch.where(total > 0, svd_e / total.clamp_min(1e-300), 0.0),
        "cur_energy_k": torch.where(total > 0, cur_e / total.clamp_min(1e-300), 0.0),
    }
    extras = {
        "cos_left": cos_l,
        "cos_right": cos_r,
        "n_left": torch.minimum(k_eff, _basis_dim(Qc)),
        "n_right": torch.minimum(k_eff, _basis_dim(Qr)),
        "columns": cols,
        "rows": rows,
    }
    return scalars, extras


def angles_degrees(cos: torch.Tensor, count: int) -> tuple[float, ...]:
    """The first ``count`` principal angles (ascending) in degrees from descending cosines."""
    return tuple(math.degrees(math.acos(min(1.0, max(0.0, float(c))))) for c in cos[:count])


def svd_vs_cur(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], *, k: int | None = None
) -> CurComparison:
    """SVD vs CUR geometry of one module's Task-Arithmetic sum (reconstructed; see module doc).

    Args:
        Bs: per task ``(m, r_t)`` (scale folded). As: per task ``(r_t, n)``.
        k: subspace dimension; default the largest task rank. Clipped to ``rank(ΔW_TA)``.

    Raises:
        ValueError: misaligned factors, or ``k < 1``.
    """
    check_pairs(Bs, As)
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = max(int(B.shape[1]) for B in Bs) if k is None else int(k)
    batch = build_batch([list(Bs)], [list(As)])
    s, x = cur_from_batch(batch, sum_svd(batch), k)
    k_eff = int(s["cur_k"][0])
    return CurComparison(
        k=k_eff,
        columns=tuple(int(j) for j in x["columns"][0, :k_eff]),
        rows=tuple(int(i) for i in x["rows"][0, :k_eff]),
        left_angles=angles_degrees(x["cos_left"][0], int(x["n_left"][0])),
        right_angles=angles_degrees(x["cos_right"][0], int(x["n_right"][0])),
        misalignment=float(s["cur_misalignment"][0]),
        misalignment_left=float(s["cur_misalignment_left"][0]),
        misalignment_right=float(s["cur_misalignment_right"][0]),
        svd_energy=float(s["svd_energy_k"][0]),
        cur_energy=float(s["cur_energy_k"][0]),
    )
