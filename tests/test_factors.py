"""Factor-space algebra vs dense references written here from the formulas.

Every check builds the dense matrices only in the test (small m, n), runs ``torch.linalg.svd`` /
matmul on them, and compares with the factored routes of ``merging_core.factors``.
"""

from __future__ import annotations

import pytest
import torch

from merging_core.factors import (
    GRAM_MAX_COND,
    concat_blocks,
    frobenius_norm,
    gram_factor,
    gram_matrix,
    inner_product,
    stack_factors,
    svd_of_concat,
    svd_of_product,
    svd_of_sum,
    truncate_to_factors,
)

M, N = 30, 22


def _factors(ranks, *, seed=0, m=M, n=N, deficient=False):
    """Random ``B_t (m, r_t)``, ``A_t (r_t, n)`` in float64; optionally rank-deficient."""
    g = torch.Generator().manual_seed(seed)
    Bs, As = [], []
    for r in ranks:
        B = torch.randn(m, r, generator=g, dtype=torch.float64)
        A = torch.randn(r, n, generator=g, dtype=torch.float64)
        if deficient and r > 1:
            B[:, -1] = B[:, 0]  # repeated column: B A = Σ b_i a_i loses one rank
            A[-1] = A[0] * 2.0
        Bs.append(B)
        As.append(A)
    return Bs, As


