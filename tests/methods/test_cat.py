"""CAT: exact stacked factors, equals TA in ΔW, PEFT's ``cat`` parity, layout of the weights."""

import pytest
import torch
from torch import nn

from merging_core import Adapter, AdapterSet, LoraModule, merge
from merging_core.methods.cat import concatenate_factors


def test_single_adapter_at_weight_one_comes_back_exactly(single_set):
    res = merge(single_set, "cat")
    for name in single_set.modules:
        mod = single_set.factors(name)[0]
        assert torch.equal(res.modules[name].factors.B, mod.B)
        assert torch.equal(res.modules[name].factors.A, mod.A)
        assert torch.equal(res.delta(name), single_set.adapters[0].delta(name))


@pytest.mark.parametrize("weight_on", ["A", "B"])
def test_equals_task_arithmetic_in_delta(tiny_set, weight_on):
    w = [0.5, -1.0, 2.0]
    a = merge(tiny_set, "cat", weights=w, weight_on=weight_on)
    b = merge(tiny_set, "task_arithmetic", weights=w, scaling=1.0)
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-6, atol=1e-6)


def test_weight_sits_on_the_chosen_factor(pair_set):
    name = pair_set.modules[0]
    m0, m1 = pair_set.factors(name)
    on_a = merge(pair_set, "cat", weights=[2.0, -3.0], weight_on="A").modules[name].factors
    on_b = merge(pair_set, "cat", weights=[2.0, -3.0], weight_on="B").modules[name].factors
    assert torch.equal(on_a.B, torch.cat([m0.B, m1.B], 1))
    assert torch.equal(on_a.A, torch.cat([2.0 * m0.A, -3.0 * m1.A], 0))
    assert torch.equal(on_b.B, torch.cat([2.0 * m0.B, -3.0 * m1.B], 1))
    assert torch.equal(on_b.A, torch.cat([m0.A, m1.A], 0))


def test_rank_is_the_sum_of_ranks(tiny_set):
    res = merge(tiny_set, "cat")
    for name in tiny_set.modules:
        assert res.modules[name].factors.rank == 4 + 3 + 4
        assert res.modules[name].rank_bound() == 11


def test_w_and_minus_w_cancel(pair_set):
    mod = pair_set.factors(pair_set.modules[0])[0]
    B, A = concatenate_factors([mod.B, mod.B], [mod.A, mod.A], [1.0, -1.0])  # (16, 8), (8, 16)
    torch.testing.assert_close(B @ A, torch.zeros(16, 16), atol=1e-5, rtol=0)


def test_adapter_order_does_not_matter(pair_set):
    a = merge(pair_set, "cat", weights=[0.3, 0.9])
    b = merge(pair_set.subset([1, 0]), "cat", weights=[0.9, 0.3])
    for name in pair_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-6, atol=1e-6)


def test_same_delta_for_reparametrized_factors(tiny_set, reparam):
    a, b = merge(tiny_set, "cat"), merge(reparam(tiny_set), "cat")
    for name in tiny_set.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=1e-4, atol=1e-4)


def test_rejects_unknown_weight_side(pair_set):
    with pytest.raises(ValueError, match="weight_on must be one of"):
        concatenate_factors([torch.ones(2, 1)], [torch.ones(1, 2)], [1.0], weight_on="C")


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(16, 12)

    def forward(self, x):
        return self.q(x)


@pytest.mark.slow  # importing peft's model classes pulls in transformers
def test_matches_peft_add_weighted_adapter_cat():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(_Tiny(), LoraConfig(r=4, lora_alpha=8, target_modules=["q"]))
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=6, target_modules=["q"]))
    layer = model.base_model.model.q
    gen = torch.Generator().manual_seed(1)
    adapters = []
    for name in ("default", "b"):
        with torch.no_grad():
            layer.lora_A[name].weight.copy_(
                torch.randn(layer.lora_A[name].weight.shape, generator=gen)
            )
            layer.lora_B[name].weight.copy_(
                torch.randn(layer.lora_B[name].weight.shape, generator=gen)
            )
        B = layer.lora_B[name].weight.detach() * layer.scaling[name]  # scale folded into B
        adapters.append(Adapter(name, {"q": LoraModule(B=B, A=layer.lora_A[name].weight.detach())}))
    model.add_weighted_adapter(["default", "b"], [0.7, -0.3], "merged", combination_type="cat")
    want = layer.get_delta_weight("merged").detach()
    got = merge(AdapterSet.from_adapters(adapters), "cat", weights=[0.7, -0.3]).delta("q")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
