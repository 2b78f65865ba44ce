"""``merge-lab methods`` and ``merge-lab merge`` through ``merging_core.cli.main``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from merging_core import io
from merging_core.adapters import AdapterSet, LoraModule
from merging_core.cli import main
from merging_core.export import export_merge
from merging_core.merge import merge
from merging_core.methods import available_methods
from merging_core.recipe import build_recipe, recipe_inputs

MODULES = ("layers.0.q_proj", "layers.1.q_proj")


@pytest.fixture()
def dirs(tmp_path, monkeypatch):
    """Three small adapters saved as PEFT folders; cwd is tmp_path so paths are relative."""
    monkeypatch.chdir(tmp_path)
    for seed, name in enumerate("xyz"):
        g = torch.Generator().manual_seed(seed)
        mods = {
            m: LoraModule(B=torch.randn(18, 3, generator=g), A=torch.randn(3, 14, generator=g))
            for m in MODULES
        }
        io.save_adapter(name, mods)
    return ["x", "y", "z"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_methods_json_lists_every_method_with_its_spec(capsys):
    rc, out, _ = run(capsys, "methods", "--json")
    rows = {row["id"]: row for row in json.loads(out)}
    assert rc == 0 and set(rows) == {m.name for m in available_methods()}
    ta = rows["task_arithmetic"]
    assert ta["name"] == "Task Arithmetic" and ta["space"] == "factors"
    assert ta["needs_data"] is False and ta["reference_url"].startswith("https://")
    scaling = next(p for p in ta["params"] if p["name"] == "scaling")
    assert (scaling["default"], scaling["low"], scaling["high"]) == (0.4, -2.0, 4.0)


def test_methods_table_shows_flags_and_bounds(capsys):
    rc, out, _ = run(capsys, "methods")
    assert rc == 0
    assert "task_arithmetic" in out and "[factors]" in out
    assert "--set scaling=0.4  (float [-2.0, 4.0])" in out


def test_merge_matches_the_library_byte_for_byte(dirs, capsys, tmp_path):
    rc, out, err = run(
        capsys,
        "merge",
        *dirs,
        "--method",
        "task_arithmetic",
        "--set",
        "scaling=0.5",
        "--set",
        "weights=1,-0.5,2",
        "--rank",
        "4",
        "--seed",
        "3",
        "--out",
        "cli",
        "--json",
    )
    assert rc == 0, err
    payload = json.loads(out)
    assert payload["params"] == {"scaling": 0.5, "weights": [1.0, -0.5, 2.0]}
    assert payload["report"]["max_rank"] == 4 and len(payload["report"]["modules"]) == 2
    assert "100%" in err  # the progress bar ran
    aset = AdapterSet.from_adapters(io.load_adapters(dirs))
    result = merge(aset, "task_arithmetic", seed=3, scaling=0.5, weights=(1.0, -0.5, 2.0))
    recipe = build_recipe(result, inputs=recipe_inputs(aset, dirs), rank=4)
    report = export_merge(result, tmp_path / "lib", rank=4, recipe=recipe)
    assert payload["report"]["max_rel_error"] == report.max_rel_error
    for name in (io.WEIGHTS_NAME, io.CONFIG_NAME, "recipe.json", "README.md"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()


def test_recipe_replay_is_bit_exact(dirs, capsys, tmp_path):
    assert run(capsys, "merge", *dirs, "--method", "ties", "--rank", "5", "--out", "a")[0] == 0
    rc, out, err = run(capsys, "merge", "--recipe", "a/recipe.json", "--out", "b")
    assert rc == 0, err
    assert "wrote b (ties, seed 0)" in out
    for name in (io.WEIGHTS_NAME, io.CONFIG_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_replay_refuses_a_changed_input(dirs, capsys, tmp_path):
    assert run(capsys, "merge", *dirs, "--method", "task_arithmetic", "--out", "a")[0] == 0
    shutil.rmtree("y")
    io.save_adapter("y", {m: LoraModule(B=torch.ones(18, 3), A=torch.ones(3, 14)) for m in MODULES})
    rc, _, err = run(capsys, "merge", "--recipe", "a/recipe.json", "--out", "b")
    assert rc == 2 and "input 1 ('y') does not match the recipe" in err
    assert not (tmp_path / "b").exists()


def test_replay_with_moved_inputs(dirs, capsys, tmp_path):
    assert run(capsys, "merge", *dirs, "--method", "task_arithmetic", "--out", "a")[0] == 0
    shutil.move("x", "moved_x")
    assert run(capsys, "merge", "--recipe", "a/recipe.json", "--out", "b")[0] == 2
    rc, _, err = run(
        capsys, "merge", "moved_x", "y", "z", "--recipe", "a/recipe.json", "--out", "b"
    )
    assert rc == 0, err
    assert (tmp_path / "a" / io.WEIGHTS_NAME).read_bytes() == (
        tmp_path / "b" / io.WEIGHTS_NAME
    ).read_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "scaling=abc"], "scaling must be a float, got 'abc'"),
        (["--set", "scaling=9"], "scaling must be <= 4.0, got 9.0"),
        (["--set", "lam=1"], "has no parameter 'lam'"),
        (["--set", "scaling"], "--set expects K=V, got 'scaling'"),
        (["--set", "weights=1,2"], "weights has 2 entries but there are 3 adapters"),
        (["--rank", "0"], "rank must be a positive integer"),
    ],
)
def test_bad_settings_fail_with_a_named_error(dirs, capsys, tmp_path, extra, message):
    rc, _, err = run(capsys, "merge", *dirs, "--method", "task_arithmetic", *extra, "--out", "o")
    assert rc == 2 and message in err
    assert not (tmp_path / "o").exists()


def test_unknown_method_and_missing_method(dirs, capsys):
    rc, _, err = run(capsys, "merge", *dirs, "--method", "nope", "--out", "o")
    assert rc == 2 and "unknown merge method 'nope'" in err
    rc, _, err = run(capsys, "merge", *dirs, "--out", "o")
    assert rc == 2 and "needs --method" in err


def test_recipe_with_merge_flags_is_refused(dirs, capsys):
    assert run(capsys, "merge", *dirs, "--method", "task_arithmetic", "--out", "a")[0] == 0
    rc, _, err = run(capsys, "merge", "--recipe", "a/recipe.json", "--rank", "3", "--out", "b")
    assert rc == 2 and "drop --rank" in err


def test_existing_out_needs_overwrite(dirs, capsys):
    args = ["merge", *dirs, "--method", "task_arithmetic", "--out", "a", "--no-progress"]
    assert run(capsys, *args)[0] == 0
    rc, _, err = run(capsys, *args)
    assert rc == 2 and "already exists" in err
    rc, out, err = run(capsys, *args, "--overwrite", "--rank", "2")
    assert rc == 0 and err == "" and "rank 2–2" in out


def test_merge_records_the_run_in_a_history_folder(tmp_path, monkeypatch):
    """``--history`` (or $MERGE_LAB_HISTORY) keeps every CLI merge in the run history."""
    from merging_core.cli import main
    from merging_core.sweep.history import RunHistory

    monkeypatch.delenv("MERGE_LAB_HISTORY", raising=False)
    root = tmp_path / "in"
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        gen = torch.Generator().manual_seed(seed)
        mods = {"m": LoraModule(B=torch.randn(6, 2, generator=gen), A=torch.randn(2, 5, generator=gen))}
        paths.append(str(io.save_adapter(root / name, mods)))
    rc = main(["merge", *paths, "--method", "task_arithmetic", "--out", str(tmp_path / "out"),
               "--history", str(tmp_path / "hist"), "--no-progress"])  # fmt: skip
    assert rc == 0
    runs = RunHistory(tmp_path / "hist").runs()
    assert [r["method"] for r in runs] == ["task_arithmetic"] and runs[0]["tasks"] == ["a", "b"]
