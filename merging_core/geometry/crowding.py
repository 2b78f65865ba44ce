"""B-space crowding diagnostics of Pico (Tang & Yang, https://arxiv.org/abs/2604.16826).

Overlaps (methods.md §1), computed on orthonormal bases so they depend on subspaces only:

    O_B(i, j) = ‖Q_{B_i}ᵀ Q_{B_j}‖_F² / min(ρ_i, ρ_j)      Q_{B_i}: basis of col(B_i), ρ_i = dim
    O_A(i, j) = same on the row spaces of A_i

For equal full ranks ``ρ = r`` this is the paper's ``(1/r)‖·‖_F²``; the ``min`` keeps mixed ranks
in ``[0, 1]``. A zero task (``ρ = 0``) overlaps nothing (0). Space: ΔW — ``col(B_i) = col(ΔW_i)``
and ``row(A_i) = row(ΔW_i)`` whenever ``ΔW_i`` has rank ``r_i``, so both are invariant under
``(B M, M⁻¹ A)``. ``erank_B_subspace`` / ``erank_A_subspace`` (ours) are the eranks of the
stacked bases ``[Q_{B_1} … Q_{B_T}]``: ``T·r`` when all subspaces are orthogonal, ``r`` when they
coincide; also ΔW-space.

Factor-space diagnostics (the paper's, on the raw scale-folded factors; they change under
``(B M, M⁻¹ A)``, which is what they are meant to show): ``erank_B_stack = erank([B_1 … B_T])``,
``erank_A_stack = erank([A_1; …; A_T])``, stable ranks, and the component energy
``e_j = σ_j² / Σ σ²`` of the B stack with ``o_max_B = max_j e_j`` (same for A).

Bases are never formed: ``Q_{B_i} = B_i P_i`` with ``P_i`` the whitening of the Gram block
``B_iᵀ B_i``, so ``Q_{B_i}ᵀ Q_{B_j} = P_iᵀ (B_iᵀ B_j) P_j`` is ``r_i × r_j``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.geometry._gram import ModuleBatch, build_batch, check_pairs, gram_sigma
from merging_core.geometry.spectra import component_energy, effective_rank, stable_rank

CROWDING_KEYS = (
    "overlap_B_mean",
    "overlap_B_max",
    "overlap_A_mean",
    "overlap_A_max",
    "erank_B_subspace",
    "erank_A_subspace",
    "erank_B_stack",
    "erank_A_stack",
    "stable_rank_B_stack",
    "stable_rank_A_stack",
    "o_max_B",
    "o_max_A",
)


def _whitened(batch: ModuleBatch, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-diagonal whitening ``(G, R, R)`` and per-task subspace dims ``(G, T)``."""
    G = batch.Gb if side == "B" else batch.Ga
    roots = batch.task_roots_b if side == "B" else batch.task_roots_a
    P = torch.zeros_like(G)
    dims = []
    for t, root in enumerate(roots):
        sl = batch.task_slice(t)
        P[:, sl, sl] = root.P
        dims.append(root.rank)
    return P, torch.stack(dims, dim=-1).to(G.dtype)


def overlaps_from_gram(batch: ModuleBatch, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlap matrices ``(G, T, T)`` and the basis-stack Gram ``(G, R, R)`` for one side.

    Args:
        batch: the module batch. side: ``"B"`` (column spaces of B) or ``"A"`` (row spaces of A).
    """
    G = batch.Gb if side == "B" else batch.Ga
    P, dims = _whitened(batch, side)
    K = P.mT @ G @ P  # Gram of [Q_1 … Q_T]: (G, R, R)
    T = batch.num_tasks
    O = torch.zeros(G.shape[0], T, T, dtype=G.dtype)
    for i in range(T):
        for j in range(T):
            block = batch.block(K, i, j)
            den = torch.minimum(dims[:, i], dims[:, j])
            num = (block**2).sum(dim=(-2, -1))
            O[:, i, j] = torch.where(den > 0, num / den.clamp_min(1.0), 0.0)
    return O, K


def _offdiag_stats(O: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max of the off-diagonal entries, ``(G,)`` each (0 for a single task)."""
    T = O.shape[-1]
    if T < 2:
        zero = torch.zeros(O.shape[0], dtype=O.dtype)
        return zero, zero
    mask = ~torch.eye(T, dtype=torch.bool)
    off = O[:, mask]  # (G, T(T-1))
    return off.mean(dim=-1), off.max(dim=-1).values


def crowding_from_batch(
    batch: ModuleBatch,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Crowding scalars (``(G,)`` each, keys :data:`CROWDING_KEYS`) and matrices/spectra.

    Returns:
        ``(scalars, extras)`` where ``extras`` holds ``O_B``, ``O_A`` ``(G, T, T)`` and the
        factor-stack spectra ``sigma_B``, ``sigma_A`` ``(G, R)``.
    """
    out: dict[str, torch.Tensor] = {}
    extras: dict[str, torch.Tensor] = {}
    for side in ("B", "A"):
        O, K = overlaps_from_gram(batch, side)
        out[f"overlap_{side}_mean"], out[f"overlap_{side}_max"] = _offdiag_stats(O)
        out[f"erank_{side}_subspace"] = effective_rank(gram_sigma(K))
        sigma = (batch.root_b if side == "B" else batch.root_a).sigma
        out[f"erank_{side}_stack"] = effective_rank(sigma)
        out[f"stable_rank_{side}_stack"] = stable_rank(sigma)
        out[f"o_max_{side}"] = component_energy(sigma)[:, 0]
        extras[f"O_{side}"], extras[f"sigma_{side}"] = O, sigma
    return {k: out[k] for k in CROWDING_KEYS}, extras


def overlap_matrices(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pico's ``O_B`` and ``O_A`` for one module, each ``(T, T)`` float64 in ``[0, 1]``.

    Args:
        Bs: per task ``(m, r_t)``. As: per task ``(r_t, n)``.
    """
    check_pairs(Bs, As)
    batch = build_batch([list(Bs)], [list(As)])
    return overlaps_from_gram(batch, "B")[0][0], overlaps_from_gram(batch, "A")[0][0]


def crowding_metrics(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> dict[str, float]:
    """Crowding scalars of one module (keys :data:`CROWDING_KEYS`, spaces in the module doc)."""
    check_pairs(Bs, As)
    scalars, _ = crowding_from_batch(build_batch([list(Bs)], [list(As)]))
    return {k: float(v[0]) for k, v in scalars.items()}
