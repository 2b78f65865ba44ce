"""Sampled sign-conflict estimates: intervals cover the exact rate (random and adversarial
modules), calibration over many seeds, exact fallback, edge cases."""

from __future__ import annotations

import pytest
import torch
from geometry_helpers import random_factors

from merging_core.geometry import (
    ConflictEstimate,
    estimate_sign_conflicts,
    sign_conflict_rates,
)
from merging_core.geometry.sampled_conflicts import student_t_quantile, wilson

DENSITIES = (1.0, 0.2)


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny products: the default pool's wake-ups dominate on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _covers(Bs, As, *, samples=4096, confidence=0.99, seed=0, densities=DENSITIES):
    exact = sign_conflict_rates(Bs, As, densities=densities)
    est = estimate_sign_conflicts(
        Bs, As, densities=densities, samples=samples, confidence=confidence, generator=_gen(seed)
    )
    for e, r in zip(est, exact, strict=True):
        assert not e.exact and e.low <= e.rate <= e.high
        assert e.low <= r <= e.high, (r, e)
    return est, exact


def _sparse_module(seed: int):
    """ΔW nonzero on 3 % of rows and 10 % of columns only (mostly inactive entries)."""
    gen = _gen(seed)
    Bs, As = [], []
    rows = torch.rand(300, generator=gen) < 0.03
    cols = torch.rand(400, generator=gen) < 0.10
    for _ in range(3):
        Bs.append(torch.randn(300, 2, generator=gen) * rows[:, None])
        As.append(torch.randn(2, 400, generator=gen) * cols[None, :])
    return Bs, As


def _aligned_module(seed: int):
    """Low-rank-aligned tasks: one shared rank-1 direction, signs flipped for some tasks, plus
    a weak private part; conflicts come in whole row/column blocks (strong block correlation)."""
    gen = _gen(seed)
    u, v = torch.randn(300, 1, generator=gen), torch.randn(1, 400, generator=gen)
    Bs, As = [], []
    for sign in (1.0, -0.7, 1.3, -1.0):
        Bs.append(torch.cat([sign * u, 0.05 * torch.randn(300, 1, generator=gen)], dim=1))
        As.append(torch.cat([v, torch.randn(1, 400, generator=gen)], dim=0))
    return Bs, As


def _tied_module():
    """Every |ΔW_t| entry equal (±1 outer products): the trim threshold is a tie everywhere."""
    gen = _gen(5)
    Bs = [torch.randint(0, 2, (200, 1), generator=gen).float() * 2 - 1 for _ in range(3)]
    As = [torch.randint(0, 2, (1, 300), generator=gen).float() * 2 - 1 for _ in range(3)]
    return Bs, As


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_modules_are_covered(seed):
    Bs, As = random_factors(seed, 300, 400, [4, 4, 4, 4], dtype=torch.float32)
    _covers(Bs, As, seed=seed)


@pytest.mark.parametrize(
    "make", [_sparse_module, _aligned_module], ids=["sparse", "low_rank_aligned"]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_adversarial_modules_are_covered(make, seed):
    _covers(*make(seed), seed=seed)


def test_tied_magnitudes_keep_everything_like_the_exact_trim():
    est, exact = _covers(*_tied_module())
    assert exact[1] == exact[0] and est[1].rate == est[0].rate  # ties at the threshold are kept


def test_intervals_are_calibrated_over_many_seeds():
    """95% intervals on one module, 100 independent samples: coverage well above 85 %."""
    Bs, As = _aligned_module(7)
    exact = sign_conflict_rates(Bs, As, densities=DENSITIES)
    hits = [0, 0]
    for seed in range(100):
        est = estimate_sign_conflicts(
            Bs, As, densities=DENSITIES, samples=2048, generator=_gen(seed)
        )
        for i, (e, r) in enumerate(zip(est, exact, strict=True)):
            hits[i] += e.low <= r <= e.high
    assert min(hits) >= 86, hits


def test_estimate_is_unbiased_when_every_entry_is_active():
    """Mean of many raw estimates is within 4 standard errors of the exact rate."""
    Bs, As = random_factors(3, 200, 300, [3, 3, 3], dtype=torch.float32)
    exact = sign_conflict_rates(Bs, As, densities=(1.0,))[0]
    rates = torch.tensor(
        [
            estimate_sign_conflicts(Bs, As, samples=1024, generator=_gen(s))[0].rate
            for s in range(200)
        ]
    )
    se = float(rates.std() / 200**0.5)
    assert abs(float(rates.mean()) - exact) < 4 * se


def test_small_modules_are_counted_exactly():
    Bs, As = random_factors(1, 20, 15, [2, 3], dtype=torch.float32)
    est = estimate_sign_conflicts(Bs, As, densities=DENSITIES, samples=300)
    exact = sign_conflict_rates(Bs, As, densities=DENSITIES)
    assert all(e.exact and e.low == e.rate == e.high == r for e, r in zip(est, exact, strict=True))


def test_edge_cases():
    zero = [torch.zeros(100, 1)] * 2, [torch.zeros(1, 100)] * 2
    assert estimate_sign_conflicts(*zero, samples=1024)[0] == ConflictEstimate(
        0.0, 0.0, 0.0, 1024, 0
    )
    # one active entry among 10⁶: nothing active in the sample, the rate is unknown
    B = torch.zeros(1000, 1)
    B[3, 0] = 1.0
    A = torch.zeros(1, 1000)
    A[0, 7] = 1.0
    unknown = estimate_sign_conflicts([B, -B], [A, A], samples=1024, generator=_gen(0))[0]
    assert (unknown.rate, unknown.low, unknown.high, unknown.active) == (0.0, 0.0, 1.0, 0)
    Bs, As = random_factors(3, 100, 100, [2, 2], dtype=torch.float32)
    neg = estimate_sign_conflicts([Bs[0], -Bs[0]], [As[0], As[0]], samples=1024)[0]
    assert neg.rate == 1.0 and neg.high == 1.0 and 0.99 < neg.low < 1.0  # Wilson keeps a width
    for bad, match in [
        ({"densities": (0.0,)}, "density"),
        ({"samples": 0}, "samples"),
        ({"confidence": 1.0}, "confidence"),
    ]:
        with pytest.raises(ValueError, match=match):
            estimate_sign_conflicts(Bs, As, **bad)


def test_interval_helpers():
    lo, hi = wilson(50, 100, 1.96)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    assert student_t_quantile(1.959964, 1) == pytest.approx(12.706, rel=1e-3)
    assert student_t_quantile(1.959964, 2) == pytest.approx(4.303, rel=1e-3)
    assert student_t_quantile(1.959964, 10) == pytest.approx(2.228, rel=2e-3)
    assert student_t_quantile(1.959964, 100) == pytest.approx(1.984, rel=1e-3)
