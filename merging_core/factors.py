"""Exact factor-space linear algebra for sums and concatenations of LoRA updates.

Space: factors. Every function takes LoRA factors ``B_t: (m, r_t)`` (scale folded) and
``A_t: (r_t, n)`` with ``ΔW_t = B_t @ A_t`` and never forms an ``m × n`` matrix. The trick is the
same throughout: QR both stacked factors, then an SVD of the small ``R × R`` core (``R = Σ r_t``),
computed in float64. Cost ``O((m + n) R² + R³)`` against ``O(m n min(m, n))`` dense.

Identities (methods.md §0, L1–L4):
    Σ_t w_t B_t A_t = [w_1 B_1 … w_T B_T] @ [A_1; …; A_T]                      (weighted sum)
    [ΔW_1 | … | ΔW_T] = [B_1 … B_T] @ blkdiag(A_1, …, A_T)                     (concatenation)
    ⟨B_i A_i, B_j A_j⟩_F = tr((B_iᵀ B_j)(A_j A_iᵀ))                              (Gram)

QR routes: Householder (``torch.linalg.qr``) everywhere except :func:`concat_blocks` (KnOTS),
which by default takes a Gram route (Cholesky of the ``R × R`` Grams, the orthonormal bases never
formed) when the factors are well conditioned, and Householder otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

CORE_DTYPE = torch.float64


@dataclass(frozen=True)
class LowRankSVD:
    """A thin SVD ``ΔW = U diag(S) Vᵀ`` kept in factored form.

    Attributes:
        U: ``(m, k)`` orthonormal columns. S: ``(k,)`` descending, non-negative.
        V: ``(n, k)`` orthonormal columns.
    """

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor

    @property
    def rank(self) -> int:
        return int(self.S.numel())

    def dense(self) -> torch.Tensor:
        """The dense matrix, ``(m, k) * (k,) @ (k, n) -> (m, n)``; for tests and small layers."""
        return (self.U * self.S) @ self.V.T

    def factors(self, *, balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """LoRA factors ``(B, A)`` with ``B @ A`` equal to this matrix.

        Args:
            balanced: put ``sqrt(S)`` on both sides (else ``B = U S``, ``A = Vᵀ``).
        """
        if balanced:
            root = self.S.sqrt()
            return self.U * root, (self.V * root).T.contiguous()
        return self.U * self.S, self.V.T.contiguous()

    def truncate(self, rank: int) -> tuple[LowRankSVD, float]:
        """Best rank-``rank`` approximation (Eckart–Young) and the retained energy fraction.

        Returns:
            The truncated SVD and ``Σ_{i<k} σ_i² / Σ σ_i²`` (1.0 for a zero matrix).

        Raises:
            ValueError: if ``rank < 0``.
        """
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        k = min(rank, self.rank)
        total = float((self.S.double() ** 2).sum())
        kept = float((self.S[:k].double() ** 2).sum())
        energy = 1.0 if total == 0.0 else kept / total
        return LowRankSVD(self.U[:, :k], self.S[:k], self.V[:, :k]), energy

    def drop_zeros(self, rtol: float = 1e-10) -> LowRankSVD:
        """Remove singular values below ``rtol · σ_max`` (numerical null directions)."""
        if self.rank == 0:
            return self
        keep = int((self.S > rtol * self.S.max()).sum())
        return LowRankSVD(self.U[:, :keep], self.S[:keep], self.V[:, :keep])


@dataclass(frozen=True)
class ConcatSVD:
    """SVD of the column concatenation ``[ΔW_1 | … | ΔW_T] = U diag(S) [V_1ᵀ | … | V_Tᵀ]``.

    Attributes:
        U: ``(m, k)`` shared left singular vectors. S: ``(k,)``.
        V_blocks: per task ``(n, k)``; ``ΔW_t = U diag(S) V_tᵀ`` exactly (the blocks together
            have orthonormal columns, each block alone does not).
    """

    U: torch.Tensor
    S: torch.Tensor
    V_blocks: tuple[torch.Tensor, ...]

    def task_delta(self, t: int) -> torch.Tensor:
        """Dense ``ΔW_t`` rebuilt from the shared basis (tests and small layers only)."""
        return (self.U * self.S) @ self.V_blocks[t].T


def stack_factors(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], weights: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B_cat = [w_1 B_1 … w_T B_T]`` ``(m, R)`` and ``A_stk = [A_1; …; A_T]`` ``(R, n)``.

    Raises:
        ValueError: empty input, mismatched lengths, or inconsistent shapes.
    """
    _check_factor_lists(Bs, As)
    if weights is not None and len(weights) != len(Bs):
        raise ValueError(f"got {len(weights)} weights for {len(Bs)} adapters")
    if weights is None:
        B_cat = torch.cat([B.float() for B in Bs], dim=1)
    else:
        B_cat = torch.cat([float(w) * B.float() for w, B in zip(weights, Bs, strict=True)], dim=1)
    return B_cat, torch.cat([A.float() for A in As], dim=0)


