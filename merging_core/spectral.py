"""Spectral helpers of the factor-space methods (TSV-M, ISO-C, SVD+CUR, Core Space), float64.

Space: factors. Polar factors (the nearest orthonormal columns), the rounding-noise floor of a
module's singular values, and the thin SVD of a sum of LoRA updates from its stacked factors.
The analysis side (singular values and the metrics built on them) is
:mod:`merging_core.geometry.spectra`.

References:
    TSV-M: https://arxiv.org/abs/2412.00081
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.factors import CORE_DTYPE, LowRankSVD, frobenius_norm, svd_of_product

# Singular values below RANK_RTOL · σ_max are treated as zero: inputs are float32, so anything
# smaller is rounding noise, and a flat or polar step would otherwise promote its arbitrary
# direction to a real one.
RANK_RTOL = 1e-6
# Smallest eigenvalue ratio of XᵀX (= κ(X)⁻²) for which the polar factor is taken from the Gram.
POLAR_GRAM_MIN = 1e-8


def polar_factor(X: torch.Tensor, *, partial: bool = False) -> torch.Tensor:
    """Nearest matrix with orthonormal columns to ``X`` (its polar factor), float64.

    ``polar(X) = P Qᵀ`` from the thin SVD ``X = P Σ Qᵀ``, which equals ``X (XᵀX)^{-1/2}``. When
    ``X`` is well conditioned (κ ≤ 10⁴, the usual case for task bases) we use the second form: a
    ``K × K`` Gram and its eigendecomposition, several times cheaper than the SVD of a tall ``X``
    and accurate to ~κ²·1e-16. Otherwise (nearly dependent columns) the SVD form is used.

    Args:
        X: ``(m, K)`` with ``K ≤ m``.
        partial: for numerically rank-deficient ``X`` (e.g. two identical task bases), keep only
            the singular pairs with ``σ > RANK_RTOL · σ_max``: the partial isometry on ``X``'s
            range, instead of completing it with arbitrary directions as the dense SVD does.

    Returns:
        ``(m, K)``; orthonormal columns unless ``partial`` and ``X`` is rank-deficient.
    """
    X = X.to(CORE_DTYPE)
    evals, evecs = torch.linalg.eigh(X.T @ X)  # (K,), (K, K)
    if X.shape[1] > 0 and float(evals[0]) > POLAR_GRAM_MIN * float(evals[-1]):
        return X @ ((evecs * evals.rsqrt()) @ evecs.T)  # (m, K) @ (K, K)
    P, S, Qh = torch.linalg.svd(X, full_matrices=False)  # (m, K), (K,), (K, K)
    keep = int((S > RANK_RTOL * S[0]).sum()) if partial and S.numel() else S.numel()
    return P[:, :keep] @ Qh[:keep]


def drop_below(svd: LowRankSVD, floor: float) -> LowRankSVD:
    """Keep only the triplets with ``σ > floor`` (S is descending)."""
    keep = int((svd.S > floor).sum())
    return LowRankSVD(svd.U[:, :keep], svd.S[:keep], svd.V[:, :keep])


def noise_floor(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> float:
    """``RANK_RTOL · max_t ‖B_t A_t‖_F``: singular values below it are rounding noise.

    One absolute floor per module, so that a residual that should vanish (a task inside the
    common subspace) is recognised as zero instead of being judged against its own noise.
    """
    return RANK_RTOL * max(frobenius_norm(B, A) for B, A in zip(Bs, As, strict=True))


def sum_svd(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> LowRankSVD:
    """Thin SVD of ``Σ_t B_t A_t`` in float64 from the stacked factors (methods.md L1).

    ``Σ_t B_t A_t = [B_1 … B_T] @ [A_1; …; A_T]`` (``(m, R) @ (R, n)``); the same route as
    :func:`merging_core.factors.svd_of_sum`, kept in float64 end to end.
    """
    B_cat = torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1)  # (m, R)
    A_stk = torch.cat([A.to(CORE_DTYPE) for A in As], dim=0)  # (R, n)
    return svd_of_product(B_cat, A_stk)
