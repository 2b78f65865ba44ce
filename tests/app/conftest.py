"""Fixtures for AppTest: the repo root on sys.path and small seeded in-memory adapters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
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


@pytest.fixture
def adapters() -> list[Adapter]:
    return [make_adapter(f"task{i}", seed=i) for i in range(3)]


def seed_state(at, adapters: list[Adapter], **extra) -> None:
    """Seed an AppTest with user adapters and no bundle (the bundle is tested on its own)."""
    at.session_state[state.BUNDLE_NAME] = ""
    at.session_state[state.USER_ADAPTERS] = list(adapters)
    for key, value in extra.items():
        at.session_state[key] = value


@pytest.fixture
def app_page():
    """Factory: an AppTest of one page file, seeded with the given adapters."""
    from streamlit.testing.v1 import AppTest

    def build(page: str, adapters: list[Adapter], **extra):
        at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
        seed_state(at, adapters, **extra)
        return at

    return build
