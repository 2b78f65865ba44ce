"""Task Arithmetic: golden case, identity, negation, cancellation, order, rank, PEFT parity."""

import pytest
import torch
from peft.utils import merge_utils

from merging_core import merge


def test_golden_two_by_two(set_from_deltas):
    s = set_from_deltas(
        [
            {"m": torch.tensor([[1.0, 2.0], [3.0, 4.0]])},
            {"m": torch.tensor([[0.5, -1.0], [0.0, 2.0]])},
        ]
    )
    res = merge(s, "task_arithmetic", scaling=0.5, weights=[1.0, 2.0])
    # 0.5 · ([[1, 2], [3, 4]] + 2 · [[0.5, -1], [0, 2]]) = [[1, 0], [1.5, 4]]
    assert torch.equal(res.delta("m"), torch.tensor([[1.0, 0.0], [1.5, 4.0]]))


def test_single_adapter_at_weight_one_comes_back_exactly(single_set):
    res = merge(single_set, "task_arithmetic", scaling=1.0)
    for name in single_set.modules:
        assert torch.equal(res.delta(name), single_set.adapters[0].delta(name))


def test_negative_weight_negates_exactly(single_set):
    res = merge(single_set, "task_arithmetic", scaling=1.0, weights=[-1.0])
    for name in single_set.modules:
        assert torch.equal(res.delta(name), -single_set.adapters[0].delta(name))


def test_w_and_minus_w_cancel(pair_set, twin_of, negate):
    res = merge(negate(twin_of(pair_set), 1), "task_arithmetic", scaling=1.0)
    for name in pair_set.modules:
        dw = res.delta(name)
        torch.testing.assert_close(dw, torch.zeros_like(dw), atol=1e-5, rtol=0)


def test_adapter_order_does_not_matter(tiny_set):
    a = merge(tiny_set, "task_arithmetic", weights=[1.0, 2.0, 3.0])
    b = merge(tiny_set.subset([2, 1, 0]), "task_arithmetic", weights=[3.0, 2.0, 1.0])
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-6, atol=1e-6)


def test_exact_factors_of_rank_sum(tiny_set):
    res = merge(tiny_set, "task_arithmetic")
    for name in tiny_set.modules:
        assert res.modules[name].is_factored and res.modules[name].factors.rank == 11
        assert res.modules[name].rank_bound() == 11  # generic factors: no rank is lost


def test_same_delta_for_reparametrized_factors(tiny_set, reparam):
    a, b = merge(tiny_set, "task_arithmetic"), merge(reparam(tiny_set), "task_arithmetic")
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling", [0.4, 1.0, -0.7])
def test_matches_peft_task_arithmetic(tiny_set, deltas_of, scaling):
    w = [0.8, -0.5, 1.7]
    res = merge(tiny_set, "task_arithmetic", scaling=scaling, weights=w)
    for name in tiny_set.modules:
        want = merge_utils.task_arithmetic(deltas_of(tiny_set, name), torch.tensor(w))
        torch.testing.assert_close(
            res.modules[name].linear_delta(), scaling * want, rtol=1e-5, atol=1e-5
        )
