"""NSC-Merging: the null-space ratio by hand, the start point (Task Arithmetic at λ/T), a short
run lowering its label-free objective, determinism, and the data requirement."""

import pytest
import torch
from torch import nn

from merging_core import Adapter, AdapterSet, LoraModule, merge
from merging_core.bundles.context import TaskContext
from merging_core.methods.nsc import loss_module_paths, null_space_ratio, run_nsc

D_IN, D_HID, D_EMB = 6, 8, 5


class Toy(nn.Module):
    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(D_IN, D_HID), nn.Linear(D_HID, D_EMB)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture
def toy():
    gen = torch.Generator().manual_seed(0)
    names = ("task0", "task1", "task2")
    context = TaskContext(
        encoder=Toy(gen),
        task_names=names,
        heads=tuple(torch.randn(3, D_EMB, generator=gen) for _ in names),
        logit_scale=4.0,
        unlabeled=tuple(torch.randn(24, D_IN, generator=gen) for _ in names),
    )
    shapes = {"fc1": (D_HID, D_IN), "fc2": (D_EMB, D_HID)}
    adapters = [
        Adapter(
            name,
            {
                p: LoraModule(
                    B=torch.randn(o, 2, generator=gen), A=torch.randn(2, i, generator=gen)
                )
                for p, (o, i) in shapes.items()
            },
        )
        for name in names
    ]
    return AdapterSet.from_adapters(adapters), context


def test_null_space_ratio_by_hand():
    A = torch.tensor([[1.0, 0.0, 0.0]])  # row space = first axis
    gram_inv = torch.linalg.inv(A @ A.T + 1e-8 * torch.eye(1))
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0], [5.0, 0.0, 0.0]])
    # sqrt(1 - 9/25) = 0.8, sqrt(1 - 0) = 1, sqrt(1 - 1) = 0 (clamped to 1e-6)
    want = (0.8 + 1.0 + 1e-6) / 3
    assert float(null_space_ratio(x, A, gram_inv)) == pytest.approx(want, abs=1e-5)


def test_loss_modules():
    assert loss_module_paths(["a", "b", "c", "d", "e"], "last_quarter") == ["d", "e"]
    assert loss_module_paths(["a", "b"], "last_quarter") == ["b"]
    assert loss_module_paths(["a", "b"], "all") == ["a", "b"]
    with pytest.raises(ValueError, match="loss_modules"):
        loss_module_paths(["a"], "first")


def test_zero_steps_is_task_arithmetic_at_lambda_over_t(toy):
    adapters, context = toy
    res = merge(adapters, "nsc", context=context, steps=0, scaling=1.5)
    ta = merge(adapters, "task_arithmetic", scaling=0.5)
    for p in adapters.modules:
        torch.testing.assert_close(res.delta(p), ta.delta(p), atol=1e-5, rtol=1e-5)


def test_a_short_run_lowers_the_objective_and_moves_only_earlier_layers(toy):
    adapters, context = toy
    res = run_nsc(adapters, context, steps=30, lr=0.05, batch_size=24)
    d = res.diagnostics
    assert d["loss_modules"] == ["fc2"]
    assert d["loss_last"] < d["loss_first"]
    lam = torch.tensor(d["lambda"])  # (modules, tasks): fc1 learns; fc2 (the loss input) gets
    assert not torch.allclose(lam[0], torch.full((3,), 1 / 3))  # no gradient, only AdamW decay
    assert torch.allclose(lam[1], torch.full((3,), (1 / 3) * (1 - 0.05 * 0.01) ** 30))


def test_same_seed_same_bytes_and_data_is_required(toy):
    adapters, context = toy
    a = merge(adapters, "nsc", context=context, seed=2, steps=3, batch_size=4)
    b = merge(adapters, "nsc", context=context, seed=2, steps=3, batch_size=4)
    assert all(torch.equal(a.delta(p), b.delta(p)) for p in adapters.modules)
    with pytest.raises(ValueError, match="unlabeled task data"):
        merge(adapters, "nsc")
