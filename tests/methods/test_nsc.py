"""NSC-Merging: the null-space loss by hand, the loss modules, the start point (Task Arithmetic),
a short run lowering the loss, warm start, cancellation, and the registry contract."""

import pytest
import torch

from merging_core import merge
from merging_core.methods import get_method
from merging_core.methods.nsc import (
    loss_module_paths,
    null_space_ratio,
    row_basis,
    task_loss,
)
from merging_core.tradeoff import preference_methods
from tests.tara.conftest import make_adapters, make_context, never_step


def test_null_space_ratio_by_hand():
    basis = row_basis(torch.tensor([[2.0, 0.0, 0.0]]))  # row space = the first axis
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [5.0, 0.0, 0.0]])
    # sqrt(1 - 9/25) = 0.8, sqrt(1 - 0) = 1, sqrt(1 - 1) = 0 (clamped: 1e-6)
    assert float(null_space_ratio(x, basis)) == pytest.approx((0.8 + 1.0 + 1e-6) / 3, abs=1e-5)
    tilted = row_basis(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]]))  # rank 2
    assert float(null_space_ratio(torch.tensor([[1.0, -1.0, 0.0]]), tilted)) == pytest.approx(1.0)
    assert float(null_space_ratio(torch.tensor([[[2.0, 2.0, 1.0]]]), tilted)) < 1e-5


def test_row_basis_is_orthonormal_and_drops_repeated_rows():
    A = torch.tensor([[1.0, 2.0, 0.0, 1.0], [2.0, 4.0, 0.0, 2.0]])  # rank 1
    Q = row_basis(A)
    assert Q.shape == (4, 1)
    torch.testing.assert_close(Q.T @ Q, torch.eye(1))


def test_task_loss_averages_modules_and_repeated_calls():
    basis = {"a": row_basis(torch.tensor([[1.0, 0.0]])), "b": row_basis(torch.tensor([[0.0, 1.0]]))}
    x_in, x_out = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    captured = {"a": [x_in, x_out], "b": [x_out]}  # a: (0 + 1) / 2, b: 0
    assert float(task_loss(captured, basis)) == pytest.approx(0.25, abs=1e-5)
    with pytest.raises(ValueError, match="never ran"):
        task_loss({"a": []}, basis)


def test_loss_modules():
    vit = [f"blocks.{i}.attn.{m}" for i in range(6) for m in ("k_proj", "q_proj", "v_proj")]
    assert loss_module_paths(vit, "all") == vit
    assert loss_module_paths(vit, "last_quarter") == vit[-6:]  # ceil(6 / 4) = 2 blocks
    assert loss_module_paths(vit, "last_quarter_v_proj") == [vit[-4], vit[-1]]
    llama = [f"model.layers.{i}.self_attn.{m}" for i in range(32) for m in ("q_proj", "v_proj")]
    chosen = loss_module_paths(llama, "last_quarter_v_proj")  # the official blocks 24-31
    assert chosen == [f"model.layers.{i}.self_attn.v_proj" for i in range(24, 32)]
    bert = [
        f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(4) for m in ("query", "value")
    ]
    assert loss_module_paths(bert, "last_quarter_v_proj") == [bert[-1]]
    with pytest.raises(ValueError, match="no block number"):
        loss_module_paths(["fc1", "fc2"], "last_quarter")
    with pytest.raises(ValueError, match="no value projection"):
        loss_module_paths(["blocks.0.q", "blocks.1.q"], "last_quarter_v_proj")
    with pytest.raises(ValueError, match="loss_modules"):
        loss_module_paths(vit, "first")


def test_start_point_is_task_arithmetic_at_lambda_over_t():
    adapters, data = make_adapters(), make_context()
    res = merge(adapters, "nsc", task_data=data, scaling=1.5, should_stop=never_step)
    ta = merge(adapters, "task_arithmetic", scaling=1.5 / len(adapters))
    for p in adapters.modules:
        torch.testing.assert_close(res.delta(p), ta.delta(p), atol=1e-5, rtol=1e-5)
    assert res.run["steps_done"] == 0 and res.run["stopped"]
    assert res.state["lambda"].shape == (len(adapters.modules), len(adapters))


