"""Running sweeps: local workers give the serial CLI's numbers; resume runs only missing points;
a failed point is recorded and the sweep goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from merging_core.sweep import run_sweep, store
from merging_core.sweep.worker import Worker
from tests.sweep.conftest import SCALINGS, scores_by, ta_spec_dict

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_local_two_workers_equal_the_serial_cli(ta_spec, serial_cli_scores, tmp_path):
    summary = run_sweep(ta_spec, tmp_path, executor="local", workers=2)
    assert (summary.total, summary.done, summary.failed) == (6, 6, 0)
    assert scores_by(tmp_path, "scaling") == serial_cli_scores


def test_serial_sweep_equals_the_cli_and_reruns_nothing(ta_spec, serial_cli_scores, tmp_path):
    seen = []
    run_sweep(ta_spec, tmp_path, executor="serial", on_progress=seen.append)
    assert scores_by(tmp_path, "scaling") == serial_cli_scores
    assert seen[-1].done == 6 and seen[-1].eta_s == 0.0 and seen[-1].running == 0
    again = run_sweep(ta_spec, tmp_path, executor="serial")
    assert (again.skipped, again.done) == (6, 0)


def test_interrupted_sweep_finishes_only_the_missing_points(ta_spec, tmp_path):
    def stop_after_two(progress):
        if progress.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(ta_spec, tmp_path, executor="serial", on_progress=stop_after_two)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "points").iterdir()}
    assert len(first) == 2
    (tmp_path / "points" / ".half-written.json.tmp").write_text("{")  # a write cut by the kill
    summary = run_sweep(ta_spec, tmp_path, executor="serial")
    assert (summary.skipped, summary.done) == (2, 4)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "points").glob("*.json")}
    assert len(after) == 6 and all(after[n] == t for n, t in first.items())


@pytest.mark.slow
def test_killed_cli_sweep_resumes(tmp_path):
    spec = tmp_path / "ta.json"
    spec.write_text(__import__("json").dumps(ta_spec_dict()))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "merging_core.cli",
        "sweep",
        str(spec),
        "--out",
        str(out),
        "--executor",
        "serial",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(store.done_keys(out)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(store.done_keys(out))
    assert 2 <= killed_at < 6
    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, check=True)
    summary = __import__("json").loads(done.stdout)
    assert (summary["skipped"], summary["done"]) == (killed_at, 6 - killed_at)


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(ta_spec, tmp_path, monkeypatch):
    real = Worker._merge_and_score

    def flaky(self, point, warm, export):
        if point.recipe["params"]["scaling"] == 0.3:
            raise RuntimeError("out of memory on the 0.3 point")
        return real(self, point, warm, export)

    monkeypatch.setattr(Worker, "_merge_and_score", flaky)
    summary = run_sweep(ta_spec, tmp_path, executor="serial")
    assert (summary.done, summary.failed) == (5, 1)
    [failed] = list(store.iter_points(tmp_path, failed=True))
    assert failed["error"] == "RuntimeError: out of memory on the 0.3 point"
    monkeypatch.setattr(Worker, "_merge_and_score", real)
    retry = run_sweep(ta_spec, tmp_path, executor="serial")
    assert (retry.skipped, retry.done, retry.failed) == (5, 1, 0)
    assert not list(store.iter_points(tmp_path, failed=True))
    assert sorted(scores_by(tmp_path, "scaling")) == list(SCALINGS)


def test_exports_each_point_as_a_peft_adapter(tmp_path):
    from merging_core.sweep import parse_spec

    spec = parse_spec(ta_spec_dict(grid={"scaling": [0.2]}, export=4))
    run_sweep(spec, tmp_path, executor="serial")
    [record] = list(store.iter_points(tmp_path))
    folder = tmp_path / record["export"]
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "recipe.json").is_file()


def test_adapter_folders_without_a_bundle_merge_and_export(tmp_path):
    from merging_core.sweep import parse_spec

    root = ROOT / "sample_adapters" / "vision8" / "adapters"
    spec = parse_spec(
        {
            "adapters": [str(root / "mnist"), str(root / "svhn")],
            "method": "ties",
            "grid": {"density": [0.2, 0.5]},
            "export": True,
        }
    )
    summary = run_sweep(spec, tmp_path, executor="serial")
    assert (summary.done, summary.failed) == (2, 0)
    records = list(store.iter_points(tmp_path))
    assert all(r["scores"] == {} for r in records)  # no bundle: nothing to score
    assert [a["name"] for a in records[0]["recipe"]["inputs"]["adapters"]] == ["mnist", "svhn"]
    assert all((tmp_path / r["export"] / "adapter_config.json").is_file() for r in records)
