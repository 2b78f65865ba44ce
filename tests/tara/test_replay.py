"""A data-driven recipe replays to the same bytes (warm start included), refuses other task data,
and the model card tells how to replay it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from merging_core import io
from merging_core.adapters import AdapterSet
from merging_core.export import export_merge
from merging_core.merge import merge
from merging_core.recipe import build_recipe, parse_recipe, recipe_inputs
from merging_core.replay import replay_recipe

from .conftest import make_adapters, make_context

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def saved_adapters(tmp_path) -> AdapterSet:
    """The toy adapters written to disk and read back (so recipes can name and hash them)."""
    paths = []
    for adapter in make_adapters():
        paths.append(io.save_adapter(tmp_path / "in" / adapter.name, adapter.modules))
    return AdapterSet.from_adapters(io.load_adapters(paths))


@pytest.mark.parametrize("method", ["tara_b", "adamerging_layer"])
def test_warm_started_recipe_replays_to_the_same_bytes(saved_adapters, tmp_path, method):
    data = make_context()
    first = merge(saved_adapters, method, task_data=data, steps=3, lr=0.05, seed=2)
    second = merge(saved_adapters, method, task_data=data, steps=4, lr=0.05, seed=5,
                   warm_start=first)  # fmt: skip
    recipe = build_recipe(second, inputs=recipe_inputs(saved_adapters))
    assert recipe["task_data"] == {"bundle": "toy", "fingerprint": data.fingerprint()}
    assert recipe["warm_start"]["sha256"] == second.run["warm_start"]
    export_merge(second, tmp_path / "a", recipe=recipe)
    written = parse_recipe((tmp_path / "a" / "recipe.json").read_text())
    replay_recipe(written, tmp_path / "b", task_data=make_context(), recipe_dir=tmp_path / "a")
    assert (tmp_path / "a" / WEIGHTS).read_bytes() == (tmp_path / "b" / WEIGHTS).read_bytes()
    card = (tmp_path / "a" / "README.md").read_text()
    assert "merge-lab merge --recipe recipe.json --bundle toy --out OUT" in card
    assert "warm-started" in card


def test_replay_refuses_other_task_data_and_a_missing_warm_state(saved_adapters, tmp_path):
    data = make_context()
    first = merge(saved_adapters, "tara_a", task_data=data, steps=2, lr=0.05)
    second = merge(saved_adapters, "tara_a", task_data=data, steps=2, warm_start=first)
    export_merge(
        second, tmp_path / "a", recipe=build_recipe(second, inputs=recipe_inputs(saved_adapters))
    )
    recipe = json.loads((tmp_path / "a" / "recipe.json").read_text())
    other = make_context(seed=9)
    with pytest.raises(ValueError, match="fingerprint"):
        replay_recipe(recipe, tmp_path / "b", task_data=other, recipe_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="--bundle toy"):
        replay_recipe(recipe, tmp_path / "b", recipe_dir=tmp_path / "a")
    (tmp_path / "a" / "warm_start.safetensors").write_bytes(
        io.state_to_bytes({k: v + 1 for k, v in second.extras["warm_start"].items()})
    )
    with pytest.raises(ValueError, match="hash"):
        replay_recipe(recipe, tmp_path / "b", task_data=data, recipe_dir=tmp_path / "a")


def test_changed_inputs_change_the_fingerprint():
    data = make_context()
    moved = dataclasses.replace(data, inputs={k: v + 1e-3 for k, v in data.inputs.items()},
                                _fingerprint=None)  # fmt: skip
    assert moved.fingerprint() != data.fingerprint()
    assert make_context().fingerprint() == data.fingerprint()
