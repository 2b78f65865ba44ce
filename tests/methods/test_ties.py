"""TIES: golden case, identities, exact kept counts, PEFT parity, dense global-trim reference."""

import pytest
import torch
from peft.utils import merge_utils

from merging_core import merge
from merging_core.methods.ties import ties


def _official_ties(per_task: list[list[torch.Tensor]], *, density, scaling, weights=None):
    """Dense reference from the paper's formulas, trimmed globally over each task's modules.

    ``per_task[t][i]`` is ΔW of module i in task t. Each task is flattened into one vector
    ``τ_t``; keep its ``int(density·d)`` largest magnitudes (the notebook's ``kthvalue`` keeps one
    more); ``γ = sign(Σ_t τ̂_t)`` with zeros set to ``sign(Σ γ)``; mean over agreeing non-zeros.
    """
    shapes = [dw.shape for dw in per_task[0]]
    taus = torch.stack([torch.cat([dw.reshape(-1) for dw in task]) for task in per_task])
    d = taus.shape[1]
    k = int(density * d)
    kth = taus.abs().kthvalue(d - k + 1, dim=1, keepdim=True).values  # k-th largest
    trimmed = taus * (taus.abs() >= kth)
    gamma = trimmed.sum(0).sign()
    gamma[gamma == 0] = gamma.sum().sign()
    agree = (trimmed.sign() == gamma) & (trimmed != 0)
    w = torch.ones(len(per_task)) if weights is None else torch.tensor(weights)
    merged = (trimmed * w[:, None] * agree).sum(0) / agree.sum(0).clamp(min=1)
    return [
        p.reshape(s)
        for p, s in zip((scaling * merged).split([s.numel() for s in shapes]), shapes, strict=True)
    ]


def test_golden_two_by_two(set_from_deltas):
    # density 0.5 keeps 2 of 4 per task: τ1 -> [[3, 0], [0, 2]], τ2 -> [[-4, -2], [0, 0]]
    # elected signs [[-, -], [tie, +]]: the 3 of task 1 loses to the -4 of task 2
    s = set_from_deltas(
        [
            {"m": torch.tensor([[3.0, -1.0], [0.5, 2.0]])},
            {"m": torch.tensor([[-4.0, -2.0], [1.0, 0.25]])},
        ]
    )
    res = merge(s, "ties", density=0.5, threshold="per_tensor", scaling=0.5)
    assert torch.equal(res.delta("m"), torch.tensor([[-2.0, -1.0], [0.0, 1.0]]))


@pytest.mark.filterwarnings("ignore:The density 1:UserWarning")
def test_golden_tied_sign_count_follows_peft_for_frequency(set_from_deltas):
    # column 0: two positive and two negative entries (count tie, mass -4); elsewhere all negative
    rows = [[1.0, -1.0, -1.0, -1.0], [2.0, -2.0, -2.0, -2.0], [-3.0, -1.0, -1.0, -1.0]]
    rows.append([-4.0, -1.0, -1.0, -1.0])
    s = set_from_deltas([{"m": torch.tensor([r])} for r in rows])
    freq = merge(s, "ties", density=1.0, sign_method="frequency", scaling=1.0).delta("m")
    mass = merge(s, "ties", density=1.0, sign_method="total", scaling=1.0).delta("m")
    assert torch.equal(freq, torch.tensor([[1.5, -1.25, -1.25, -1.25]]))  # tie -> + (PEFT)
    assert torch.equal(mass, torch.tensor([[-3.5, -1.25, -1.25, -1.25]]))
    dws = [torch.tensor([r]) for r in rows]
    assert torch.equal(freq, merge_utils.ties(dws, torch.ones(4), 1.0, "frequency"))


@pytest.mark.parametrize("threshold", ["global", "per_tensor"])
def test_single_adapter_at_density_one_comes_back_exactly(single_set, threshold):
    res = merge(single_set, "ties", density=1.0, threshold=threshold, scaling=1.0)
    for name in single_set.modules:
        assert torch.equal(res.delta(name), single_set.adapters[0].delta(name))
        assert not res.modules[name].is_factored


@pytest.mark.parametrize("threshold", ["global", "per_tensor"])
def test_w_and_minus_w_cancel(pair_set, twin_of, negate, threshold):
    s = negate(twin_of(pair_set), 1)
    res = merge(s, "ties", density=0.3, threshold=threshold)
    for name in s.modules:
        assert torch.count_nonzero(res.delta(name)) == 0


