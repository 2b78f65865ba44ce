"""Recipes: build / validate / JSON round trip, hash verification, bit-exact replay."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from merging_core import io
from merging_core.adapters import AdapterSet, LoraModule
from merging_core.export import export_merge
from merging_core.merge import merge
from merging_core.methods import available_methods
from merging_core.recipe import (
    build_recipe,
    parse_recipe,
    recipe_inputs,
    recipe_to_json,
    validate_recipe,
    version_differences,
)
from merging_core.replay import replay_recipe

MODULES = ("layers.0.q_proj", "layers.0.v_proj", "layers.1.q_proj")


def write_adapter(path, seed: int, rank: int = 3):
    g = torch.Generator().manual_seed(seed)
    mods = {
        name: LoraModule(B=torch.randn(20, rank, generator=g), A=torch.randn(rank, 12, generator=g))
        for name in MODULES
    }
    return io.save_adapter(path, mods, base_model="tiny/base")


@pytest.fixture()
def inputs(tmp_path):
    paths = [str(write_adapter(tmp_path / "in" / n, seed)) for seed, n in enumerate("xyz")]
    return paths, AdapterSet.from_adapters(io.load_adapters(paths))


def exported(adapter_set, paths, out, method="task_arithmetic", seed=0, rank=4, **params):
    result = merge(adapter_set, method, seed=seed, **params)
    recipe = build_recipe(result, inputs=recipe_inputs(adapter_set, paths), rank=rank)
    return export_merge(result, out, rank=rank, recipe=recipe), recipe


def test_recipe_records_inputs_params_seed_rank_versions(inputs, tmp_path):
    paths, aset = inputs
    _, recipe = exported(aset, paths, tmp_path / "out", seed=3, scaling=0.5, weights="1,2,-1")
    assert recipe["method"] == "task_arithmetic" and recipe["seed"] == 3 and recipe["rank"] == 4
    assert recipe["params"] == {"scaling": 0.5, "weights": [1.0, 2.0, -1.0]}
    assert [i["path"] for i in recipe["inputs"]] == paths
    weights = [(tmp_path / "in" / n / io.WEIGHTS_NAME).read_bytes() for n in "xyz"]
    import hashlib

    assert [i["sha256"] for i in recipe["inputs"]] == [
        hashlib.sha256(w).hexdigest() for w in weights
    ]
    assert {"python", "torch", "merging-core"} <= set(recipe["versions"])
    on_disk = json.loads((tmp_path / "out" / "recipe.json").read_text())
    assert on_disk == recipe


def test_json_round_trip_is_stable(inputs, tmp_path):
    paths, aset = inputs
    _, recipe = exported(aset, paths, tmp_path / "out", weights=[0.1, 0.2, 0.30000000000000004])
    text = recipe_to_json(recipe)
    again = parse_recipe(text)
    assert again == recipe and recipe_to_json(again) == text
    assert again["params"]["weights"][2] == 0.30000000000000004  # floats survive exactly


def test_replay_is_bit_exact(inputs, tmp_path):
    paths, aset = inputs
    exported(aset, paths, tmp_path / "first", scaling=0.8)
    recipe = parse_recipe((tmp_path / "first" / "recipe.json").read_text())
    replay_recipe(recipe, tmp_path / "second")
    replay_recipe(recipe, tmp_path / "third")
    for name in (io.WEIGHTS_NAME, io.CONFIG_NAME, "recipe.json", "README.md"):
        first = (tmp_path / "first" / name).read_bytes()
        assert (tmp_path / "second" / name).read_bytes() == first, name
        assert (tmp_path / "third" / name).read_bytes() == first, name


@pytest.mark.skipif(
    "dare" not in {m.name for m in available_methods()}, reason="dare is not registered yet"
)
def test_replay_of_a_stochastic_method_reuses_the_seed(inputs, tmp_path):
    paths, aset = inputs
    exported(aset, paths, tmp_path / "a", method="dare", seed=11, rank=None)
    exported(aset, paths, tmp_path / "b", method="dare", seed=12, rank=None)
    replay_recipe(json.loads((tmp_path / "a" / "recipe.json").read_text()), tmp_path / "c")
    weights = {d: (tmp_path / d / io.WEIGHTS_NAME).read_bytes() for d in "abc"}
    assert weights["c"] == weights["a"] != weights["b"]


def test_changed_input_is_refused_with_both_hashes(inputs, tmp_path):
    paths, aset = inputs
    _, recipe = exported(aset, paths, tmp_path / "out")
    shutil.rmtree(tmp_path / "in" / "y")
    write_adapter(tmp_path / "in" / "y", seed=99)  # same path and shapes, other weights
    with pytest.raises(ValueError, match=r"input 1 \('y'\) does not match the recipe") as err:
        replay_recipe(recipe, tmp_path / "again")
    assert recipe["inputs"][1]["sha256"] in str(err.value)
    assert not (tmp_path / "again").exists()


def test_moved_inputs_replay_with_explicit_paths(inputs, tmp_path):
    paths, aset = inputs
    exported(aset, paths, tmp_path / "out")
    shutil.copytree(tmp_path / "in", tmp_path / "moved")
    shutil.rmtree(tmp_path / "in")
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    with pytest.raises(ValueError):
        replay_recipe(recipe, tmp_path / "again")
    moved = [str(tmp_path / "moved" / n) for n in "xyz"]
    replay_recipe(recipe, tmp_path / "again", paths=moved)
    same = (tmp_path / "again" / io.WEIGHTS_NAME).read_bytes()
    assert same == (tmp_path / "out" / io.WEIGHTS_NAME).read_bytes()
    assert [
        i["path"] for i in json.loads((tmp_path / "again" / "recipe.json").read_text())["inputs"]
    ] == moved


def test_in_memory_export_recipe_is_not_replayable(inputs, tmp_path):
    _, aset = inputs
    export_merge(merge(aset, "task_arithmetic"), tmp_path / "out", rank=2)
    recipe = parse_recipe((tmp_path / "out" / "recipe.json").read_text())
    assert recipe["inputs"][0] == {"name": "x", "path": "", "sha256": ""}
    with pytest.raises(ValueError, match="cannot be replayed"):
        replay_recipe(recipe, tmp_path / "again")


def test_export_refuses_a_recipe_for_another_rank(inputs, tmp_path):
    paths, aset = inputs
    result = merge(aset, "task_arithmetic")
    recipe = build_recipe(result, inputs=recipe_inputs(aset, paths), rank=4)
    with pytest.raises(ValueError, match="recipe rank is 4 but this export has 2"):
        export_merge(result, tmp_path / "out", rank=2, recipe=recipe)


@pytest.fixture()
def good(inputs, tmp_path):
    paths, aset = inputs
    return exported(aset, paths, tmp_path / "out")[1]


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"format": "mergekit"}, ValueError, "not a version-1"),
        ({"version": 2}, ValueError, "not a version-1"),
        ({"method": "nope"}, KeyError, "unknown merge method 'nope'"),
        ({"params": {"scaling": 99}}, ValueError, "scaling must be <= 4.0, got 99"),
        ({"params": {"lam": 1}}, ValueError, r"no parameter\(s\) \['lam'\]"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0, got -1"),
        ({"rank": 0}, ValueError, "rank must be an integer >= 1, got 0"),
        ({"inputs": []}, ValueError, "inputs must be a non-empty list"),
        ({"inputs": [{"name": "x", "path": "p", "sha256": "abc"}]}, ValueError, "64 hex"),
    ],
)
def test_invalid_recipes_are_rejected_by_name(good, change, error, match):
    with pytest.raises(error, match=match):
        validate_recipe({**good, **change})


def test_missing_field_and_bad_json_are_named(good):
    broken = {k: v for k, v in good.items() if k != "seed"}
    with pytest.raises(ValueError, match=r"missing field\(s\) \['seed'\]"):
        validate_recipe(broken)
    with pytest.raises(ValueError, match="my.json is not valid JSON"):
        parse_recipe("{", source="my.json")
    with pytest.raises(TypeError, match="JSON object"):
        validate_recipe([1, 2])


def test_version_differences_are_listed(good):
    assert version_differences(good) == []
    old = {**good, "versions": {**good["versions"], "torch": "1.0.0"}}
    notes = version_differences(old)
    assert len(notes) == 1 and "torch" in notes[0] and "1.0.0" in notes[0]
