"""DARE: p = 0 equals TA / TIES, seeded masks, rescaled survivors, PEFT parity, unbiasedness."""

import pytest
import torch
from peft.utils import merge_utils

from merging_core import merge
from merging_core.elementwise.streaming import mask_seeds
from merging_core.methods.dare import dare


def _close(a, b, tol=1e-5):
    for name in a.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=tol, atol=tol)


def test_linear_at_zero_rate_equals_task_arithmetic(tiny_set):
    w = [0.5, -1.0, 2.0]
    _close(
        merge(tiny_set, "dare", variant="linear", drop_rate=0.0, scaling=0.7, weights=w),
        merge(tiny_set, "task_arithmetic", scaling=0.7, weights=w),
    )


@pytest.mark.parametrize("threshold", ["global", "per_tensor"])
def test_ties_at_zero_rate_equals_ties_exactly(tiny_set, threshold):
    opts = dict(density=0.3, threshold=threshold, scaling=1.2, weights=[1.0, 0.5, 2.0])
    a = merge(tiny_set, "dare", variant="ties", drop_rate=0.0, **opts)
    b = merge(tiny_set, "ties", **opts)
    for name in tiny_set.modules:
        assert torch.equal(a.delta(name), b.delta(name))


def test_same_seed_same_result_other_seed_other_result(tiny_set):
    a = merge(tiny_set, "dare", drop_rate=0.5, seed=3)
    b = merge(tiny_set, "dare", drop_rate=0.5, seed=3)
    c = merge(tiny_set, "dare", drop_rate=0.5, seed=4)
    name = tiny_set.modules[0]
    assert torch.equal(a.delta(name), b.delta(name))
    assert not torch.equal(a.delta(name), c.delta(name))


def test_single_adapter_survivors_are_rescaled(single_set):
    res = merge(single_set, "dare", drop_rate=0.6, scaling=1.0, seed=1)
    for name in single_set.modules:
        got, full = res.delta(name), single_set.adapters[0].delta(name)
        kept = got != 0
        torch.testing.assert_close(got[kept], full[kept] / 0.4)
        assert 0.2 < kept.float().mean().item() < 0.6  # keep rate 0.4 on a few hundred entries


def test_masks_match_peft_random_pruning_under_the_same_seeds(single_set):
    res = merge(single_set, "dare", drop_rate=0.3, scaling=1.0, seed=9)
    seeds = mask_seeds(torch.Generator().manual_seed(9), len(single_set.modules), 1)
    for i, name in enumerate(single_set.modules):
        torch.manual_seed(seeds[i][0])
        dw = single_set.factors(name)[0]
        want = merge_utils.dare_linear([dw.B @ dw.A], torch.tensor([1.0]), density=1 - 0.3)
        torch.testing.assert_close(res.modules[name].linear_delta(), want)


@pytest.mark.filterwarnings("ignore:The density 1:UserWarning")
def test_zero_rate_matches_peft_dare_functions(tiny_set, deltas_of):
    w = [0.8, -0.5, 1.7]
    lin = merge(tiny_set, "dare", variant="linear", drop_rate=0.0, weights=w)
    tie = merge(tiny_set, "dare", variant="ties", drop_rate=0.0, density=1.0, weights=w)
    for name in tiny_set.modules:
        dws = deltas_of(tiny_set, name)
        want_lin = merge_utils.dare_linear(dws, torch.tensor(w), density=1.0)
        want_tie = merge_utils.dare_ties(dws, torch.tensor(w), density=1.0)
        torch.testing.assert_close(lin.modules[name].linear_delta(), want_lin)
        torch.testing.assert_close(tie.modules[name].linear_delta(), want_tie)


def test_unbiased_over_seeds(single_set):
    name = single_set.modules[0]
    runs = torch.stack(
        [merge(single_set, "dare", drop_rate=0.5, seed=s).delta(name) for s in range(300)]
    )
    full = single_set.adapters[0].delta(name)
    # each entry is full·(2·Bernoulli(1/2)): mean full, std |full|; 300 draws -> 5σ = 0.29 |full|
    assert torch.all((runs.mean(0) - full).abs() <= 0.29 * full.abs() + 1e-6)


def test_ties_variant_trims_after_dropping(single_set):
    res = merge(single_set, "dare", variant="ties", drop_rate=0.5, density=0.1, seed=2)
    total = sum(single_set.adapters[0].delta(n).numel() for n in single_set.modules)
    kept = sum(int(torch.count_nonzero(res.delta(n))) for n in single_set.modules)
    assert kept == int(0.1 * total)


def test_same_answer_for_reparametrized_factors(tiny_set, reparam):
    for variant in ("linear", "ties"):
        a = merge(tiny_set, "dare", variant=variant, drop_rate=0.5, density=0.5, seed=5)
        b = merge(reparam(tiny_set), "dare", variant=variant, drop_rate=0.5, density=0.5, seed=5)
        _close(a, b, tol=1e-4)


def test_adapter_order_does_not_matter_at_zero_rate(tiny_set):
    a = merge(tiny_set, "dare", variant="ties", drop_rate=0.0, density=0.4)
    b = merge(tiny_set.subset([1, 2, 0]), "dare", variant="ties", drop_rate=0.0, density=0.4)
    _close(a, b)


def test_bad_options_name_the_value(tiny_set):
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\), got 1.0"):
        dare(tiny_set, drop_rate=1.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="variant must be one of"):
        dare(tiny_set, variant="della")
    with pytest.raises(ValueError, match="drop_rate must be <= 0.99"):
        merge(tiny_set, "dare", drop_rate=0.995)