def _dense_sv(W: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(W.double())


def _assert_orthonormal(Q: torch.Tensor, atol: float = 1e-5) -> None:
    eye = torch.eye(Q.shape[1], dtype=Q.dtype)
    torch.testing.assert_close(Q.T @ Q, eye, atol=atol, rtol=0)


def _sv_close(S: torch.Tensor, dense: torch.Tensor, k: int) -> None:
    torch.testing.assert_close(S[:k].double(), dense[:k], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deficient", [False, True])
def test_svd_of_product_matches_dense(deficient):
    (B,), (A,) = _factors([5], deficient=deficient)
    W = B @ A  # (m, n) dense reference
    svd = svd_of_product(B, A)
    dense = _dense_sv(W)
    assert svd.rank == 5
    _sv_close(svd.S, dense, 5)
    torch.testing.assert_close(svd.dense(), W, rtol=1e-6, atol=1e-8)
    _assert_orthonormal(svd.U)
    _assert_orthonormal(svd.V)
    expected_rank = int(torch.linalg.matrix_rank(W))
    assert svd.drop_zeros().rank == expected_rank == (4 if deficient else 5)
    assert torch.all(svd.S[:-1] >= svd.S[1:])


@pytest.mark.parametrize("deficient", [False, True])
def test_svd_of_weighted_sum_matches_dense(deficient):
    Bs, As = _factors([3, 4, 2], seed=1, deficient=deficient)
    w = [0.5, -1.25, 2.0]
    W = sum(wt * B @ A for wt, B, A in zip(w, Bs, As, strict=True))
    svd = svd_of_sum(Bs, As, w)
    assert svd.rank == 9 and svd.U.shape == (M, 9) and svd.V.shape == (N, 9)
    _sv_close(svd.S, _dense_sv(W), 9)
    assert svd.S.dtype == torch.float32  # stack_factors works in float32; the core in float64
    torch.testing.assert_close(svd.dense().double(), W, rtol=1e-5, atol=1e-5)
    assert svd.drop_zeros(1e-6).rank == int(torch.linalg.matrix_rank(W)) == (6 if deficient else 9)
    _assert_orthonormal(svd.drop_zeros(1e-6).U)
    unweighted = svd_of_sum(Bs, As)
    plain = sum(B @ A for B, A in zip(Bs, As, strict=True))
    torch.testing.assert_close(unweighted.dense().double(), plain, rtol=1e-5, atol=1e-5)


def test_stack_factors_is_the_weighted_sum_identity():
    Bs, As = _factors([2, 3], seed=2)
    B_cat, A_stk = stack_factors(Bs, As, [2.0, -1.0])
    assert B_cat.shape == (M, 5) and A_stk.shape == (5, N)
    expected = 2.0 * Bs[0] @ As[0] - Bs[1] @ As[1]
    torch.testing.assert_close((B_cat @ A_stk).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deficient", [False, True])
def test_svd_of_concat_per_task_blocks(deficient):
    Bs, As = _factors([3, 2, 4], seed=3, deficient=deficient)
    deltas = [B @ A for B, A in zip(Bs, As, strict=True)]
    cat = torch.cat(deltas, dim=1)  # (m, T n)
    svd = svd_of_concat(Bs, As)
    k = svd.S.numel()
    _sv_close(svd.S, _dense_sv(cat), k)
    for t, dw in enumerate(deltas):
        torch.testing.assert_close(svd.task_delta(t).double(), dw, rtol=1e-4, atol=1e-4)
        assert svd.V_blocks[t].shape == (N, k)
        # KnOTS: diag(S) V_tᵀ == Uᵀ ΔW_t
        torch.testing.assert_close(
            (svd.S[:, None] * svd.V_blocks[t].T).double(), svd.U.double().T @ dw, atol=1e-4, rtol=0
        )
    V_cat = torch.cat(svd.V_blocks, dim=0)  # (T n, k): orthonormal together
    live = int((svd.S > 1e-6 * svd.S[0]).sum())
    _assert_orthonormal(V_cat[:, :live])
    _assert_orthonormal(svd.U[:, :live])


def test_gram_matrix_inner_product_and_norm():
    Bs, As = _factors([2, 5, 3, 1], seed=4)
    deltas = [B @ A for B, A in zip(Bs, As, strict=True)]
    G = gram_matrix(Bs, As)
    expected = torch.tensor(
        [[float((x * y).sum()) for y in deltas] for x in deltas], dtype=torch.float64
    )
    assert G.dtype == torch.float64 and G.shape == (4, 4)
    torch.testing.assert_close(G, expected, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(G, G.T)
    ip = inner_product(Bs[0], As[0], Bs[2], As[2])
    assert ip == pytest.approx(float((deltas[0] * deltas[2]).sum()), rel=1e-10)
    assert frobenius_norm(Bs[1], As[1]) == pytest.approx(float(deltas[1].norm()), rel=1e-10)


def test_gram_matrix_golden():
    # ΔW_1 = e1 e1ᵀ (norm 1), ΔW_2 = 2 e1 e1ᵀ + 3 e2 e2ᵀ: <1,2> = 2, ‖2‖² = 13
    e = torch.eye(3, dtype=torch.float64)
    B1, A1 = e[:, :1], e[:1]
    B2, A2 = e[:, :2] * torch.tensor([2.0, 3.0], dtype=torch.float64), e[:2]
    G = gram_matrix([B1, B2], [A1, A2])
    assert G.tolist() == [[1.0, 2.0], [2.0, 13.0]]


@pytest.mark.parametrize("k", [0, 1, 3, 6, 20])
def test_truncate_to_factors_energy_and_error(k):
    Bs, As = _factors([4, 3], seed=5)
    W = sum(B @ A for B, A in zip(Bs, As, strict=True))
    sigma = _dense_sv(W)
    B_k, A_k, energy = truncate_to_factors(svd_of_sum(Bs, As), k)
    kk = min(k, 7)
    assert B_k.shape == (M, kk) and A_k.shape == (kk, N)
    expected_energy = float((sigma[:kk] ** 2).sum() / (sigma**2).sum())
    assert energy == pytest.approx(expected_energy, abs=1e-6)
    err = float(torch.linalg.matrix_norm(W - (B_k @ A_k).double()) / torch.linalg.matrix_norm(W))
    assert err == pytest.approx((1 - energy) ** 0.5, abs=1e-5)
    # Eckart–Young: the same error as the dense best rank-k approximation
    U, S, Vh = torch.linalg.svd(W)
    best = (U[:, :kk] * S[:kk]) @ Vh[:kk]
    dense_err = float(torch.linalg.matrix_norm(W - best) / torch.linalg.matrix_norm(W))
    assert err == pytest.approx(dense_err, abs=1e-5)


def test_truncate_balanced_and_edge_cases():
    (B,), (A,) = _factors([4], seed=6)
    svd = svd_of_product(B, A)
    Bb, Ab, _ = truncate_to_factors(svd, 2, balanced=True)
    torch.testing.assert_close(Bb.T @ Bb, Ab @ Ab.T, rtol=1e-5, atol=1e-5)  # both = diag(S)
    Bu, Au, _ = truncate_to_factors(svd, 2, balanced=False)
    _assert_orthonormal(Au.T)
    torch.testing.assert_close(Bu @ Au, Bb @ Ab, rtol=1e-5, atol=1e-5)
    zero = svd_of_product(torch.zeros(5, 2), torch.zeros(2, 4))
    assert truncate_to_factors(zero, 1)[2] == 1.0
    with pytest.raises(ValueError, match="rank must be >= 0, got -1"):
        truncate_to_factors(svd, -1)


def test_results_are_invariant_to_refactorisation():
    """(B M, M⁻¹ A) is the same ΔW: spectra, Grams, norms and concat spectra must not move."""
    Bs, As = _factors([3, 4], seed=7)
    g = torch.Generator().manual_seed(8)
    Ms = [torch.randn(r, r, generator=g, dtype=torch.float64) + 3 * torch.eye(r) for r in (3, 4)]
    Bs2 = [B @ Mx for B, Mx in zip(Bs, Ms, strict=True)]
    As2 = [torch.linalg.solve(Mx, A) for A, Mx in zip(As, Ms, strict=True)]
    w = [0.7, 1.3]
    torch.testing.assert_close(svd_of_sum(Bs, As, w).S, svd_of_sum(Bs2, As2, w).S)
    torch.testing.assert_close(svd_of_concat(Bs, As).S, svd_of_concat(Bs2, As2).S)
    torch.testing.assert_close(gram_matrix(Bs, As), gram_matrix(Bs2, As2))
    assert frobenius_norm(Bs[1], As[1]) == pytest.approx(frobenius_norm(Bs2[1], As2[1]))
    k1 = truncate_to_factors(svd_of_sum(Bs, As, w), 3)
    k2 = truncate_to_factors(svd_of_sum(Bs2, As2, w), 3)
    torch.testing.assert_close(k1[0] @ k1[1], k2[0] @ k2[1])
    assert k1[2] == pytest.approx(k2[2])


def test_huge_layers_never_go_dense():
    """m = n = 200 000: a dense ΔW would need 160 GB; the factored route needs a few MB."""
    Bs, As = _factors([3, 5], seed=9, m=200_000, n=200_000)
    Bs = [B.float() for B in Bs]
    As = [A.float() for A in As]
    svd = svd_of_sum(Bs, As, [1.0, 0.5])
    assert svd.U.shape == (200_000, 8) and svd.S.shape == (8,)
    cat = svd_of_concat(Bs, As)
    assert cat.V_blocks[1].shape == (200_000, 8)
    G = gram_matrix(Bs, As)
    assert G[0, 0] == pytest.approx(frobenius_norm(Bs[0], As[0]) ** 2, rel=1e-9)
    assert svd.S.dtype == torch.float32


def test_half_precision_inputs_give_float32():
    (B,), (A,) = _factors([2], seed=10)
    svd = svd_of_product(B.half(), A.bfloat16())
    assert svd.U.dtype == svd.S.dtype == torch.float32


def test_input_errors_name_the_problem():
    Bs, As = _factors([2, 3], seed=11)
    with pytest.raises(ValueError, match="at least one pair"):
        svd_of_sum([], [])
    with pytest.raises(ValueError, match="2 B factors but 1 A"):
        gram_matrix(Bs, As[:1])
    with pytest.raises(ValueError, match="got 1 weights for 2 adapters"):
        svd_of_sum(Bs, As, [1.0])
    (B_other,), (A_other,) = _factors([2], m=M + 1)
    with pytest.raises(ValueError, match="task 1: ΔW shape"):
        svd_of_concat([Bs[0], B_other], [As[0], A_other])
    with pytest.raises(ValueError, match="need B"):
        svd_of_product(Bs[0], As[1])


@pytest.mark.parametrize("deficient", [False, True])
def test_concat_blocks_gram_route_matches_householder_and_dense(deficient):
    Bs, As = _factors([3, 3, 3], seed=12, deficient=deficient)
    gram = concat_blocks(Bs, As)
    house = concat_blocks(Bs, As, route="householder")
    ref = svd_of_concat(Bs, As)
    # rank-deficient stacks cannot take the Gram route: it falls back, same answer
    assert gram.route == ("householder" if deficient else "gram") and house.route == "householder"
    k = gram.S.numel()
    torch.testing.assert_close(gram.S, ref.S[:k], rtol=1e-6, atol=1e-6)
    for t, (B, A) in enumerate(zip(Bs, As, strict=True)):
        dw = B @ A
        for blocks in (gram, house):
            assert blocks.Z[t].shape == (k, N) and blocks.Z[t].is_contiguous()
            rel = (blocks.U.double() @ blocks.Z[t].double() - dw).norm() / dw.norm()
            assert float(rel) < 1e-6
            # KnOTS: Z_t = diag(S) V_tᵀ = Uᵀ ΔW_t
            torch.testing.assert_close(
                blocks.Z[t].double(), blocks.U.double().T @ dw, atol=1e-4, rtol=0
            )
    _assert_orthonormal(gram.U[:, : int((gram.S > 1e-6 * gram.S[0]).sum())])


def test_concat_blocks_floor_and_errors():
    Bs, As = _factors([2, 2], seed=13)
    full = concat_blocks(Bs, As)
    cut = concat_blocks(Bs, As, floor=float(full.S[1]))
    assert cut.S.numel() == 1 and cut.U.shape == (M, 1) and cut.Z[0].shape == (1, N)
    with pytest.raises(ValueError, match="floor must be"):
        concat_blocks(Bs, As, floor=-1.0)
    with pytest.raises(ValueError, match="route must be one of"):
        concat_blocks(Bs, As, route="qr")


def test_gram_factor_refuses_ill_conditioned_and_wide_factors():
    X = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    R = gram_factor(X)
    torch.testing.assert_close(R.T @ R, X.T @ X)
    bad = X.clone()
    bad[:, 3] = bad[:, 2] + 1e-5 / GRAM_MAX_COND * bad[:, 0]
    assert gram_factor(bad) is None and gram_factor(X.T) is None
