"""Batched Gram-matrix core shared by the geometry analyses (private).

Space: factors in, ΔW-space quantities out. For a module with tasks ``t = 1..T`` we stack
``B_cat = [B_1 … B_T]`` ``(m, R)`` and ``A_stk = [A_1; …; A_T]`` ``(R, n)`` and keep only the two
``R × R`` Gram matrices ``G_B = B_catᵀ B_cat`` and ``G_A = A_stk A_stkᵀ`` (float64). Everything
the analyses need follows from them:

    * a square root ``S`` with ``Sᵀ S = G`` and a whitening ``P`` with ``(B_cat P)`` orthonormal
      on the kept directions (eigh of G; eigenvalues ``≤ GRAM_RTOL · λ_max`` are zeros), so that
      ``B_cat = Q_B S_B`` and ``A_stkᵀ = Q_A S_A`` with ``Q`` never formed;
    * ``ΔW_TA = Σ_t ΔW_t = Q_B (S_B S_Aᵀ) Q_Aᵀ``: its SVD is the SVD of the ``R × R`` core;
    * ``ΔW_t = Q_t (S_{B,t} S_{A,t}ᵀ) Q'_tᵀ`` from the diagonal ``r_t × r_t`` blocks.

Why Grams rather than QR: one ``(m, R)ᵀ(m, R)`` product is several times cheaper than a float64
Householder QR of the same block, and every metric here only needs inner products. The price is
resolution: σ below about ``sqrt(eps) · σ_max`` (≈1e-7 relative) are not resolved, hence
``GRAM_RTOL = 1e-12`` on eigenvalues (σ below ``1e-6 σ_max`` count as zero, as in
:data:`merging_core.geometry.spectra.ZERO_RTOL`).

All tensors carry a leading batch dimension ``G`` (modules of the same shape and ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

GRAM_RTOL = 1e-12
DTYPE = torch.float64


@dataclass(frozen=True)
class GramRoot:
    """Square root and whitening of a batch of PSD Gram matrices ``G = W diag(λ) Wᵀ``.

    Attributes:
        lam: ``(G, k)`` eigenvalues, ascending, numerical zeros set to 0.
        S: ``(G, k, k)`` with ``Sᵀ S = G`` (``S = diag(√λ) Wᵀ``).
        P: ``(G, k, k)`` whitening ``W diag(1/√λ)`` (zero columns for null directions): for a
            factor ``X`` with ``Xᵀ X = G``, ``X P`` has orthonormal (or zero) columns.
        keep: ``(G, k)`` bool, the non-null directions.
    """

    lam: torch.Tensor
    S: torch.Tensor
    P: torch.Tensor
    keep: torch.Tensor

    @property
    def sigma(self) -> torch.Tensor:
        """``(G, k)`` singular values of the factor, descending."""
        return self.lam.clamp_min(0.0).sqrt().flip(-1)

    @property
    def rank(self) -> torch.Tensor:
        """``(G,)`` numerical rank."""
        return self.keep.sum(dim=-1)


def gram_root(G: torch.Tensor) -> GramRoot:
    """Eigen-square-root of a batch of symmetric PSD matrices ``(..., k, k)``."""
    Gs = 0.5 * (G + G.mT)
    lam, W = torch.linalg.eigh(Gs)  # (..., k), (..., k, k), ascending
    top = lam[..., -1:].clamp_min(0.0)
    keep = (lam > GRAM_RTOL * top) & (lam > 0)
    lam = torch.where(keep, lam, torch.zeros_like(lam))
    root = lam.sqrt()
    inv = torch.where(keep, 1.0 / torch.where(keep, root, 1.0), torch.zeros_like(root))
    S = root.unsqueeze(-1) * W.mT  # diag(√λ) Wᵀ
    P = W * inv.unsqueeze(-2)  # W diag(1/√λ)
    return GramRoot(lam=lam, S=S, P=P, keep=keep)


def gram_sigma(G: torch.Tensor) -> torch.Tensor:
    """Singular values of any factor ``X`` with ``Xᵀ X = G``: ``√eig(G)``, descending.

    Eigenvalues only (``eigvalsh``); the same null threshold as :func:`gram_root`.
    """
    lam = torch.linalg.eigvalsh(0.5 * (G + G.mT))  # (..., k) ascending
    top = lam[..., -1:].clamp_min(0.0)
    lam = torch.where((lam > GRAM_RTOL * top) & (lam > 0), lam, torch.zeros_like(lam))
    return lam.sqrt().flip(-1)


@dataclass(frozen=True)
class ModuleBatch:
    """Stacked factors and Grams of ``G`` modules that share shape and per-task ranks.

    Attributes:
        B_cat: ``(G, m, R)`` float64. A_stk: ``(G, R, n)`` float64.
        edges: task boundaries in ``0..R`` (``T + 1`` ints). Gb, Ga: ``(G, R, R)``.
    """

    B_cat: torch.Tensor
    A_stk: torch.Tensor
    edges: tuple[int, ...]
    Gb: torch.Tensor
    Ga: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return len(self.edges) - 1

    def task_slice(self, t: int) -> slice:
        return slice(self.edges[t], self.edges[t + 1])

    def block(self, G: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """``(G, r_i, r_j)`` block of an ``R × R`` matrix."""
        return G[:, self.task_slice(i), self.task_slice(j)]

    @property
    def equal_ranks(self) -> bool:
        widths = {self.edges[t + 1] - self.edges[t] for t in range(self.num_tasks)}
        return len(widths) == 1

    def diag_blocks(self, M: torch.Tensor) -> list[torch.Tensor]:
        """The ``T`` diagonal blocks ``(G, r_t, r_t)`` of an ``R × R`` batch."""
        return [self.block(M, t, t) for t in range(self.num_tasks)]

    def map_blocks(
        self, M: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[torch.Tensor]:
        """``[fn(block_t) for t]`` over the diagonal blocks; one batched call if ranks match."""
        blocks = self.diag_blocks(M)
        if not self.equal_ranks:
            return [fn(b) for b in blocks]
        return list(fn(torch.stack(blocks, dim=1)).unbind(dim=1))  # (G, T, r, r) in one call

    @cached_property
    def root_b(self) -> GramRoot:
        """Gram root of ``G_B`` (``B_cat = Q_B S_B``)."""
        return gram_root(self.Gb)

    @cached_property
    def root_a(self) -> GramRoot:
        """Gram root of ``G_A`` (``A_stkᵀ = Q_A S_A``)."""
        return gram_root(self.Ga)

    @cached_property
    def task_roots_b(self) -> list[GramRoot]:
        """Per task, the Gram root of ``B_tᵀ B_t`` (each field ``(G, r_t, …)``)."""
        return self._task_roots(self.Gb)

    @cached_property
    def task_roots_a(self) -> list[GramRoot]:
        """Per task, the Gram root of ``A_t A_tᵀ``."""
        return self._task_roots(self.Ga)

    def _task_roots(self, M: torch.Tensor) -> list[GramRoot]:
        if not self.equal_ranks:
            return [gram_root(b) for b in self.diag_blocks(M)]
        root = gram_root(torch.stack(self.diag_blocks(M), dim=1))  # (G, T, r, r)
        parts = zip(*(x.unbind(dim=1) for x in (root.lam, root.S, root.P, root.keep)), strict=True)
        return [GramRoot(lam=a, S=b, P=c, keep=d) for a, b, c, d in parts]

    def indicator(self) -> torch.Tensor:
        """``(R, T)`` 0/1 matrix mapping rank components to tasks."""
        E = torch.zeros(self.edges[-1], self.num_tasks, dtype=DTYPE)
        for t in range(self.num_tasks):
            E[self.task_slice(t), t] = 1.0
        return E


def build_batch(
    Bs: Sequence[Sequence[torch.Tensor]], As: Sequence[Sequence[torch.Tensor]]
) -> ModuleBatch:
    """Stack per-module, per-task factors into a :class:`ModuleBatch`.

    Args:
        Bs: ``Bs[g][t]`` is ``(m, r_t)``; As: ``As[g][t]`` is ``(r_t, n)``. All modules ``g`` must
            share ``m``, ``n`` and the ranks ``r_t``.
    """
    edges = [0]
    for b in Bs[0]:
        edges.append(edges[-1] + int(b.shape[1]))
    G, m, n = len(Bs), int(Bs[0][0].shape[0]), int(As[0][0].shape[1])
    B_cat = torch.empty(G, m, edges[-1], dtype=DTYPE)  # (G, m, R), filled with one copy each
    A_stk = torch.empty(G, edges[-1], n, dtype=DTYPE)  # (G, R, n)
    for g, (row_b, row_a) in enumerate(zip(Bs, As, strict=True)):
        for t, (b, a) in enumerate(zip(row_b, row_a, strict=True)):
            B_cat[g, :, edges[t] : edges[t + 1]].copy_(b)
            A_stk[g, edges[t] : edges[t + 1]].copy_(a)
    Gb = B_cat.mT @ B_cat  # (G, R, m) @ (G, m, R) -> (G, R, R)
    Ga = A_stk @ A_stk.mT  # (G, R, n) @ (G, n, R) -> (G, R, R)
    return ModuleBatch(B_cat=B_cat, A_stk=A_stk, edges=tuple(edges), Gb=Gb, Ga=Ga)


def task_sigmas(batch: ModuleBatch) -> list[torch.Tensor]:
    """Singular values of each ``ΔW_t = B_t A_t``: per task ``(G, r_t)``, descending.

    ``B_t = Q S_{B,t}``, ``A_tᵀ = Q' S_{A,t}`` with ``S`` from the ``r_t × r_t`` diagonal Gram
    blocks, so ``σ(ΔW_t) = σ(S_{B,t} S_{A,t}ᵀ)``.
    """
    pairs = zip(batch.task_roots_b, batch.task_roots_a, strict=True)
    cores = [rb.S @ ra.S.mT for rb, ra in pairs]  # (G, r_t, r_t) each
    if batch.equal_ranks:
        return list(torch.linalg.svdvals(torch.stack(cores, dim=1)).unbind(dim=1))
    return [torch.linalg.svdvals(c) for c in cores]


@dataclass(frozen=True)
class CoreSVD:
    """SVD of ``ΔW_TA = Σ_t ΔW_t`` in core coordinates: ``ΔW_TA = (Q_B Uc) diag(S) (Q_A Vc)ᵀ``.

    Attributes:
        root_b, root_a: Gram roots of ``G_B`` and ``G_A``
            (``Q_B = B_cat P_B``, ``Q_A = A_stkᵀ P_A``).
        Uc: ``(G, R, R)``. S: ``(G, R)`` descending. Vc: ``(G, R, R)``.
    """

    root_b: GramRoot
    root_a: GramRoot
    Uc: torch.Tensor
    S: torch.Tensor
    Vc: torch.Tensor


def sum_svd(batch: ModuleBatch) -> CoreSVD:
    """SVD of the Task-Arithmetic sum through the ``R × R`` core ``S_B S_Aᵀ``."""
    rb, ra = batch.root_b, batch.root_a
    Uc, S, Vch = torch.linalg.svd(rb.S @ ra.S.mT)  # (G, R, R) core
    return CoreSVD(root_b=rb, root_a=ra, Uc=Uc, S=S, Vc=Vch.mT)


def check_pairs(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> None:
    """Raise ``ValueError`` unless ``Bs``/``As`` are aligned per-task factor pairs."""
    if len(Bs) == 0 or len(Bs) != len(As):
        raise ValueError(f"need one B and one A per task, got {len(Bs)} B and {len(As)} A")
    m, n = Bs[0].shape[0], As[0].shape[-1]
    for t, (B, A) in enumerate(zip(Bs, As, strict=True)):
        if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
            raise ValueError(
                f"task {t}: need B (m, r), A (r, n), got {tuple(B.shape)}, {tuple(A.shape)}"
            )
        if B.shape[0] != m or A.shape[1] != n:
            raise ValueError(f"task {t}: ΔW shape {(B.shape[0], A.shape[1])} differs from {(m, n)}")
