"""Run history: single CLI runs and sweep points in one indexed store; ΔW differences."""

import shutil

import pytest

from merging_core.cli import main
from merging_core.sweep.history import RunHistory, delta_difference
from merging_core.sweep.worker import Source, Worker
from tests.sweep.conftest import FIXTURES, TASKS

FOLDER = FIXTURES / "ta_vision8"


def test_cli_runs_and_sweep_points_share_one_index(tmp_path, capsys):
    shutil.copytree(FOLDER, tmp_path, dirs_exist_ok=True)
    history = RunHistory(tmp_path)
    assert history.refresh() == 6 and history.refresh() == 0
    args = ["evaluate", "--method", "ties", "--tasks", ",".join(TASKS), "--no-progress"]
    assert main([*args, "--history", str(tmp_path)]) == 0
    runs = history.runs()
    assert len(runs) == 7 and runs[0]["kind"] == "single" and runs[0]["method"] == "ties"
    assert runs[0]["tasks"] == list(TASKS) and runs[0]["params"]["density"] == 0.2
    printed = capsys.readouterr().out
    average = [line for line in printed.splitlines() if line.startswith("average")][0]
    assert f"{100 * runs[0]['average']:.1f}%" in average
    record = history.load(runs[0]["key"])
    assert record["scores"]["test"]["tasks"].keys() == set(TASKS)
    with pytest.raises(KeyError, match="not in the history"):
        history.load("0" * 20)


def test_delta_difference_of_two_task_arithmetic_runs_is_exact():
    history = RunHistory(FOLDER)
    by_scaling = {r["recipe"]["params"]["scaling"]: r for r in map(history.load, _keys())}
    worker = Worker(Source(bundle="vision8"))
    a = worker.rebuild(by_scaling[0.2]["recipe"])
    b = worker.rebuild(by_scaling[0.5]["recipe"])
    diff = delta_difference(a, b)
    # ΔW_λ = λ Σ_t ΔW_t, so ‖ΔW_0.2 − ΔW_0.5‖ = 0.3 ‖Σ ΔW_t‖ = 1.5 ‖ΔW_0.2‖
    assert diff["relative"] == pytest.approx(1.5, rel=1e-6)
    dense = sum(float(((a.delta(m) - b.delta(m)).double() ** 2).sum()) for m in a.modules) ** 0.5
    assert diff["difference"] == pytest.approx(dense, rel=1e-5)
    assert delta_difference(a, a)["difference"] == pytest.approx(0.0, abs=1e-6)


def _keys():
    return [p.stem for p in (FOLDER / "points").glob("*.json")]
