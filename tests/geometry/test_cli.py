"""``merge-lab geometry``: tables and JSON from PEFT folders written by our own io module."""

from __future__ import annotations

import json
import os

import pytest
import torch
from geometry_helpers import random_factors

from merging_core.adapters import LoraModule
from merging_core.cli import main
from merging_core.geometry import COLUMNS
from merging_core.io import save_adapter
from merging_core.runtime import THREADS_ENV, torch_threads

MODULES = ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj")


@pytest.fixture(autouse=True)
def thread_calls(monkeypatch):
    """Record instead of changing the test process's torch threads (the CLI sets them)."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


@pytest.fixture
def adapter_dirs(tmp_path):
    per_module = {
        name: random_factors(i, 10, 8, [2, 2], dtype=torch.float32)
        for i, name in enumerate(MODULES)
    }
    dirs = []
    for t in range(2):
        mods = {name: LoraModule(B=Bs[t], A=As[t]) for name, (Bs, As) in per_module.items()}
        dirs.append(str(save_adapter(tmp_path / f"task{t}", mods)))
    return dirs


def test_json_report(adapter_dirs, capsys):
    assert main(["geometry", *adapter_dirs, "--json", "--no-progress", "--details"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["module"] for r in out["per_module"]] == list(MODULES)
    assert len(out["per_layer"]) == 2 and set(out["columns"]) == set(COLUMNS)
    assert out["adapters"] == ["task0", "task1"]
    assert out["per_module"][0]["sign_conflict_rate"] is not None
    assert len(out["details"][MODULES[0]]["O_B"]) == 2


def test_tables_and_switches(adapter_dirs, capsys):
    assert main(["geometry", *adapter_dirs, "--no-sign-conflicts", "--k", "1"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[0] == "module" and "coverage_ratio" in lines[0]
    assert lines[1].startswith(MODULES[0]) and lines[1].split()[-1] == "-"
    assert "[" in captured.err  # progress on stderr
    assert main(["geometry", *adapter_dirs, "--per-layer", "--no-progress"]) == 0
    per_layer = capsys.readouterr().out.splitlines()
    assert per_layer[0].split()[0] == "layer" and per_layer[1].startswith("model.layers.0 ")


def test_threads_flag(adapter_dirs, capsys, thread_calls):
    assert main(["geometry", *adapter_dirs, "--json", "--no-progress", "--threads", "3"]) == 0
    assert main(["geometry", *adapter_dirs, "--json", "--no-progress", "--threads", "0"]) == 0
    assert main(["geometry", *adapter_dirs, "--json", "--no-progress"]) == 0
    # every CLI run first applies the process default (merging_core.runtime), then the flag
    default = torch_threads(os.cpu_count(), os.environ.get(THREADS_ENV))
    assert thread_calls == [default, 3, default, default, 1]
    assert main(["geometry", *adapter_dirs, "--no-progress", "--threads", "-1"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["geometry", str(tmp_path / "missing"), "--no-progress"]) == 2
    assert "merge-lab geometry: error" in capsys.readouterr().err


def test_sign_options_and_per_task_table(adapter_dirs, capsys):
    args = ["geometry", *adapter_dirs, "--no-progress"]
    assert main([*args, "--json", "--sign-exact"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sign_method"] == "exact" and len(out["per_task"]) == 4
    row = out["per_module"][0]
    assert row["sign_conflict_rate_low"] == row["sign_conflict_rate"]
    assert main([*args, "--json", "--sign-samples", "16", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sign_method"] == "sampled" and out["sign_samples"] == 16
    assert main([*args, "--per-task", "erank"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "task0", "task1"]
    assert lines[1].startswith("model.layers.0 ") and "erank" in lines[-1]
    assert main([*args, "--sign-confidence", "1.5"]) == 2
    assert "confidence" in capsys.readouterr().err