def test_weights_one_and_minus_one_on_identical_adapters_cancel(pair_set, twin_of):
    res = merge(twin_of(pair_set), "ties", density=0.5, weights=[1.0, -1.0])
    for name in pair_set.modules:
        assert torch.count_nonzero(res.delta(name)) == 0


@pytest.mark.parametrize("threshold", ["global", "per_tensor"])
def test_adapter_order_does_not_matter(tiny_set, threshold):
    a = merge(tiny_set, "ties", density=0.3, threshold=threshold, weights=[1.0, 0.5, 2.0])
    b = merge(tiny_set.subset([2, 0, 1]), "ties", density=0.3, threshold=threshold,
              weights=[2.0, 1.0, 0.5])  # fmt: skip
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name))


@pytest.mark.parametrize("density", [0.1, 0.25, 0.6])
def test_density_gives_the_exact_nonzero_count(single_set, density):
    numels = [single_set.adapters[0].delta(n).numel() for n in single_set.modules]
    per = merge(single_set, "ties", density=density, threshold="per_tensor")
    for name, numel in zip(single_set.modules, numels, strict=True):
        assert int(torch.count_nonzero(per.delta(name))) == int(density * numel)
    glob = merge(single_set, "ties", density=density, threshold="global")
    total = sum(int(torch.count_nonzero(glob.delta(n))) for n in single_set.modules)
    assert total == int(density * sum(numels))


@pytest.mark.filterwarnings("ignore:The density 1.0:UserWarning")
@pytest.mark.parametrize("sign_method", ["total", "frequency"])
@pytest.mark.parametrize("density", [0.2, 0.7, 1.0])
@pytest.mark.parametrize("num_adapters", [3, 4])  # even T: tied sign counts are common
def test_per_tensor_matches_peft_ties(make_set, deltas_of, sign_method, density, num_adapters):
    tiny_set = make_set(num_adapters)
    weights = [0.8, -0.5, 1.7, 1.1][:num_adapters]
    res = merge(tiny_set, "ties", density=density, threshold="per_tensor",
                sign_method=sign_method, weights=weights, scaling=1.3)  # fmt: skip
    for name in tiny_set.modules:
        want = merge_utils.ties(
            deltas_of(tiny_set, name), torch.tensor(weights), density, sign_method
        )
        got = res.modules[name].linear_delta()
        torch.testing.assert_close(got, 1.3 * want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("density", [0.05, 0.2, 0.5])
def test_global_matches_dense_paper_reference(tiny_set, deltas_of, density):
    per_task = [[deltas_of(tiny_set, n)[t] for n in tiny_set.modules] for t in range(3)]
    want = _official_ties(per_task, density=density, scaling=0.9, weights=[1.0, 2.0, 0.5])
    res = merge(tiny_set, "ties", density=density, scaling=0.9, weights=[1.0, 2.0, 0.5])
    for name, w in zip(tiny_set.modules, want, strict=True):
        torch.testing.assert_close(res.modules[name].linear_delta(), w, rtol=1e-6, atol=1e-6)


def test_global_threshold_differs_from_per_tensor(tiny_set):
    g = merge(tiny_set, "ties", density=0.2, threshold="global")
    p = merge(tiny_set, "ties", density=0.2, threshold="per_tensor")
    assert any(not torch.equal(g.delta(n), p.delta(n)) for n in tiny_set.modules)
    assert len(g.diagnostics["trim_thresholds"]) == 3 and p.diagnostics["trim_thresholds"] is None


def test_same_answer_for_reparametrized_factors(tiny_set, reparam):
    a = merge(tiny_set, "ties", density=0.3)
    b = merge(reparam(tiny_set), "ties", density=0.3)
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-4, atol=1e-4)


def test_transposed_module_keeps_base_layout(tiny_set):
    res = merge(tiny_set, "ties")
    assert res.delta("blocks.1.attn.c_attn").shape == (12, 16)
    assert res.modules["blocks.1.attn.c_attn"].linear_delta().shape == (16, 12)


def test_progress_reaches_one(tiny_set):
    seen = []
    ties(tiny_set, progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)
    assert seen == sorted(seen) and len(seen) > 3  # threshold passes report too


def test_bad_options_name_the_value(tiny_set):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0"):
        ties(tiny_set, density=0)
    with pytest.raises(ValueError, match="threshold must be one of"):
        ties(tiny_set, threshold="layer")
    with pytest.raises(ValueError, match="weights has 2 entries but there are 3 adapters"):
        ties(tiny_set, weights=[1.0, 1.0])