def test_a_short_run_lowers_the_loss_and_leaves_gradient_free_modules_alone():
    adapters, data = make_adapters(), make_context()  # fc1 -> tanh -> fc2
    res = merge(adapters, "nsc", task_data=data, steps=30, lr=0.05, batch_size=24)  # full split
    d = res.diagnostics
    assert d["loss_modules"] == ["fc1", "fc2"] and len(res.run["losses"]) == 30
    assert d["loss_last"] < d["loss_first"]
    lam = res.state["lambda"]  # (modules, tasks): fc1's λ moves fc2's inputs, fc2's moves none
    assert not torch.allclose(lam[0], torch.full((3,), 1 / 3))
    assert torch.equal(lam[1], torch.full((3,), 1 / 3))  # untouched, not even weight decay


def test_warm_start_continues_and_is_checked():
    adapters, data = make_adapters(), make_context()
    kw = dict(task_data=data, batch_size=8)
    first = merge(adapters, "nsc", steps=4, lr=0.05, **kw)
    again = merge(adapters, "nsc", should_stop=never_step, warm_start=first, **kw)
    torch.testing.assert_close(again.state["lambda"], first.state["lambda"])
    for p in adapters.modules:
        torch.testing.assert_close(again.delta(p), first.delta(p))
    assert again.run["warm_start"] is not None and first.run["warm_start"] is None
    other = merge(adapters, "adamerging_layer", should_stop=never_step, **kw)
    with pytest.raises(ValueError, match="not 'nsc'"):
        merge(adapters, "nsc", warm_start=other, **kw)
    with pytest.raises(ValueError, match="shape"):
        merge(adapters, "nsc", warm_start={"lambda": torch.zeros(1, 3)}, **kw)


def test_progress_cancellation_and_determinism():
    adapters, data = make_adapters(), make_context()
    seen, polls = [], iter(range(100))
    res = merge(adapters, "nsc", task_data=data, steps=10, batch_size=4, seed=3,
                progress=lambda f, m: seen.append(f),
                should_stop=lambda: next(polls) >= 2)  # fmt: skip
    assert res.run["steps_done"] == 2 and res.run["stopped"]
    assert seen and all(0.0 <= f <= 1.0 for f in seen)
    a = merge(adapters, "nsc", task_data=data, steps=3, batch_size=4, seed=2)
    b = merge(adapters, "nsc", task_data=data, steps=3, batch_size=4, seed=2)
    assert all(torch.equal(a.delta(p), b.delta(p)) for p in adapters.modules)
    assert a.run["task_data"]["fingerprint"] == data.fingerprint()


def test_registry_contract():
    info = get_method("nsc")
    assert info.needs_data and info.space == "factors" and "data-driven" in info.tags
    assert info.defaults() == {"scaling": 1.0, "steps": 500, "lr": 1e-3, "batch_size": 16,
                               "loss_modules": "all", "precision": "float32"}  # fmt: skip
    assert "rho" not in info.param_names and "nsc" not in preference_methods()
    with pytest.raises(ValueError, match="unlabeled task data"):
        merge(make_adapters(), "nsc")


def test_official_loss_modules_on_a_block_model():
    """The app's fake bundle (blocks.{0,1}.attn.{q,v}): the last quarter is block 1."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
    from apptest_support import FakeBundle, make_adapter

    fake = FakeBundle([make_adapter(f"task{i}", seed=i) for i in range(2)])
    res = merge(fake.adapter_set(), "nsc", task_data=fake.task_data(), steps=2, batch_size=4,
                loss_modules="last_quarter")  # fmt: skip
    assert res.diagnostics["loss_modules"] == ["blocks.1.attn.q", "blocks.1.attn.v"]
    lam = res.state["lambda"]  # block 0 moves block 1's inputs; block 1 moves none of them
    rows = {p: i for i, p in enumerate(fake.adapter_set().modules)}
    assert torch.equal(lam[rows["blocks.1.attn.v"]], torch.full((2,), 0.5))
    assert not torch.equal(lam[rows["blocks.0.attn.q"]], torch.full((2,), 0.5))
