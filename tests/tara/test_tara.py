"""TARA-A/B and AdaMerging through ``merge()`` on a tiny task-data source: TA start point,
anchors, training, warm starts, cancellation, the forward's guard."""

from __future__ import annotations

import copy

import pytest
import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.banks import bank_variant_a, bank_variant_b
from merging_core.adaptive.cache import AdaptiveCache, anchors_for
from merging_core.adaptive.objective import mean_entropy
from merging_core.lowrank_forward import patched, require_unpatched
from merging_core.merge import merge
from merging_core.preference import stch

from .conftest import MODULES, make_adapters, make_context, never_step


def tara(adapters, data, variant, **kw):
    return merge(adapters, f"tara_{variant}", task_data=data, **kw)


def dense_encoder(data, deltas):
    """An independent reference: a copy of the encoder with ΔW added to its weights."""
    enc = copy.deepcopy(data.encoder)
    with torch.no_grad():
        for path, dw in deltas.items():
            enc.get_submodule(path).weight += dw
    return enc


def full_entropy(data, encoder, task):
    with torch.no_grad():
        feats = encoder(data.inputs[task])
        return float(mean_entropy(data.logits(task, feats, scale=data.entropy_scale)))


@pytest.mark.parametrize("variant", ["a", "b"])
def test_init_point_is_task_arithmetic_at_04(toy_adapters, toy_context, variant):
    res = tara(toy_adapters, toy_context, variant, should_stop=never_step, seed=5)
    assert (res.method, res.seed, res.run["steps_done"]) == (f"tara_{variant}", 5, 0)
    ta = merge(toy_adapters, "task_arithmetic", scaling=0.4)
    for path in MODULES:
        torch.testing.assert_close(res.delta(path), ta.delta(path), atol=1e-5, rtol=1e-5)
        dense = 0.4 * sum(a.delta(path) for a in toy_adapters)
        torch.testing.assert_close(res.delta(path), dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("route", ["auto", "factored", "dense"])
@pytest.mark.parametrize("build", [bank_variant_a, bank_variant_b])
def test_patched_forward_matches_dense_weights(toy_adapters, toy_context, build, route):
    banks = {p: build(toy_adapters, p) for p in MODULES}
    g = torch.Generator().manual_seed(5)
    phi = {p: torch.randn(b.size, generator=g) for p, b in banks.items()}
    updates = {p: b.merged_factors(phi[p]) for p, b in banks.items()}
    deltas = {p: B @ A for p, (B, A) in updates.items()}
    enc, x = toy_context.encoder, toy_context.inputs["task0"]
    with patched(enc, updates, route=route), torch.no_grad():
        hooked = enc(x)
    torch.testing.assert_close(hooked, dense_encoder(toy_context, deltas)(x), atol=1e-5, rtol=1e-5)
    assert enc(x).sub(hooked).abs().max() > 1e-3  # hooks really were removed
    assert "forward" not in vars(enc.fc1)


def test_updates_cannot_be_applied_twice(toy_adapters, toy_context):
    banks = {p: bank_variant_a(toy_adapters, p) for p in MODULES}
    updates = {p: (b.B, b.A) for p, b in banks.items()}
    with patched(toy_context.encoder, updates):
        with pytest.raises(RuntimeError, match="twice"):
            require_unpatched(toy_context.encoder)
        with pytest.raises(RuntimeError, match="twice"):
            with patched(toy_context.encoder, updates):
                pass
    require_unpatched(toy_context.encoder)  # released on exit


def test_routes_give_the_same_gradients(toy_adapters, toy_context):
    banks = {p: bank_variant_b(toy_adapters, p) for p in MODULES}
    grads = []
    for route in ("factored", "dense"):
        phi = {p: torch.full((b.size,), 0.3, requires_grad=True) for p, b in banks.items()}
        updates = {p: b.merged_factors(phi[p]) for p, b in banks.items()}
        with patched(toy_context.encoder, updates, route=route):
            toy_context.encoder(toy_context.inputs["task1"]).square().sum().backward()
        grads.append(torch.cat([phi[p].grad for p in MODULES]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_variant_b_bank_reconstructs_each_task_exactly(toy_adapters):
    bank = bank_variant_b(toy_adapters, "fc1")
    for t, adapter in enumerate(toy_adapters):
        phi = (bank.owner == t).float()
        B, A = bank.merged_factors(phi)
        torch.testing.assert_close(B @ A, adapter.delta("fc1"), atol=1e-5, rtol=1e-5)
    assert bank.B.shape[1] == min(sum(a.modules["fc1"].rank for a in toy_adapters), 8)


def test_anchors_equal_each_adapters_own_entropy(toy_adapters, toy_context):
    scale = toy_context.entropy_scale
    anchors = anchors_for(None, toy_adapters, toy_context, scale=scale)
    assert anchors_for(AdaptiveCache(), toy_adapters, toy_context, scale=scale) == anchors
    for i, adapter in enumerate(toy_adapters):
        enc = dense_encoder(toy_context, {p: adapter.delta(p) for p in MODULES})
        assert anchors[i] == pytest.approx(full_entropy(toy_context, enc, adapter.name), rel=1e-5)


@pytest.mark.parametrize("variant", ["a", "b"])
def test_short_run_lowers_the_objective(toy_adapters, toy_context, variant):
    scale = toy_context.entropy_scale
    anchors = torch.tensor(anchors_for(None, toy_adapters, toy_context, scale=scale))
    rho = torch.full((3,), 1 / 3)

    def objective(result):
        enc = dense_encoder(toy_context, result.deltas())
        H = torch.tensor([full_entropy(toy_context, enc, t) for t in toy_adapters.names])
        return float(stch(H, rho, anchors, alpha=1.0))

    start = tara(toy_adapters, toy_context, variant, should_stop=never_step)
    res = tara(toy_adapters, toy_context, variant, steps=40, lr=0.05, batch_size=24)
    assert objective(res) < objective(start) - 1e-3
    assert res.run["losses"][-1] < res.run["losses"][0]
    assert res.run["steps_done"] == 40 and not res.run["stopped"]


def test_default_steps_follow_the_official_schedule(toy_adapters, toy_context):
    res = tara(toy_adapters, toy_context, "a", batch_size=5)  # 24 inputs: ⌈24/5⌉ = 5 per epoch
    assert res.run["steps_done"] == 5 * 5 == res.diagnostics["steps_planned"]


def test_determinism_under_a_seed(toy_adapters, toy_context):
    kw = dict(steps=8, lr=0.02, batch_size=5)
    a = tara(toy_adapters, toy_context, "b", seed=11, **kw)
    b = tara(toy_adapters, toy_context, "b", seed=11, **kw)
    c = tara(toy_adapters, toy_context, "b", seed=12, **kw)
    for path in MODULES:
        torch.testing.assert_close(a.state[path], b.state[path], rtol=0, atol=0)
    assert a.run["losses"] == b.run["losses"]
    assert any(not torch.equal(a.state[p], c.state[p]) for p in MODULES)


def test_warm_start_continues_from_previous_state(toy_adapters, toy_context):
    first = tara(toy_adapters, toy_context, "a", steps=10, lr=0.05)
    again = tara(toy_adapters, toy_context, "a", should_stop=never_step, warm_start=first)
    for path in MODULES:
        torch.testing.assert_close(again.state[path], first.state[path])
        torch.testing.assert_close(again.delta(path), first.delta(path))
    assert again.run["warm_start"] is not None and first.run["warm_start"] is None
    with pytest.raises(ValueError, match="tara_a"):
        tara(toy_adapters, toy_context, "b", warm_start=first)
    with pytest.raises(ValueError, match="warm-start"):
        tara(toy_adapters, toy_context, "b", should_stop=never_step, warm_start=first.state)


def test_cancellation_and_progress(toy_adapters, toy_context):
    seen = []
    calls = iter(range(100))
    res = tara(
        toy_adapters, toy_context, "a", steps=20,
        progress=lambda f, m: seen.append((f, m)), should_stop=lambda: next(calls) >= 3,
    )  # fmt: skip
    assert res.run["stopped"] and res.run["steps_done"] == 3 and len(res.run["losses"]) == 3
    assert [f for f, _ in seen] == pytest.approx([1 / 20, 2 / 20, 3 / 20])
    assert "steps/s" in seen[-1][1] and "left" in seen[-1][1]


def test_variant_b_is_factorisation_invariant(toy_adapters, toy_context):
    g = torch.Generator().manual_seed(9)
    reparam = []
    for adapter in toy_adapters:
        mods = {}
        for path, m in adapter.modules.items():
            M = torch.randn(m.rank, m.rank, generator=g) + 2 * torch.eye(m.rank)
            mods[path] = m.with_factors(m.B @ M, torch.linalg.solve(M, m.A))
        reparam.append(type(adapter)(name=adapter.name, modules=mods))
    other = AdapterSet.from_adapters(reparam)
    kw = dict(steps=6, lr=0.05, seed=2)
    a, b = tara(toy_adapters, toy_context, "b", **kw), tara(other, toy_context, "b", **kw)
    for path in MODULES:
        torch.testing.assert_close(a.delta(path), b.delta(path), atol=1e-4, rtol=1e-4)


def test_registered_methods_through_merge(toy_adapters, toy_context):
    with pytest.raises(ValueError, match="task_data"):
        merge(toy_adapters, "tara_b")
    res = merge(toy_adapters, "tara_b", task_data=toy_context, steps=3, rho=[1, 1, 2], seed=4)
    assert res.method == "tara_b" and res.diagnostics["rho"] == pytest.approx([0.25, 0.25, 0.5])
    assert all(m.is_factored for m in res.modules.values())
    assert res.run["task_data"] == {"name": "toy", "fingerprint": toy_context.fingerprint()}
    with pytest.raises(ValueError, match="alpha"):
        merge(toy_adapters, "tara_a", task_data=toy_context, alpha=0.0)


def test_adamerging_original_clamps_and_tara_repo_starts_at_ta(toy_adapters, toy_context):
    start = merge(toy_adapters, "adamerging_layer", task_data=toy_context, variant="tara_repo",
                  should_stop=never_step)  # fmt: skip
    ta = merge(toy_adapters, "task_arithmetic", scaling=0.4)
    for path in MODULES:
        torch.testing.assert_close(start.delta(path), ta.delta(path), atol=1e-5, rtol=1e-5)
    res = merge(toy_adapters, "adamerging_layer", task_data=toy_context, steps=30, lr=0.2)
    lam = torch.tensor(res.diagnostics["lambda"])
    assert lam.shape == (2, 3) and lam.min() >= 0 and lam.max() <= 1
    assert res.run["losses"][-1] < res.run["losses"][0]
    task = merge(toy_adapters, "adamerging_task", task_data=toy_context, should_stop=never_step)
    expected = 0.3 * sum(a.delta("fc2") for a in toy_adapters)
    torch.testing.assert_close(task.delta("fc2"), expected, atol=1e-5, rtol=1e-5)


def test_adamerging_registered(toy_adapters, toy_context):
    res = merge(toy_adapters, "adamerging_task", task_data=toy_context, steps=2)
    assert res.method == "adamerging_task" and len(res.diagnostics["lambda"]) == 3


def test_unknown_task_name_is_a_key_error():
    adapters = make_adapters(num_tasks=3)
    data = make_context(num_tasks=2)
    with pytest.raises(KeyError, match="task2"):
        tara(adapters, data, "b", should_stop=never_step)


def test_adamerging_warm_start(toy_adapters, toy_context):
    kw = dict(task_data=toy_context, variant="tara_repo")
    first = merge(toy_adapters, "adamerging_layer", steps=4, lr=0.1, **kw)
    again = merge(toy_adapters, "adamerging_layer", should_stop=never_step, warm_start=first, **kw)
    torch.testing.assert_close(again.state["lambda"], first.state["lambda"])
    other = tara(toy_adapters, toy_context, "a", should_stop=never_step)
    with pytest.raises(ValueError, match="lambda"):
        merge(toy_adapters, "adamerging_layer", should_stop=never_step, warm_start=other.state,
              **kw)  # fmt: skip


@pytest.mark.parametrize("method", ["tara_b", "adamerging_layer"])
def test_bfloat16_autocast_stays_close_to_float32(toy_adapters, toy_context, method):
    kw = dict(task_data=toy_context, steps=10, lr=0.05, seed=1)
    f32 = merge(toy_adapters, method, precision="float32", **kw)
    bf16 = merge(toy_adapters, method, **kw)  # the default
    assert bf16.params["precision"] == "bfloat16"
    for key in f32.state:
        torch.testing.assert_close(bf16.state[key], f32.state[key], atol=2e-2, rtol=0)
    assert any(not torch.equal(bf16.state[k], f32.state[k]) for k in f32.state)  # it did run bf16
    with pytest.raises(ValueError, match="precision"):
        merge(toy_adapters, method, precision="float16", **kw)
