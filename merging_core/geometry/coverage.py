"""Subspace coverage: TARA's three erank stacks, a norm-normalised control, and the TA sum.

Space: mixed, stated per quantity.

**From the paper** (TARA, Jeong et al., CVPR 2026, https://arxiv.org/abs/2603.26299, as reported
in second-hand notes): per layer, the rank-1 LoRA components are vectorised and stacked as rows,
and the effective rank is compared across three constructions: (1) the per-task sum of eranks,
(2) a LoRA-agnostic ΔW stack, (3) a LoRA-aware rank-1 stack; the rank-1 stack keeps about 70 % of
(1) while the ΔW stack collapses.

**Our reconstruction** (exact definitions are not published):

* ``R_t = [vec(b_t1 a_t1ᵀ); …; vec(b_tr a_trᵀ)]`` ``(r_t, m·n)`` with ``b`` a column of ``B_t``
  (scale folded) and ``a`` a row of ``A_t``.
* (1) ``erank_rank1_task_sum = Σ_t erank(R_t)``; (3) ``erank_rank1_stack = erank([R_1; …; R_T])``;
  ``coverage_ratio = (3) / (1)``. These depend on the factorisation **by construction** (the
  paper's point: ``(B M, M⁻¹ A)`` has other rank-1 components); they are invariant only under a
  joint permutation/rescaling of the components (``M`` a scaled permutation).
* (2) ``erank_dw_stack = erank([vec ΔW_1; …; vec ΔW_T])`` (ΔW space, factorisation-invariant).
* Control: the same stacks with every row divided by its norm ``‖b‖‖a‖`` (zero rows dropped):
  ``…_normalised`` and ``coverage_ratio_normalised`` (factor-dependent).
* ΔW-space companions: ``erank_task_sum = Σ_t erank(ΔW_t)``, ``erank_ta = erank(Σ_t ΔW_t)`` (the
  "interpolation" reading: the TA sum's erank equals the erank of the stack of its own SVD rank-1
  terms, which are Frobenius-orthogonal), and ``ta_coverage = erank_ta / erank_task_sum``.

Gram identities (nothing of size ``m·n`` is formed): the singular values of a row stack ``X`` are
``√eig(X Xᵀ)``, and ``⟨b aᵀ, b' a'ᵀ⟩_F = (b·b')(a·a')``, so the rank-1 stack's Gram matrix is
``H = (B_catᵀ B_cat) ∘ (A_stk A_stkᵀ)`` ``(R, R)``; ``R_t`` uses its diagonal ``r_t × r_t`` block,
and the ΔW stack's Gram is the block sum ``Eᵀ H E`` ``(T, T)`` (``E`` maps components to tasks).
Ratios with a zero denominator (a zero module) are defined as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.geometry._gram import (
    ModuleBatch,
    build_batch,
    check_pairs,
    gram_sigma,
    sum_svd,
    task_sigmas,
)
from merging_core.geometry.spectra import effective_rank

COVERAGE_KEYS = (
    "erank_task_sum",
    "erank_ta",
    "ta_coverage",
    "erank_dw_stack",
    "erank_rank1_task_sum",
    "erank_rank1_stack",
    "coverage_ratio",
    "erank_rank1_task_sum_normalised",
    "erank_rank1_stack_normalised",
    "coverage_ratio_normalised",
)


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` elementwise, 0 where ``den == 0``."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), torch.zeros_like(num))


def rank1_gram(batch: ModuleBatch) -> torch.Tensor:
    """``H = G_B ∘ G_A`` ``(G, R, R)``: Gram matrix of the stack of ``vec(b_k a_kᵀ)``."""
    return batch.Gb * batch.Ga


def normalise_gram(H: torch.Tensor) -> torch.Tensor:
    """Gram of the row-normalised stack: ``H_kl / (‖x_k‖ ‖x_l‖)``; zero rows stay zero."""
    d = torch.diagonal(H, dim1=-2, dim2=-1).clamp_min(0.0).sqrt()  # (G, R)
    inv = torch.where(d > 0, 1.0 / torch.where(d > 0, d, 1.0), torch.zeros_like(d))
    return H * inv.unsqueeze(-1) * inv.unsqueeze(-2)


def _stack_eranks(batch: ModuleBatch, H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t erank of the task-t block, erank of the whole stack), each ``(G,)``."""
    per_task = [effective_rank(gram_sigma(batch.block(H, t, t))) for t in range(batch.num_tasks)]
    return torch.stack(per_task).sum(dim=0), effective_rank(gram_sigma(H))


def coverage_from_batch(
    batch: ModuleBatch,
    *,
    sigmas: list[torch.Tensor] | None = None,
    ta_sigma: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """All coverage quantities for a batch of modules, each ``(G,)`` float64.

    Args:
        batch: stacked factors and Grams. sigmas: per-task ``(G, r_t)`` spectra if already
            computed. ta_sigma: ``(G, R)`` spectrum of the TA sum if already computed.
    """
    sigmas = task_sigmas(batch) if sigmas is None else sigmas
    ta_sigma = sum_svd(batch).S if ta_sigma is None else ta_sigma
    task_sum = torch.stack([effective_rank(s) for s in sigmas]).sum(dim=0)
    erank_ta = effective_rank(ta_sigma)
    H = rank1_gram(batch)
    E = batch.indicator()
    dw_stack = effective_rank(gram_sigma(E.T @ H @ E))  # (T, R)(G, R, R)(R, T) -> (G, T, T)
    r1_sum, r1_stack = _stack_eranks(batch, H)
    n_sum, n_stack = _stack_eranks(batch, normalise_gram(H))
    return {
        "erank_task_sum": task_sum,
        "erank_ta": erank_ta,
        "ta_coverage": safe_ratio(erank_ta, task_sum),
        "erank_dw_stack": dw_stack,
        "erank_rank1_task_sum": r1_sum,
        "erank_rank1_stack": r1_stack,
        "coverage_ratio": safe_ratio(r1_stack, r1_sum),
        "erank_rank1_task_sum_normalised": n_sum,
        "erank_rank1_stack_normalised": n_stack,
        "coverage_ratio_normalised": safe_ratio(n_stack, n_sum),
    }


def coverage_stacks(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> dict[str, float]:
    """Coverage quantities of one module (see the module docstring for each key's space).

    Args:
        Bs: per task ``(m, r_t)`` (scale folded). As: per task ``(r_t, n)``.

    Returns:
        ``{key: float}`` for every key in :data:`COVERAGE_KEYS`.
    """
    check_pairs(Bs, As)
    out = coverage_from_batch(build_batch([list(Bs)], [list(As)]))
    return {k: float(v[0]) for k, v in out.items()}
