"""One TaskData contract over every implementation: vision8, the tests' toy cosine data and the
app's fake bundle (the transformers kind runs it in tests/bundles/test_transformers_kind.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "app"))

from taskdata_conformance import adapter_updates, check_task_data  # noqa: E402


def test_vision8():
    from merging_core.bundles import load_bundle

    bundle = load_bundle("vision8")
    data = bundle.task_data()
    assert data.name == "vision8" and data.task_names == bundle.task_names
    check_task_data(data, adapter_updates(bundle.adapter_set()))
    assert bundle.fingerprint() == data.fingerprint()


def test_toy_cosine_data():
    from tests.tara.conftest import make_adapters, make_context

    check_task_data(make_context(), adapter_updates(make_adapters()))


def test_app_fake_bundle():
    from apptest_support import FakeBundle, make_adapter

    from merging_core.adapters import AdapterSet

    adapters = [make_adapter(f"task{i}", seed=i) for i in range(3)]
    fake = FakeBundle(adapters)
    check_task_data(fake.task_data(), adapter_updates(AdapterSet.from_adapters(adapters)))


def test_unknown_task_is_a_key_error_naming_the_tasks():
    from tests.tara.conftest import make_context

    import torch

    with pytest.raises(KeyError, match="task0"):
        make_context().unlabeled("nope", torch.arange(2))
