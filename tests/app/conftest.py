"""Fixtures for AppTest: seeded in-memory adapters, page factories, a fake bundle."""

from __future__ import annotations

import pytest
from apptest_support import ROOT, TIMEOUT, FakeBundle, make_adapter, seed_state

from app_support import state
from merging_core.adapters import Adapter


@pytest.fixture
def adapters() -> list[Adapter]:
    return [make_adapter(f"task{i}", seed=i) for i in range(3)]


@pytest.fixture
def app_page():
    """Factory: an AppTest of one page file, seeded with the given adapters."""
    from streamlit.testing.v1 import AppTest

    def build(page: str, adapters: list[Adapter], **extra):
        at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
        seed_state(at, adapters, **extra)
        return at

    return build


@pytest.fixture
def fake_bundle(adapters, monkeypatch):
    """Install a FakeBundle as the sample bundle under a unique name; returns (name, bundle)."""
    import uuid

    import merging_core.bundles as bundles

    bundle = FakeBundle(adapters)
    name = f"fake-{uuid.uuid4().hex[:8]}"
    real = getattr(bundles, "load_bundle", None)

    def load(requested: str):
        if requested == name:
            return bundle
        if real is None:
            raise KeyError(f"no sample bundle named {requested!r}")
        return real(requested)

    monkeypatch.setattr(bundles, "load_bundle", load, raising=False)
    return name, bundle


@pytest.fixture
def bundle_page(fake_bundle):
    """Factory: an AppTest of one page opened on the fake bundle (no user adapters)."""
    from streamlit.testing.v1 import AppTest

    name, _ = fake_bundle

    def build(page: str, **extra):
        at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
        at.session_state[state.BUNDLE_NAME] = name
        for key, value in extra.items():
            at.session_state[key] = value
        return at

    return build
