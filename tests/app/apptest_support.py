"""Helpers shared by the AppTests: repo root, timeouts, seeded adapters, a bundle-shaped fake.

(A plain module rather than conftest.py so that test files can import it by a unique name.)
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app_support import state  # noqa: E402
from merging_core.adapters import Adapter, AdapterConfig, LoraModule  # noqa: E402

TIMEOUT = 90
MODULES = ("blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q", "blocks.1.attn.v")


def make_adapter(name: str, seed: int, *, d: int = 16, r: int = 4) -> Adapter:
    """A small random adapter over MODULES with PEFT shapes B (d, r), A (r, d)."""
    gen = torch.Generator().manual_seed(seed)
    modules = {
        m: LoraModule(B=torch.randn(d, r, generator=gen), A=torch.randn(r, d, generator=gen))
        for m in MODULES
    }
    config = AdapterConfig(r=r, lora_alpha=float(r), base_model="tiny-test-model")
    return Adapter(name=name, modules=modules, config=config)


class TinyEncoder(torch.nn.Module):
    """Residual stack whose Linear paths are MODULES (so adapters and hooks find them)."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(123)
        self.blocks = torch.nn.ModuleList()
        for _ in range(2):
            block = torch.nn.Module()
            block.attn = torch.nn.Module()
            block.attn.q = torch.nn.Linear(d, d)
            block.attn.v = torch.nn.Linear(d, d)
            for lin in (block.attn.q, block.attn.v):
                lin.weight.data = torch.randn(d, d, generator=gen) / d**0.5
            self.blocks.append(block)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, d) -> (N, d)
        for block in self.blocks:
            x = x + torch.tanh(block.attn.q(x)) + 0.5 * torch.tanh(block.attn.v(x))
        return x


class FakeBundle:
    """A bundle-shaped object over TinyEncoder: tasks named like the test adapters.

    Labels of task t are the predictions of base + adapter t, so each individual adapter scores
    100 % and merges score what they keep of each task's behaviour.
    """

    def __init__(self, adapters: list[Adapter]) -> None:
        from merging_core.bundles.cosine import CosineTaskData

        gen = torch.Generator().manual_seed(7)
        self.adapters = list(adapters)
        self.task_names = tuple(a.name for a in adapters)
        self.encoder = TinyEncoder()
        self.heads = tuple(
            torch.nn.functional.normalize(torch.randn(3, 16, generator=gen), dim=-1)
            for _ in adapters
        )
        self.inputs = {
            split: tuple(torch.randn(24, 16, generator=gen) for _ in adapters)
            for split in ("validation", "test")
        }
        self._task_data = CosineTaskData(
            name="fake", task_names=self.task_names, device=torch.device("cpu"),
            encoder=self.encoder, heads=dict(zip(self.task_names, self.heads, strict=True)),
            logit_scale=10.0, entropy_scale=10.0,
            inputs=dict(zip(self.task_names, self.inputs["validation"], strict=True)),
        )  # fmt: skip
        self.manifest = {"name": "fake"}
        self.labels = {
            a.name: self._predict(i, {m: a.delta(m) for m in a.modules})
            for i, a in enumerate(adapters)
        }

    def adapter_set(self):
        from merging_core.adapters import AdapterSet

        return AdapterSet.from_adapters(self.adapters)

    def task_data(self, device=None):
        return self._task_data

    def fingerprint(self):
        return self._task_data.fingerprint()

    def _predict(self, task: int, deltas) -> torch.Tensor:
        saved = {}
        for path, dw in deltas.items():
            layer = self.encoder.get_submodule(path)
            saved[path] = layer.weight.data.clone()
            layer.weight.data += dw
        try:
            feats = self.encoder(self.inputs["test"][task])
        finally:
            for path, w in saved.items():
                self.encoder.get_submodule(path).weight.data = w
        return (torch.nn.functional.normalize(feats, dim=-1) @ self.heads[task].T).argmax(-1)

    slider_rows = None  # score every row, as vision8 does

    def individual_accuracy(self):
        return dict.fromkeys(self.task_names, 1.0)

    def zero_shot_accuracy(self):
        return {n: float((self._predict(i, {}) == self.labels[n]).float().mean())
                for i, n in enumerate(self.task_names)}  # fmt: skip

    def evaluate(self, deltas, *, tasks=None, split="test", rows=None):
        deltas = deltas.deltas() if hasattr(deltas, "deltas") else deltas
        out = {"tasks": {}}
        for name in tasks or self.task_names:
            i = self.task_names.index(name)
            hits = self._predict(i, deltas) == self.labels[name]
            acc = float(hits[: rows or None].float().mean())
            out["tasks"][name] = {"accuracy": acc, "normalized": acc}
        norms = [t["normalized"] for t in out["tasks"].values()]
        out["average_normalized"] = sum(norms) / len(norms)
        return out


def plotly_array(z) -> np.ndarray:
    """A Plotly array as numpy: plain nested lists, or the typed-array form ``{dtype, bdata}``."""
    if isinstance(z, dict):
        flat = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"])
        shape = [int(n) for n in str(z.get("shape", flat.size)).split(",")]
        return flat.reshape(shape)
    return np.asarray(z, dtype=float)


def seed_state(at, adapters: list[Adapter], **extra) -> None:
    """Seed an AppTest with user adapters and no bundle (the bundle is tested on its own)."""
    at.session_state[state.BUNDLE_NAME] = ""
    at.session_state[state.USER_ADAPTERS] = list(adapters)
    for key, value in extra.items():
        at.session_state[key] = value
