"""The tara / tradeoff / sensitivity commands against a toy bundle (no shipped files needed)."""

from __future__ import annotations

import json

import pytest

import merging_core.bundles as bundles
from merging_core.cli import main

from .conftest import make_adapters, make_context
from .test_tradeoff import make_evaluate


class ToyBundle:
    name = "toy"

    def __init__(self):
        self._context, self._adapters = make_context(), make_adapters()
        self._score = make_evaluate(self._context)

    def adapter_set(self):
        return self._adapters

    def task_data(self, device=None):
        return self._context

    def fingerprint(self):
        return self._context.fingerprint()

    def evaluate(self, result, tasks=None):
        names = list(tasks or self._context.task_names)
        scores = self._score(result, names)
        rows = {n: {"accuracy": s, "normalized": s} for n, s in zip(names, scores, strict=True)}
        return {
            "tasks": rows,
            "average_normalized": sum(r["normalized"] for r in rows.values()) / len(rows),
        }


@pytest.fixture
def toy_bundle(monkeypatch):
    bundle = ToyBundle()
    monkeypatch.setattr(bundles, "load_bundle", lambda name: bundle)
    return bundle


def test_tara_command_json(toy_bundle, capsys):
    rc = main(["tara", "--bundle", "toy", "--variant", "a", "--steps", "3", "--rho", "1,1,2",
               "--device", "cpu", "--json", "--no-progress"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["method"] == "tara_a" and out["steps"] == 3
    assert out["rho"] == pytest.approx([0.25, 0.25, 0.5])
    assert set(out["scores"]["tasks"]) == {"task0", "task1", "task2"}


def test_tara_command_table_and_progress(toy_bundle, capsys):
    assert main(["tara", "--steps", "2", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "tara_b on toy" in captured.out and "average" in captured.out
    assert "100%" in captured.err


def test_tradeoff_command(toy_bundle, capsys):
    rc = main(["tradeoff", "--tasks", "task0", "1", "--points", "3", "--methods", "tara_b",
               "--steps", "2", "--warm-steps", "1", "--no-baselines", "--json", "--no-progress",
               "--device", "cpu"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["tasks"] == ["task0", "task1"] and len(out["points"]) == 3


def test_sensitivity_command(toy_bundle, capsys):
    rc = main(["sensitivity", "--variant", "a", "--preferences", "3", "--no-progress",
               "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "κ(J)" in out and "task2" in out


def test_bad_rho_is_a_clean_error(toy_bundle, capsys):
    assert (
        main(["tara", "--rho", "1,-1,1", "--steps", "1", "--no-progress", "--device", "cpu"]) == 2
    )
    assert "rho[1]" in capsys.readouterr().err


def test_tara_command_exports_a_peft_adapter(toy_bundle, tmp_path, capsys):
    out = tmp_path / "merged"
    rc = main(["tara", "--steps", "1", "--out", str(out), "--json", "--no-progress",
               "--device", "cpu"])  # fmt: skip
    assert rc == 0 and json.loads(capsys.readouterr().out)["export"] == str(out)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()


def test_tara_command_records_the_run_in_a_history_folder(toy_bundle, tmp_path, capsys):
    from merging_core.sweep.history import RunHistory

    rc = main(["tara", "--steps", "2", "--device", "cpu", "--no-progress", "--json",
               "--history", str(tmp_path / "hist")])  # fmt: skip
    assert rc == 0
    runs = RunHistory(tmp_path / "hist").runs()
    assert len(runs) == 1 and runs[0]["method"] == "tara_b"
    assert RunHistory(tmp_path / "hist").load(runs[0]["key"])["recipe"]["method"] == "tara_b"