def svd_of_product(B: torch.Tensor, A: torch.Tensor) -> LowRankSVD:
    """Thin SVD of ``B @ A`` (``(m, r) @ (r, n)``) via QR of both factors and an ``r × r`` core.

    Zero singular values (rank-deficient factors) are kept so the result has ``min(r, m, n)``
    components; use :meth:`LowRankSVD.drop_zeros` to remove them.
    """
    if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(f"need B (m, r) and A (r, n), got {tuple(B.shape)} and {tuple(A.shape)}")
    out_dtype = B.dtype if B.dtype.is_floating_point else torch.float32
    out_dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    Qb, Rb = torch.linalg.qr(B.to(CORE_DTYPE))  # (m, r'), (r', r)
    Qa, Ra = torch.linalg.qr(A.to(CORE_DTYPE).T)  # (n, r''), (r'', r)
    Uc, S, Vch = torch.linalg.svd(Rb @ Ra.T, full_matrices=False)  # (r', r'') core
    U = Qb @ Uc  # (m, k)
    V = Qa @ Vch.T  # (n, k)
    return LowRankSVD(U.to(out_dtype), S.to(out_dtype), V.to(out_dtype))


def svd_of_sum(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], weights: Sequence[float] | None = None
) -> LowRankSVD:
    """Thin SVD of ``Σ_t w_t B_t A_t`` without forming it (methods.md L1).

    Args:
        Bs: per task ``(m, r_t)``. As: per task ``(r_t, n)``. weights: per task ``w_t`` (1 if None).

    Returns:
        LowRankSVD with ``min(R, m, n)`` components (``R = Σ r_t``), descending.
    """
    B_cat, A_stk = stack_factors(Bs, As, weights)
    return svd_of_product(B_cat, A_stk)


def svd_of_concat(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> ConcatSVD:
    """SVD of ``[ΔW_1 | … | ΔW_T]`` (``(m, T·n)``) with per-task right blocks (methods.md L2).

    ``[ΔW_1 | … | ΔW_T] = B_cat · blkdiag(A_1, …, A_T)``; each ``A_tᵀ = Q_t R_t``, so the core is
    ``R_B · blkdiag(R_t)ᵀ`` of size ``R × R``.

    Returns:
        ConcatSVD with ``k = min(R, m)`` components; ``V_blocks[t]`` is ``(n, k)``.
    """
    _check_factor_lists(Bs, As)
    B_cat = torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1)  # (m, R)
    Qb, Rb = torch.linalg.qr(B_cat)  # (m, kb), (kb, R)
    qs, rs = zip(
        *(torch.linalg.qr(A.to(CORE_DTYPE).T) for A in As), strict=True
    )  # (n, k_t), (k_t, r_t)
    core = Rb @ torch.block_diag(*rs).T  # (kb, R) @ (R, Σk_t) -> (kb, Σk_t)
    Uc, S, Vch = torch.linalg.svd(core, full_matrices=False)
    U = (Qb @ Uc).float()  # (m, k)
    blocks, start = [], 0
    for q in qs:
        width = q.shape[1]
        blocks.append(
            (q @ Vch[:, start : start + width].T).float()
        )  # (n, k_t) @ (k_t, k) -> (n, k)
        start += width
    return ConcatSVD(U=U, S=S.float(), V_blocks=tuple(blocks))


CONCAT_ROUTES = ("gram", "householder")
GRAM_MAX_COND = 1e4
"""The Gram route is used only when ``cond(X) = sqrt(λ_max / λ_min)`` of its Gram is below this:
its basis is orthonormal to about ``eps · cond(X)²`` (≈ 2e-8 at the limit); worse-conditioned or
rank-deficient factors (duplicate or zero tasks) take the Householder route."""


@dataclass(frozen=True)
class ConcatBlocks:
    """KnOTS's view of ``[ΔW_1 | … | ΔW_T]``: a shared basis and per-task row blocks.

    Attributes:
        U: ``(m, k)`` float32, orthonormal columns (the shared left singular vectors).
        S: ``(k,)`` float32, descending, all above the requested floor.
        Z: per task ``Z_t = diag(S) V_tᵀ = Uᵀ ΔW_t`` ``(k, n)`` float32, row-major, so that
            ``ΔW_t = U Z_t`` up to the dropped components.
        route: ``"gram"`` or ``"householder"``, the route actually taken.
    """

    U: torch.Tensor
    S: torch.Tensor
    Z: tuple[torch.Tensor, ...]
    route: str


