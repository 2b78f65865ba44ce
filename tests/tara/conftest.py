"""A tiny task-data source (2-layer toy encoder, random cosine heads and inputs) and adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.bundles.cosine import CosineTaskData

D_IN, D_HID, D_EMB = 6, 8, 5
MODULES = ("fc1", "fc2")


class ToyEncoder(nn.Module):
    """``(N, 6) -> (N, 5)``: two linear layers with a tanh in between."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.fc1 = nn.Linear(D_IN, D_HID)
        self.fc2 = nn.Linear(D_HID, D_EMB)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def make_adapter(name: str, rank: int, generator: torch.Generator, scale: float = 0.6) -> Adapter:
    shapes = {"fc1": (D_HID, D_IN), "fc2": (D_EMB, D_HID)}
    modules = {
        path: LoraModule(
            B=torch.randn(d_out, rank, generator=generator) * scale,
            A=torch.randn(rank, d_in, generator=generator) * scale,
        )
        for path, (d_out, d_in) in shapes.items()
    }
    return Adapter(name=name, modules=modules)


def make_context(num_tasks: int = 3, seed: int = 0, num_val: int = 24) -> CosineTaskData:
    g = torch.Generator().manual_seed(seed)
    encoder = ToyEncoder(g).eval()
    classes = [3, 4, 5, 3][:num_tasks]
    names = tuple(f"task{i}" for i in range(num_tasks))
    heads = {
        n: torch.nn.functional.normalize(torch.randn(c, D_EMB, generator=g), dim=-1)
        for n, c in zip(names, classes, strict=True)
    }
    inputs = {n: torch.randn(num_val, D_IN, generator=g) for n in names}
    return CosineTaskData(
        name="toy", task_names=names, device=torch.device("cpu"), encoder=encoder, heads=heads,
        logit_scale=4.0, entropy_scale=2.0, inputs=inputs,
    )  # fmt: skip


def make_adapters(num_tasks: int = 3, seed: int = 1, ranks=(2, 3, 2, 2)) -> AdapterSet:
    g = torch.Generator().manual_seed(seed)
    return AdapterSet.from_adapters(
        [make_adapter(f"task{i}", ranks[i], g) for i in range(num_tasks)]
    )


def never_step() -> bool:
    """A ``should_stop`` that stops before the first step: the run returns its starting point."""
    return True


@pytest.fixture
def toy_context() -> CosineTaskData:
    return make_context()


@pytest.fixture
def toy_adapters() -> AdapterSet:
    return make_adapters()
