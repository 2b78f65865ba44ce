"""LoRA-LEGO: golden hand cases for clustering and both reweightings, identity, exact sum when
every unit is its own cluster, the rank bound, and its dependence on the factorisation."""

import pytest
import torch

from merging_core import Adapter, AdapterSet, LoraModule, merge
from merging_core.methods.lora_lego import kmeans, unit_pool


def _pair(B1, A1, B2, A2) -> AdapterSet:
    return AdapterSet.from_adapters(
        [
            Adapter("t0", {"w": LoraModule(B=B1, A=A1)}),
            Adapter("t1", {"w": LoraModule(B=B2, A=A2)}),
        ]
    )


@pytest.fixture
def mirrored():
    """Units (a = 3e_k, b = e_k) in t0 and (a = e_k, b = 3e_k) in t1: same features per k."""
    eye = torch.eye(2)
    return _pair(eye, 3 * eye, 3 * eye, eye)


def test_golden_clusters_and_parameter_reweighting(mirrored):
    """Cluster k holds [3e_k; e_k] and [e_k; 3e_k]: mean [2e_k; 2e_k] (max-abs 2); the members'
    mean max-abs is 3, so the unit is rescaled by 3/2 to [3e_k; 3e_k] and contributes 9 e_k e_kᵀ.
    Without reweighting it contributes 4 e_k e_kᵀ. K = r = 2, so ρ = 1. (TA would give 6·I.)"""
    on = merge(mirrored, "lora_lego")
    off = merge(mirrored, "lora_lego", param_reweighting=False)
    assert torch.allclose(on.delta("w"), 9 * torch.eye(2), atol=1e-5)
    assert torch.allclose(off.delta("w"), 4 * torch.eye(2), atol=1e-5)
    assert on.modules["w"].factors.rank == 2


def test_output_reweighting_is_sqrt_r_over_k(mirrored):
    on = merge(mirrored, "lora_lego", clusters=1, param_reweighting=False)
    off = merge(
        mirrored, "lora_lego", clusters=1, param_reweighting=False, output_reweighting=False
    )
    assert on.modules["w"].factors.rank == 1
    assert torch.allclose(on.delta("w"), 2**0.5 * off.delta("w"), atol=1e-5)


def test_every_unit_its_own_cluster_is_the_exact_sum(pair_set):
    n = sum(m.rank for m in pair_set.factors(pair_set.modules[0]))  # 8 units
    res = merge(pair_set, "lora_lego", clusters=n, output_reweighting=False)
    ta = merge(pair_set, "task_arithmetic", scaling=1.0)
    for module in pair_set.modules:
        assert torch.allclose(res.delta(module), ta.delta(module), atol=1e-4)


def test_one_adapter_alone_comes_back(single_set):
    res = merge(single_set, "lora_lego")
    for module in single_set.modules:
        assert torch.allclose(res.delta(module), single_set.adapters[0].delta(module), atol=1e-5)


def test_rank_is_at_most_k_and_mixed_ranks_pool_every_unit(tiny_set):
    res = merge(tiny_set, "lora_lego", clusters=3)
    assert all(res.modules[m].factors.rank <= 3 for m in tiny_set.modules)
    raw, features = unit_pool(tiny_set.factors(tiny_set.modules[0]))
    assert raw.shape[0] == features.shape[0] == 4 + 3 + 4
    norms = features[:, :16].norm(dim=1)  # a-part of the q_proj units (d_in = 16)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_kmeans_finds_well_separated_clusters_from_any_start():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [0.0, 0.1], [5.0, 5.1]])
    for seed in range(5):
        labels = kmeans(x.double(), 2, iterations=10, generator=torch.Generator().manual_seed(seed))
        assert len(set(labels[[0, 1, 4]].tolist())) == 1
        assert len(set(labels[[2, 3, 5]].tolist())) == 1
        assert labels[0] != labels[2]


def test_acts_on_factors_not_on_delta(tiny_set, reparam):
    a = merge(tiny_set, "lora_lego")
    b = merge(reparam(tiny_set), "lora_lego")
    module = tiny_set.modules[0]
    assert not torch.allclose(a.delta(module), b.delta(module), atol=1e-2)


def test_same_seed_gives_the_same_bytes(tiny_set):
    a = merge(tiny_set, "lora_lego", seed=0)
    b = merge(tiny_set, "lora_lego", seed=0)
    assert all(torch.equal(a.delta(m), b.delta(m)) for m in tiny_set.modules)
