"""The element-wise steps (``merging_core.elementwise.steps``): trim, global threshold, elect,
disjoint mean, drop-and-rescale."""

import math

import pytest
import torch
from peft.utils import merge_utils

from merging_core.elementwise.steps import (
    disjoint_mean,
    drop_and_rescale,
    elect_sign,
    magnitude_threshold,
    trim_by_magnitude,
)


def _spread(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    """Signed values over ~12 orders of magnitude (exercises both radix passes)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        base = torch.randn(shape, generator=gen)
        exponent = torch.randint(-6, 6, shape, generator=gen).float()
        out.append(base * 10.0**exponent)
    return out


class TestTrimByMagnitude:
    def test_golden_per_tensor(self):
        x = torch.tensor([[3.0, -1.0], [2.0, -4.0]])
        got = trim_by_magnitude(x, density=0.5)
        assert torch.equal(got, torch.tensor([[3.0, 0.0], [0.0, -4.0]]))

    @pytest.mark.parametrize("density", [0.01, 0.2, 0.37, 0.5, 0.99, 1.0])
    def test_per_tensor_keeps_exact_count_of_largest(self, density):
        (x,) = _spread(0, (24, 17))
        got = trim_by_magnitude(x, density=density)
        k = int(density * x.numel())
        assert int(torch.count_nonzero(got)) == k
        kept = got[got != 0].abs()
        dropped = x[got == 0].abs()
        if k and dropped.numel():
            assert kept.min() >= dropped.max()
        assert torch.equal(got[got != 0], x[got != 0])  # survivors untouched

    @pytest.mark.parametrize("density", [0.1, 0.5, 1.0])
    def test_matches_peft_prune(self, density):
        (x,) = _spread(1, (9, 11))
        want = merge_utils.prune(x, density, method="magnitude") if density < 1 else x
        assert torch.equal(trim_by_magnitude(x, density=density), want)

    def test_rejects_bad_density(self):
        with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0"):
            trim_by_magnitude(torch.ones(3), density=0)
        with pytest.raises(ValueError, match="got 1.5"):
            trim_by_magnitude(torch.ones(3), density=1.5)


class TestMagnitudeThreshold:
    @pytest.mark.parametrize("density", [0.003, 0.2, 0.5, 0.8, 1.0])
    def test_equals_kth_largest_over_all_chunks(self, density):
        chunks = _spread(2, (16, 16), (12, 16), (5,), (3, 7))
        flat = torch.cat([c.reshape(-1) for c in chunks]).abs()
        k = int(density * flat.numel())
        want = torch.topk(flat, k).values[-1].item()
        got = magnitude_threshold(lambda: iter(chunks), density=density)
        assert got == want
        assert int(sum((c.abs() >= got).sum() for c in chunks)) == k

    def test_ties_at_the_threshold_are_all_kept(self):
        chunks = [torch.tensor([1.0, 2.0, 2.0, -2.0, 5.0])]
        thr = magnitude_threshold(lambda: iter(chunks), density=0.4)  # k = 2: 5 and a 2
        assert thr == 2.0
        assert int(trim_by_magnitude(chunks[0], density=0.4, threshold=thr).count_nonzero()) == 4

    def test_nothing_kept_when_density_rounds_to_zero(self):
        thr = magnitude_threshold(lambda: iter([torch.ones(10)]), density=0.05)
        assert thr == math.inf
        assert (
            torch.count_nonzero(trim_by_magnitude(torch.ones(10), density=0.05, threshold=thr)) == 0
        )

    def test_zero_tensor_keeps_its_zeros(self):
        thr = magnitude_threshold(lambda: iter([torch.zeros(4, 4)]), density=0.3)
        assert thr == 0.0

    def test_no_entries_keep_nothing(self):
        assert magnitude_threshold(lambda: iter([torch.zeros(0, 16)]), density=0.5) == math.inf

    def test_rejects_non_finite(self):
        with pytest.raises(ValueError, match="NaN or infinite"):
            magnitude_threshold(lambda: iter([torch.tensor([1.0, math.nan])]), density=0.5)


class TestElectSign:
    STACK = torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, 1.0, 0.0, -3.0]])

    def test_total_golden(self):
        # sums [3, -1, 0, 0]; the two ties stay 0 because the elected signs sum to 0
        assert torch.equal(elect_sign(self.STACK), torch.tensor([1.0, -1.0, 0.0, 0.0]))

    def test_total_ties_take_the_majority(self):
        stack = torch.tensor([[1.0, 2.0, -1.0], [1.0, 2.0, 1.0]])  # sums [2, 4, 0]
        assert torch.equal(elect_sign(stack), torch.tensor([1.0, 1.0, 1.0]))

    def test_positive_tie_rule_is_peft_convention(self):
        assert torch.equal(
            elect_sign(self.STACK, tie="positive"), torch.tensor([1.0, -1.0, 1.0, 1.0])
        )

    def test_frequency_counts_signs_not_mass(self):
        stack = torch.tensor([[5.0, -1.0], [-1.0, -1.0], [-1.0, 9.0]])  # sign sums [-1, -1]
        assert torch.equal(elect_sign(stack, method="frequency"), torch.tensor([-1.0, -1.0]))
        assert torch.equal(elect_sign(stack, method="total"), torch.tensor([1.0, 1.0]))

    @pytest.mark.parametrize("method", ["total", "frequency"])
    def test_agreement_mask_matches_peft(self, method):
        stack = torch.stack(_spread(3, (6, 5), (6, 5), (6, 5)))
        ours = elect_sign(stack, method=method, tie="positive")
        want = merge_utils.calculate_majority_sign_mask(stack, method=method)
        assert torch.equal(stack.sign() == ours, want)

    def test_rejects_unknown_options(self):
        with pytest.raises(ValueError, match="sign method must be"):
            elect_sign(self.STACK, method="mass")
        with pytest.raises(ValueError, match="tie rule must be"):
            elect_sign(self.STACK, tie="random")


class TestDisjointMean:
    STACK = torch.tensor([[2.0, -1.0, 0.0], [4.0, 3.0, 0.0], [-6.0, 0.0, 5.0]])

    def test_golden(self):
        got = disjoint_mean(self.STACK, torch.tensor([1.0, 1.0, -1.0]))
        assert torch.equal(got, torch.tensor([3.0, 3.0, 0.0]))  # (2+4)/2, 3/1, none agree

    def test_weights_scale_values_not_counts(self):
        got = disjoint_mean(self.STACK, torch.tensor([1.0, 1.0, 1.0]), weights=[1.0, 0.5, 2.0])
        assert torch.equal(got, torch.tensor([2.0, 1.5, 10.0]))  # (2+2)/2, 1.5/1, 10/1

    def test_matches_peft_disjoint_merge(self):
        stack = torch.stack(_spread(4, (7, 3), (7, 3)))
        w = torch.tensor([0.7, -1.3])
        sign = elect_sign(stack, tie="positive")
        mask = merge_utils.calculate_majority_sign_mask(stack)
        want = merge_utils.disjoint_merge(stack * w.view(2, 1, 1), mask)
        torch.testing.assert_close(disjoint_mean(stack, sign, weights=w.tolist()), want)

    def test_rejects_wrong_weight_count(self):
        with pytest.raises(ValueError, match="got 2 weights for 3 task tensors"):
            disjoint_mean(self.STACK, torch.ones(3), weights=[1.0, 1.0])


class TestDropAndRescale:
    def test_zero_rate_is_an_exact_copy_and_draws_nothing(self):
        x = torch.randn(5, 5)
        gen = torch.Generator().manual_seed(0)
        state = gen.get_state()
        got = drop_and_rescale(x, drop_rate=0.0, generator=gen)
        assert torch.equal(got, x) and got is not x
        assert torch.equal(gen.get_state(), state)

    def test_survivors_are_rescaled_and_rate_is_right(self):
        x = torch.randn(200, 100, generator=torch.Generator().manual_seed(1))
        got = drop_and_rescale(x, drop_rate=0.7, generator=torch.Generator().manual_seed(2))
        kept = got != 0
        torch.testing.assert_close(got[kept], x[kept] / 0.3)
        dropped = 1 - kept.float().mean().item()
        assert abs(dropped - 0.7) < 5 * math.sqrt(0.7 * 0.3 / x.numel())

    def test_seeded_and_reproducible(self):
        x = torch.randn(30, 30)
        a = drop_and_rescale(x, drop_rate=0.5, generator=torch.Generator().manual_seed(3))
        b = drop_and_rescale(x, drop_rate=0.5, generator=torch.Generator().manual_seed(3))
        c = drop_and_rescale(x, drop_rate=0.5, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_same_mask_as_peft_random_pruning_under_the_same_seed(self):
        x = torch.randn(13, 9)
        ours = drop_and_rescale(x, drop_rate=0.4, generator=torch.Generator().manual_seed(11))
        torch.manual_seed(11)
        want = merge_utils.random_pruning(x, density=1 - 0.4, rescale=True)
        torch.testing.assert_close(ours, want)

    @pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
    def test_rejects_bad_rate(self, rate):
        with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\)"):
            drop_and_rescale(torch.ones(2), drop_rate=rate, generator=None)
