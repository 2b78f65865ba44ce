"""Spectra and the scalars derived from them: golden values, dense parity, invariance."""

from __future__ import annotations

import math

import pytest
import torch
from geometry_helpers import dense_erank, random_factors, refactor

from merging_core.geometry import (
    component_energy,
    effective_rank,
    energy_curve,
    singular_values,
    spectrum_summary,
    stable_rank,
)


def _orthogonal_rank1_sum(sigmas: list[float], m: int = 7, n: int = 5):
    """``B A = Σ_k σ_k e_k e_kᵀ`` from orthogonal rank-1 directions with known σ."""
    r = len(sigmas)
    B = torch.zeros(m, r, dtype=torch.float64)
    A = torch.zeros(r, n, dtype=torch.float64)
    for k, s in enumerate(sigmas):
        B[m - 1 - k, k] = s  # columns of B: scaled, orthogonal basis vectors
        A[k, k] = 1.0
    return B, A


def test_known_sigma_gives_golden_erank():
    B, A = _orthogonal_rank1_sum([3.0, 2.0, 1.0])
    sigma = singular_values(B, A)
    assert sigma[:3].tolist() == pytest.approx([3.0, 2.0, 1.0], abs=1e-12)
    p = [0.5, 1 / 3, 1 / 6]
    golden = math.exp(-sum(x * math.log(x) for x in p))  # 2.7495...
    assert float(effective_rank(sigma)) == pytest.approx(golden, rel=1e-12)
    assert float(stable_rank(sigma)) == pytest.approx(14 / 9, rel=1e-12)
    assert energy_curve(sigma)[:3].tolist() == pytest.approx([9 / 14, 13 / 14, 1.0])
    assert component_energy(sigma)[0].item() == pytest.approx(9 / 14)


def test_equal_sigma_erank_is_the_rank_and_uses_sigma_not_squares():
    assert float(effective_rank(torch.tensor([2.0, 2.0, 2.0, 2.0]))) == pytest.approx(4.0)
    # σ = (2, 1): p = (2/3, 1/3) -> exp(H) = 1.8899; with σ² it would be 1.6494
    assert float(effective_rank(torch.tensor([2.0, 1.0]))) == pytest.approx(1.8898815748, rel=1e-9)


def test_zero_and_empty_spectra_are_defined_not_nan():
    zero = singular_values(torch.zeros(6, 2), torch.zeros(2, 4))
    for value in (effective_rank(zero), stable_rank(zero), effective_rank(torch.zeros(0))):
        assert float(value) == 0.0
    assert energy_curve(zero).tolist() == [0.0, 0.0]
    summary = spectrum_summary(zero)
    assert summary == {
        "erank": 0.0,
        "stable_rank": 0.0,
        "rank": 0,
        "sigma_max": 0.0,
        "frobenius": 0.0,
    }


def test_rank_one_update_has_erank_one():
    B, A = torch.randn(9, 1, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)
    assert float(effective_rank(singular_values(B, A))) == pytest.approx(1.0)


def test_batched_metrics_match_row_by_row():
    s = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    batched = effective_rank(s)
    rows = torch.stack([effective_rank(row) for row in s])
    assert torch.allclose(batched, rows)
    assert batched[1:].tolist() == [1.0, 0.0]


def test_singular_values_match_dense_and_are_refactoring_invariant():
    Bs, As = random_factors(1, 30, 20, [5])
    B, A = Bs[0], As[0]
    ours = singular_values(B, A)
    dense = torch.linalg.svdvals(B @ A)[:5]
    assert torch.allclose(ours, dense, rtol=1e-10, atol=1e-10)
    (B2,), (A2,) = refactor([B], [A], seed=3)
    assert torch.allclose(singular_values(B2, A2), ours, rtol=1e-9)
    assert float(effective_rank(ours)) == pytest.approx(dense_erank(B @ A), rel=1e-10)


def test_numerical_zeros_are_dropped_from_erank():
    # duplicated columns: rank 2 stored as rank 4; the two null σ are round-off, not directions
    B = torch.randn(8, 2, dtype=torch.float64).repeat(1, 2)
    A = torch.randn(4, 6, dtype=torch.float64)
    sigma = singular_values(B, A)
    assert int((sigma > 0).sum()) == 2
    assert float(effective_rank(sigma)) == pytest.approx(dense_erank(B @ A), rel=1e-9)


def test_singular_values_rejects_bad_shapes():
    with pytest.raises(ValueError, match="need B"):
        singular_values(torch.zeros(4, 2), torch.zeros(3, 5))