def concat_blocks(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    *,
    floor: float = 0.0,
    route: str = "gram",
) -> ConcatBlocks:
    """SVD of ``[ΔW_1 | … | ΔW_T]`` as a basis ``U`` and blocks ``Z_t`` (methods.md L2).

    Same maths as :func:`svd_of_concat`: ``B_cat = Q_B R_B``, ``A_tᵀ = Q_t R_t``, SVD of the
    ``R × R`` core ``R_B blkdiag(R_t)ᵀ = Uc diag(S) Vcᵀ`` in float64. Only the ``k`` components with
    ``S > floor`` are multiplied out, and each block is built directly in row layout.

    * ``route="gram"`` (default): ``R`` from the Cholesky factor of the ``R × R`` Gram matrices, and
      ``Q`` never formed: ``U = B_cat (R_B⁻¹ Uc_k)`` ``(m, R) @ (R, k)`` and
      ``Z_t = (diag(S) Vc_tᵀ R_t⁻ᵀ) A_t`` ``(k, r_t) @ (r_t, n)`` — two GEMMs per side instead of
      Householder QRs. Taken only when every factor has ``cond ≤ GRAM_MAX_COND``; otherwise the
      Householder route is used (``route`` in the result says which).
    * ``route="householder"``: ``torch.linalg.qr`` of both sides (the reference).

    The two routes agree to about 1e-7 relative on ``U Z_t`` (float32 outputs; see
    tests/test_factors.py and benchmarks/merge.py).

    Args:
        Bs: per task ``(m, r_t)``. As: per task ``(r_t, n)``.
        floor: drop components with ``S <= floor`` (absolute, compared in float32).
        route: ``"gram"`` or ``"householder"``.

    Raises:
        ValueError: inconsistent factors, ``floor < 0`` or an unknown ``route``.
    """
    _check_factor_lists(Bs, As)
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if route not in CONCAT_ROUTES:
        raise ValueError(f"route must be one of {list(CONCAT_ROUTES)}, got {route!r}")
    B_cat = torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1)  # (m, R)
    A_ts = [A.to(CORE_DTYPE).T for A in As]  # (n, r_t) views
    sides = _gram_sides(B_cat, A_ts) if route == "gram" else None
    taken = "gram" if sides is not None else "householder"
    if sides is None:
        sides = _householder_sides(B_cat, A_ts)
    (xb, rb, gram_b), tasks = sides
    core = rb @ torch.block_diag(*[r for _, r, _ in tasks]).T  # (R, R)
    Uc, S, Vch = torch.linalg.svd(core, full_matrices=False)
    k = int((S.float() > floor).sum())  # S descending: the kept components are a prefix
    rows = S[:k, None] * Vch[:k]  # (k, R): diag(S) Vcᵀ
    if gram_b:  # outputs are float32: multiply the float32 factors by the float64-built maps
        left = torch.linalg.solve_triangular(rb, Uc[:, :k], upper=True)  # R_B⁻¹ Uc_k (R, k)
        U = torch.cat([B.float() for B in Bs], dim=1) @ left.float()  # (m, R) @ (R, k)
    else:
        U = (xb @ Uc[:, :k]).float()  # (m, kb) @ (kb, k) -> (m, k)
    blocks, start = [], 0
    for t, (x, r, gram) in enumerate(tasks):
        part = rows[:, start : start + r.shape[0]]  # (k, r_t)
        if gram:  # (part R_t⁻ᵀ) A_t = (R_t⁻¹ partᵀ)ᵀ A_t
            part = torch.linalg.solve_triangular(r, part.T, upper=True).T
            blocks.append(part.float() @ As[t].float())  # (k, r_t) @ (r_t, n) -> (k, n)
        else:
            blocks.append((part @ x.mT).float())  # (k, k_t) @ (k_t, n) -> (k, n)
        start += r.shape[0]
    return ConcatBlocks(U=U, S=S[:k].float(), Z=tuple(blocks), route=taken)


_Side = tuple[torch.Tensor, torch.Tensor, bool]  # (basis X, R, X is the raw factor)


def _gram_sides(B_cat: torch.Tensor, A_ts: list[torch.Tensor]) -> tuple[_Side, list[_Side]] | None:
    """Cholesky factors of every Gram (``X = (X R⁻¹) R``); None if any factor is ill-conditioned."""
    rb = gram_factor(B_cat)
    if rb is None:
        return None
    tasks = []
    for A_t in A_ts:
        r = gram_factor(A_t)
        if r is None:
            return None
        tasks.append((A_t, r, True))
    return (B_cat, rb, True), tasks


