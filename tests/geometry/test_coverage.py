"""TARA's coverage stacks: dense vec-stack parity, hand cases, invariance where it must hold."""

from __future__ import annotations

import pytest
import torch
from geometry_helpers import dense_erank, random_factors, refactor

from merging_core.geometry import COVERAGE_KEYS, coverage_stacks

DW_KEYS = ("erank_task_sum", "erank_ta", "ta_coverage", "erank_dw_stack")
FACTOR_KEYS = tuple(k for k in COVERAGE_KEYS if k not in DW_KEYS)


def _rank1_rows(B: torch.Tensor, A: torch.Tensor, *, normalise: bool = False) -> torch.Tensor:
    """Rows ``vec(b_k a_kᵀ)`` ``(r, m·n)`` formed densely (the definition, for small sizes)."""
    rows = []
    for k in range(B.shape[1]):
        x = torch.outer(B[:, k], A[k]).flatten()
        if normalise:
            if float(x.norm()) == 0.0:
                continue
            x = x / x.norm()
        rows.append(x)
    return torch.stack(rows) if rows else torch.zeros(0, B.shape[0] * A.shape[1], dtype=B.dtype)


def dense_coverage(Bs, As) -> dict[str, float]:
    """Every coverage key from explicit ``m·n``-long vectors and dense SVDs."""
    dws = [B @ A for B, A in zip(Bs, As, strict=True)]
    task_sum = sum(dense_erank(dw) for dw in dws)
    ta = dense_erank(sum(dws))
    r1 = [_rank1_rows(B, A) for B, A in zip(Bs, As, strict=True)]
    n1 = [_rank1_rows(B, A, normalise=True) for B, A in zip(Bs, As, strict=True)]
    r1_sum, n1_sum = sum(dense_erank(x) for x in r1), sum(dense_erank(x) for x in n1)
    r1_stack, n1_stack = dense_erank(torch.cat(r1)), dense_erank(torch.cat(n1))
    return {
        "erank_task_sum": task_sum,
        "erank_ta": ta,
        "ta_coverage": ta / task_sum,
        "erank_dw_stack": dense_erank(torch.stack([dw.flatten() for dw in dws])),
        "erank_rank1_task_sum": r1_sum,
        "erank_rank1_stack": r1_stack,
        "coverage_ratio": r1_stack / r1_sum,
        "erank_rank1_task_sum_normalised": n1_sum,
        "erank_rank1_stack_normalised": n1_stack,
        "coverage_ratio_normalised": n1_stack / n1_sum,
    }


@pytest.mark.parametrize("ranks", [[3, 3, 3], [2, 4], [1, 1, 1, 1]])
def test_matches_dense_vec_stacks(ranks):
    Bs, As = random_factors(sum(ranks), 12, 9, ranks)
    ours, ref = coverage_stacks(Bs, As), dense_coverage(Bs, As)
    assert set(ours) == set(COVERAGE_KEYS)
    for key in COVERAGE_KEYS:
        assert ours[key] == pytest.approx(ref[key], rel=1e-7), key


def test_dw_space_keys_are_refactoring_invariant(small_factors):
    Bs, As = small_factors
    before, after = coverage_stacks(Bs, As), coverage_stacks(*refactor(Bs, As, seed=5))
    for key in DW_KEYS:
        assert after[key] == pytest.approx(before[key], rel=1e-8), key


def test_rank1_stack_depends_on_the_factorisation_as_defined(small_factors):
    Bs, As = small_factors
    B2, A2 = refactor(Bs, As, seed=5)
    before, after = coverage_stacks(Bs, As), coverage_stacks(B2, A2)
    assert after["erank_rank1_stack"] != pytest.approx(before["erank_rank1_stack"], rel=1e-3)
    # ... and the new value is the definition applied to the new factors
    assert after["erank_rank1_stack"] == pytest.approx(
        dense_coverage(B2, A2)["erank_rank1_stack"], rel=1e-7
    )


def test_rank1_stack_is_invariant_under_scaled_permutations(small_factors):
    Bs, As = small_factors
    perm, scale = torch.tensor([2, 0, 1]), torch.tensor([0.5, 3.0, -2.0], dtype=torch.float64)
    B2 = [B[:, perm] * scale for B in Bs]  # B P D
    A2 = [A[perm] / scale[:, None] for A in As]  # D⁻¹ Pᵀ A
    before, after = coverage_stacks(Bs, As), coverage_stacks(B2, A2)
    for key in COVERAGE_KEYS:
        assert after[key] == pytest.approx(before[key], rel=1e-8), key


def _orthonormal_tasks(T: int, r: int, m: int = 10, n: int = 9):
    """Task t uses basis vectors e_{t r + j} on both sides: all rank-1 terms orthonormal."""
    Bs, As = [], []
    for t in range(T):
        B = torch.zeros(m, r, dtype=torch.float64)
        A = torch.zeros(r, n, dtype=torch.float64)
        for j in range(r):
            B[t * r + j, j] = 1.0
            A[j, t * r + j] = 1.0
        Bs.append(B)
        As.append(A)
    return Bs, As


def test_hand_case_orthonormal_directions_keep_full_coverage():
    out = coverage_stacks(*_orthonormal_tasks(T=2, r=2))
    assert out["erank_rank1_stack"] == pytest.approx(4.0)
    assert out["erank_rank1_task_sum"] == pytest.approx(4.0)
    assert out["coverage_ratio"] == pytest.approx(1.0)
    assert out["erank_ta"] == pytest.approx(4.0)
    assert out["erank_dw_stack"] == pytest.approx(2.0)  # two orthogonal ΔW of equal norm


def test_hand_case_duplicated_adapters_halve_coverage():
    Bs, As = random_factors(7, 11, 8, [3])
    out = coverage_stacks(Bs * 2, As * 2)
    single = coverage_stacks(Bs, As)
    assert out["erank_rank1_stack"] == pytest.approx(single["erank_rank1_stack"], rel=1e-8)
    assert out["coverage_ratio"] == pytest.approx(0.5, rel=1e-8)
    assert out["erank_dw_stack"] == pytest.approx(1.0)
    assert out["erank_ta"] == pytest.approx(single["erank_ta"], rel=1e-8)
    assert out["ta_coverage"] == pytest.approx(0.5, rel=1e-8)


def test_zero_adapters_give_zeros_not_nan():
    Bs = [torch.zeros(6, 2, dtype=torch.float64)] * 2
    As = [torch.zeros(2, 5, dtype=torch.float64)] * 2
    out = coverage_stacks(Bs, As)
    assert all(v == 0.0 for v in out.values()), out


def test_one_zero_task_among_others_is_defined(small_factors):
    Bs, As = small_factors
    Bs = [torch.zeros_like(Bs[0])] + Bs[1:]
    out = coverage_stacks(Bs, As)
    ref = dense_coverage(Bs, As)
    for key in COVERAGE_KEYS:
        assert out[key] == pytest.approx(ref[key], rel=1e-7), key


def test_float32_factors_work_and_errors_name_the_problem():
    Bs, As = random_factors(2, 10, 7, [2, 2], dtype=torch.float32)
    assert coverage_stacks(Bs, As)["erank_ta"] > 1.0
    with pytest.raises(ValueError, match="one B and one A"):
        coverage_stacks(Bs, As[:1])
    with pytest.raises(ValueError, match="task 1"):
        coverage_stacks([Bs[0], Bs[1][:5]], As)
