"""Spectra once, metrics derived: singular values of LoRA updates and the scalars built on them.

Space: ΔW. ``singular_values(B, A)`` is the exact thin SVD of ``ΔW = B @ A`` through
:func:`merging_core.factors.svd_of_product` (QR of both factors, ``r × r`` core), so it is the same
for ``(B·M, M⁻¹·A)`` as for ``(B, A)``. The metric functions take a vector (or a batch ``(..., k)``)
of singular values and never look at the matrix again.

Conventions (shared by the whole geometry package):
    * Singular values ``σ ≤ ZERO_RTOL · σ_max`` are numerical zeros and are dropped. The Gram
      route used by the batched analysis resolves σ down to about ``sqrt(eps) · σ_max``, so the
      cut-off sits just above that (``1e-6``); the effect on erank is below ``1e-5``.
    * Effective rank (Roy & Vetterli, 2007): ``erank = exp(H(p))``, ``p_k = σ_k / Σ_j σ_j`` (σ,
      **not** σ²), ``H(p) = -Σ p_k log p_k``. It lies in ``[1, rank]`` for a nonzero matrix.
      A zero matrix has no directions; we define its erank as ``0`` (never NaN).
    * Stable rank: ``Σ σ² / σ_max²`` (``0`` for a zero matrix).
    * Energy curve: ``Σ_{i≤k} σ_i² / Σ σ²`` for ``k = 1..len(σ)`` (all zeros for a zero matrix).
"""

from __future__ import annotations

import torch

from merging_core.factors import svd_of_product

ZERO_RTOL = 1e-6


def singular_values(B: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Singular values of ``ΔW = B @ A`` without forming it.

    Args:
        B: ``(d_out, r)`` (LoRA scale folded in). A: ``(r, d_in)``.

    Returns:
        ``(min(r, d_out, d_in),)`` float64, descending, numerical zeros set to exactly 0.

    Raises:
        ValueError: if the shapes do not chain.
    """
    sigma = svd_of_product(B.to(torch.float64), A.to(torch.float64)).S  # (k,)
    return clean_spectrum(sigma)


def clean_spectrum(sigma: torch.Tensor) -> torch.Tensor:
    """Sort descending along the last dim and zero entries ``≤ ZERO_RTOL · σ_max``.

    Args:
        sigma: ``(..., k)`` non-negative values (tiny negatives from round-off are clipped).
    """
    s = sigma.to(torch.float64).clamp_min(0.0).sort(dim=-1, descending=True).values
    if s.shape[-1] == 0:
        return s
    cut = ZERO_RTOL * s[..., :1]
    return torch.where(s > cut, s, torch.zeros_like(s))


def effective_rank(sigma: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli effective rank ``exp(-Σ p log p)``, ``p = σ / Σσ``; 0 for a zero matrix.

    Args:
        sigma: ``(..., k)`` singular values (any order; numerical zeros are dropped).

    Returns:
        ``(...)`` float64.
    """
    s = clean_spectrum(sigma)
    total = s.sum(dim=-1, keepdim=True)
    p = torch.where(total > 0, s / torch.where(total > 0, total, 1.0), 0.0)
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, 1.0)), 0.0)
    erank = torch.exp(-plogp.sum(dim=-1))
    return torch.where(total.squeeze(-1) > 0, erank, torch.zeros_like(erank))


def stable_rank(sigma: torch.Tensor) -> torch.Tensor:
    """``Σ σ² / σ_max²`` along the last dim; 0 for a zero matrix. Returns ``(...)`` float64."""
    s = clean_spectrum(sigma)
    if s.shape[-1] == 0:
        return s.sum(dim=-1)
    top = s[..., 0] ** 2
    return torch.where(top > 0, (s**2).sum(dim=-1) / torch.where(top > 0, top, 1.0), 0.0)


def energy_curve(sigma: torch.Tensor) -> torch.Tensor:
    """Cumulative energy ``Σ_{i≤k} σ_i² / Σ σ²``, ``(..., k)``; all zeros for a zero matrix."""
    s = clean_spectrum(sigma)
    e = (s**2).cumsum(dim=-1)
    if s.shape[-1] == 0:
        return e
    total = e[..., -1:]
    return torch.where(total > 0, e / torch.where(total > 0, total, 1.0), 0.0)


def component_energy(sigma: torch.Tensor) -> torch.Tensor:
    """Pico's component energy ``e_j = σ_j² / Σ σ²`` (descending), ``(..., k)``; zeros if σ = 0."""
    s = clean_spectrum(sigma)
    total = (s**2).sum(dim=-1, keepdim=True)
    return torch.where(total > 0, s**2 / torch.where(total > 0, total, 1.0), 0.0)


def spectrum_summary(sigma: torch.Tensor) -> dict[str, float]:
    """Scalar summary of one spectrum: erank, stable rank, numerical rank, top σ, Frobenius norm.

    Args:
        sigma: ``(k,)`` singular values of one matrix.
    """
    s = clean_spectrum(sigma)
    return {
        "erank": float(effective_rank(s)),
        "stable_rank": float(stable_rank(s)),
        "rank": int((s > 0).sum()),
        "sigma_max": float(s[0]) if s.numel() else 0.0,
        "frobenius": float(s.norm()),
    }
