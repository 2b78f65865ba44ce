"""Smooth Tchebycheff limits, simplex handling, Dirichlet sampling, Pareto fronts."""

from __future__ import annotations

import math

import pytest
import torch

from merging_core.preference import (
    check_simplex,
    linear,
    normalise_preference,
    pareto_front,
    sample_preferences,
    scalarise,
    stch,
    stch_weights,
)

H = torch.tensor([1.2, 0.7, 2.0], dtype=torch.float64)
Z = torch.tensor([1.0, 0.9, 1.1], dtype=torch.float64)
RHO = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def test_stch_golden_value():
    terms = [0.5 * 0.2, 0.3 * -0.2, 0.2 * 0.9]
    expected = 0.5 * math.log(sum(math.exp(t / 0.5) for t in terms))
    assert float(stch(H, RHO, Z, alpha=0.5)) == pytest.approx(expected, rel=1e-12)


def test_small_alpha_tends_to_max_term():
    max_term = float((RHO * (H - Z)).max())
    for alpha, tol in [(1e-2, 2e-2), (1e-4, 2e-4)]:
        assert float(stch(H, RHO, Z, alpha=alpha)) == pytest.approx(max_term, abs=tol)


def test_large_alpha_tends_to_linear_form():
    n = len(H)
    for alpha in (1e3, 1e5):
        shifted = float(stch(H, RHO, Z, alpha=alpha)) - alpha * math.log(n)
        assert shifted == pytest.approx(float(linear(H, RHO, Z)) / n, abs=10.0 / alpha)


def test_stch_is_stable_for_huge_gaps():
    value = stch(torch.tensor([1e4, 0.0]), torch.tensor([0.5, 0.5]), torch.zeros(2), alpha=1e-3)
    assert torch.isfinite(value) and float(value) == pytest.approx(5e3, rel=1e-6)


def test_abs_variant_and_gradient_weights():
    assert float(scalarise(H, RHO, Z, kind="stch_abs", alpha=1.0)) == pytest.approx(
        float(stch((H - Z).abs() + Z, RHO, Z, alpha=1.0))
    )
    h = H.clone().requires_grad_(True)
    stch(h, RHO, Z, alpha=0.7).backward()
    w = stch_weights(H, RHO, Z, alpha=0.7)
    torch.testing.assert_close(h.grad, w * RHO)


def test_scalarise_rejects_unknown_kind_and_bad_alpha():
    with pytest.raises(ValueError, match="scalarisation"):
        scalarise(H, RHO, Z, kind="max", alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        stch(H, RHO, Z, alpha=0.0)


def test_simplex_checks_and_normalisation():
    assert normalise_preference(None, count=4) == (0.25,) * 4
    assert normalise_preference([2, 6], count=2) == (0.25, 0.75)
    check_simplex([0.25, 0.75], count=2)
    with pytest.raises(ValueError, match="rho\\[1\\]"):
        normalise_preference([1.0, -1.0], count=2)
    with pytest.raises(ValueError, match="2 entries"):
        normalise_preference([1.0], count=2)
    with pytest.raises(ValueError, match="positive sum"):
        normalise_preference([0.0, 0.0], count=2)
    with pytest.raises(ValueError, match="sum to 1"):
        check_simplex([0.5, 0.6], count=2)


def test_dirichlet_samples_are_reproducible_simplex_points():
    a = sample_preferences(200, num_tasks=4, generator=torch.Generator().manual_seed(3))
    b = sample_preferences(200, num_tasks=4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(dim=1), torch.ones(200, dtype=torch.float64))
    assert a.mean(dim=0).sub(0.25).abs().max() < 0.05  # symmetric Dirichlet mean 1/N
    sharp = sample_preferences(200, num_tasks=4, concentration=20, generator=torch.Generator())
    assert sharp.std() < a.std()


def test_pareto_front_golden():
    pts = [(1, 1), (2, 0), (0, 2), (0.5, 0.5), (1, 1), (2, -1)]
    assert pareto_front(pts) == [0, 1, 2, 4]


def test_pareto_front_has_no_dominated_point_on_random_clouds():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(60, 2, generator=g).tolist()
    front = pareto_front(pts)
    for i in front:
        assert not any(all(q[k] >= pts[i][k] for k in range(2)) and q != pts[i] for q in pts)
    for j in set(range(60)) - set(front):
        assert any(all(pts[i][k] >= pts[j][k] for k in range(2)) for i in front)
