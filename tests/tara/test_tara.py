"""TARA-A/B and AdaMerging on a tiny TaskContext: TA start point, anchors, training, warm starts."""

from __future__ import annotations

import copy

import pytest
import torch

from merging_core.adapters import AdapterSet
from merging_core.directional import (
    WeightedLoraHooks,
    bank_variant_a,
    bank_variant_b,
    compute_anchors,
    mean_entropy,
)
from merging_core.merge import merge
from merging_core.methods.adamerging import run_adamerging
from merging_core.methods.tara import run_tara
from merging_core.preference import stch

from .conftest import MODULES, make_adapters, make_context


def dense_encoder(context, deltas):
    """An independent reference: a copy of the encoder with ΔW added to its weights."""
    enc = copy.deepcopy(context.encoder)
    with torch.no_grad():
        for path, dw in deltas.items():
            enc.get_submodule(path).weight += dw
    return enc


def full_entropy(context, encoder, task):
    with torch.no_grad():
        return float(mean_entropy(context.logits(task, encoder(context.unlabeled[task]))))


@pytest.mark.parametrize("variant", ["a", "b"])
def test_init_point_is_task_arithmetic_at_04(toy_adapters, toy_context, variant):
    run = run_tara(toy_adapters, toy_context, variant=variant, steps=0, seed=5)
    assert (run.result.method, run.result.seed) == (f"tara_{variant}", 5)
    ta = merge(toy_adapters, "task_arithmetic", scaling=0.4)
    for path in MODULES:
        torch.testing.assert_close(run.result.delta(path), ta.delta(path), atol=1e-5, rtol=1e-5)
        dense = 0.4 * sum(a.delta(path) for a in toy_adapters)
        torch.testing.assert_close(run.result.delta(path), dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("route", ["auto", "factored", "dense"])
@pytest.mark.parametrize("build", [bank_variant_a, bank_variant_b])
def test_hooked_forward_matches_dense_weights(toy_adapters, toy_context, build, route):
    banks = {p: build(toy_adapters, p) for p in MODULES}
    g = torch.Generator().manual_seed(5)
    phi = {p: torch.randn(b.size, generator=g) for p, b in banks.items()}
    deltas = {
        p: b.merged_factors(phi[p])[0] @ b.merged_factors(phi[p])[1] for p, b in banks.items()
    }
    x = toy_context.unlabeled[0]
    with WeightedLoraHooks(toy_context.encoder, banks, route=route) as hooks, torch.no_grad():
        hooks.set(phi)
        hooked = toy_context.encoder(x)
    torch.testing.assert_close(hooked, dense_encoder(toy_context, deltas)(x), atol=1e-5, rtol=1e-5)
    assert toy_context.encoder(x).sub(hooked).abs().max() > 1e-3  # hooks really were removed
    assert "forward" not in vars(toy_context.encoder.fc1)


def test_routes_give_the_same_gradients(toy_adapters, toy_context):
    banks = {p: bank_variant_b(toy_adapters, p) for p in MODULES}
    grads = []
    for route in ("factored", "dense"):
        phi = {p: torch.full((b.size,), 0.3, requires_grad=True) for p, b in banks.items()}
        with WeightedLoraHooks(toy_context.encoder, banks, route=route) as hooks:
            hooks.set(phi)
            toy_context.encoder(toy_context.unlabeled[1]).square().sum().backward()
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
    anchors = compute_anchors(toy_adapters, toy_context)
    for i, adapter in enumerate(toy_adapters):
        enc = dense_encoder(toy_context, {p: adapter.delta(p) for p in MODULES})
        assert anchors[i] == pytest.approx(full_entropy(toy_context, enc, i), rel=1e-5)


@pytest.mark.parametrize("variant", ["a", "b"])
def test_short_run_lowers_the_objective(toy_adapters, toy_context, variant):
    anchors = torch.tensor(compute_anchors(toy_adapters, toy_context))
    rho = torch.full((3,), 1 / 3)

    def objective(result):
        enc = dense_encoder(toy_context, result.deltas())
        H = torch.tensor([full_entropy(toy_context, enc, t) for t in range(3)])
        return float(stch(H, rho, anchors, alpha=1.0))

    start = run_tara(toy_adapters, toy_context, variant=variant, steps=0)
    run = run_tara(toy_adapters, toy_context, variant=variant, steps=40, lr=0.05, batch_size=24)
    assert objective(run.result) < objective(start.result) - 1e-3
    assert run.losses[-1] < run.losses[0]
    assert run.steps_done == 40 and not run.stopped


def test_determinism_under_a_seed(toy_adapters, toy_context):
    kw = dict(variant="b", steps=8, lr=0.02, batch_size=5)
    a = run_tara(toy_adapters, toy_context, seed=11, **kw)
    b = run_tara(toy_adapters, toy_context, seed=11, **kw)
    c = run_tara(toy_adapters, toy_context, seed=12, **kw)
    for path in MODULES:
        torch.testing.assert_close(a.phi[path], b.phi[path], rtol=0, atol=0)
    assert a.losses == b.losses
    assert any(not torch.equal(a.phi[p], c.phi[p]) for p in MODULES)


def test_warm_start_continues_from_previous_phi(toy_adapters, toy_context):
    first = run_tara(toy_adapters, toy_context, variant="a", steps=10, lr=0.05)
    again = run_tara(toy_adapters, toy_context, variant="a", steps=0, init_phi=first.phi)
    for path in MODULES:
        torch.testing.assert_close(again.phi[path], first.phi[path])
        torch.testing.assert_close(again.result.delta(path), first.result.delta(path))
    with pytest.raises(ValueError, match="warm-start"):
        run_tara(toy_adapters, toy_context, variant="b", steps=0, init_phi=first.phi)


def test_cancellation_and_progress(toy_adapters, toy_context):
    seen = []
    calls = iter(range(100))
    run = run_tara(
        toy_adapters, toy_context, variant="a", steps=20,
        progress=lambda f, m: seen.append(f), should_stop=lambda: next(calls) >= 3,
    )  # fmt: skip
    assert run.stopped and run.steps_done == 3 and len(run.losses) == 3
    assert seen == pytest.approx([1 / 20, 2 / 20, 3 / 20])


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
    kw = dict(variant="b", steps=6, lr=0.05, seed=2)
    a, b = run_tara(toy_adapters, toy_context, **kw), run_tara(other, toy_context, **kw)
    for path in MODULES:
        torch.testing.assert_close(a.result.delta(path), b.result.delta(path), atol=1e-4, rtol=1e-4)


def test_registered_methods_through_merge(toy_adapters, toy_context):
    with pytest.raises(ValueError, match="bundle context"):
        merge(toy_adapters, "tara_b")
    res = merge(toy_adapters, "tara_b", context=toy_context, steps=3, rho=[1, 1, 2], seed=4)
    assert res.method == "tara_b" and res.diagnostics["rho"] == pytest.approx([0.25, 0.25, 0.5])
    assert all(m.is_factored for m in res.modules.values())
    with pytest.raises(ValueError, match="alpha"):
        merge(toy_adapters, "tara_a", context=toy_context, alpha=0.0)


def test_adamerging_original_clamps_and_tara_repo_starts_at_ta(toy_adapters, toy_context):
    start = run_adamerging(toy_adapters, toy_context, variant="tara_repo", steps=0)
    ta = merge(toy_adapters, "task_arithmetic", scaling=0.4)
    for path in MODULES:
        torch.testing.assert_close(start.result.delta(path), ta.delta(path), atol=1e-5, rtol=1e-5)
    run = run_adamerging(toy_adapters, toy_context, layerwise=True, steps=30, lr=0.2)
    lam = torch.tensor(run.result.diagnostics["lambda"])
    assert lam.shape == (2, 3) and lam.min() >= 0 and lam.max() <= 1
    assert run.losses[-1] < run.losses[0]
    task = run_adamerging(toy_adapters, toy_context, layerwise=False, steps=0)
    expected = 0.3 * sum(a.delta("fc2") for a in toy_adapters)
    torch.testing.assert_close(task.result.delta("fc2"), expected, atol=1e-5, rtol=1e-5)


def test_adamerging_registered(toy_adapters, toy_context):
    res = merge(toy_adapters, "adamerging_task", context=toy_context, steps=2)
    assert res.method == "adamerging_task" and len(res.diagnostics["lambda"]) == 3


def test_unknown_task_name_is_a_key_error(toy_context):
    adapters = make_adapters(num_tasks=3)
    ctx = make_context(num_tasks=2)
    with pytest.raises(KeyError, match="task2"):
        run_tara(adapters, ctx, steps=0)
    assert toy_context is not None


def test_adamerging_warm_start(toy_adapters, toy_context):
    first = run_adamerging(toy_adapters, toy_context, variant="tara_repo", steps=4, lr=0.1)
    again = run_adamerging(toy_adapters, toy_context, variant="tara_repo", steps=0,
                           init_phi=first.state)  # fmt: skip
    torch.testing.assert_close(again.state["lambda"], first.state["lambda"])
    tara = run_tara(toy_adapters, toy_context, variant="a", steps=0)
    with pytest.raises(ValueError, match="lambda"):
        run_adamerging(toy_adapters, toy_context, steps=0, init_phi=tara.state)