def gram_factor(X: torch.Tensor) -> torch.Tensor | None:
    """Upper ``R`` with ``Rᵀ R = Xᵀ X`` for a tall ``(m, k)`` X (so ``X R⁻¹`` is orthonormal).

    Use float64. Returns None when ``X`` is wide, rank deficient or ``cond(X) > GRAM_MAX_COND``
    (the caller then takes a Householder QR).
    """
    if X.shape[0] < X.shape[1]:
        return None
    gram = X.T @ X  # (k, m) @ (m, k) -> (k, k)
    lam = torch.linalg.eigvalsh(gram)  # ascending
    if not float(lam[0]) > 0.0 or float(lam[-1]) > GRAM_MAX_COND**2 * float(lam[0]):
        return None
    L, info = torch.linalg.cholesky_ex(gram)
    return None if int(info) != 0 else L.T


def _householder_sides(B_cat: torch.Tensor, A_ts: list[torch.Tensor]) -> tuple[_Side, list[_Side]]:
    Qb, Rb = torch.linalg.qr(B_cat)  # (m, kb), (kb, R)
    tasks = []
    for A_t in A_ts:
        q, r = torch.linalg.qr(A_t)  # (n, k_t), (k_t, r_t)
        tasks.append((q, r, False))
    return (Qb, Rb, False), tasks


def inner_product(B1: torch.Tensor, A1: torch.Tensor, B2: torch.Tensor, A2: torch.Tensor) -> float:
    """Frobenius inner product ``⟨B1 A1, B2 A2⟩_F = tr((B1ᵀ B2)(A2 A1ᵀ))`` in float64."""
    g_b = B1.to(CORE_DTYPE).T @ B2.to(CORE_DTYPE)  # (r1, r2)
    g_a = A2.to(CORE_DTYPE) @ A1.to(CORE_DTYPE).T  # (r2, r1)
    return float(torch.trace(g_b @ g_a))


def frobenius_norm(B: torch.Tensor, A: torch.Tensor) -> float:
    """``‖B A‖_F`` from the ``r × r`` Gram matrices."""
    return max(inner_product(B, A, B, A), 0.0) ** 0.5


def gram_matrix(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> torch.Tensor:
    """``G[i, j] = ⟨ΔW_i, ΔW_j⟩_F`` for all task pairs, ``(T, T)`` float64.

    Computed blockwise from ``B_catᵀ B_cat`` and ``A_stk A_stkᵀ`` (``R × R`` each).
    """
    _check_factor_lists(Bs, As)
    B_cat = torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1)
    A_stk = torch.cat([A.to(CORE_DTYPE) for A in As], dim=0)
    gb = B_cat.T @ B_cat  # (R, R)
    ga = A_stk @ A_stk.T  # (R, R)
    edges = [0]
    for B in Bs:
        edges.append(edges[-1] + B.shape[1])
    T = len(Bs)
    G = torch.empty(T, T, dtype=CORE_DTYPE)
    for i in range(T):
        si = slice(edges[i], edges[i + 1])
        for j in range(T):
            sj = slice(edges[j], edges[j + 1])
            G[i, j] = torch.sum(gb[si, sj] * ga[sj, si].T)  # tr(X Y) = Σ X ∘ Yᵀ
    return G


def truncate_to_factors(
    svd: LowRankSVD, rank: int, *, balanced: bool = True
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Rank-``rank`` LoRA factors of a factored matrix plus the retained energy fraction.

    Returns:
        ``B (m, k)``, ``A (k, n)``, ``retained = Σ_{i<k} σ_i² / Σ σ_i²``; the relative Frobenius
        error of the truncation is ``sqrt(1 - retained)``.
    """
    kept, energy = svd.truncate(rank)
    B, A = kept.factors(balanced=balanced)
    return B, A, energy


def _check_factor_lists(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> None:
    if len(Bs) == 0:
        raise ValueError("need at least one pair of factors, got none")
    if len(Bs) != len(As):
        raise ValueError(f"got {len(Bs)} B factors but {len(As)} A factors")
    m, n = Bs[0].shape[0], As[0].shape[1]
    for t, (B, A) in enumerate(zip(Bs, As, strict=True)):
        if B.ndim != 2 or A.ndim != 2 or B.shape[1] != A.shape[0]:
            raise ValueError(
                f"task {t}: need B (m, r) and A (r, n), got {tuple(B.shape)} and {tuple(A.shape)}"
            )
        if B.shape[0] != m or A.shape[1] != n:
            raise ValueError(
                f"task {t}: ΔW shape {(B.shape[0], A.shape[1])} differs from task 0's {(m, n)}"
            )
