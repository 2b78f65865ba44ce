"""Data-driven sweeps: a 4-point TARA-B ρ line (few steps) gives the serial CLI's numbers on local
workers; a warm-started chain gives the same numbers serially, on workers, and when resumed."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from merging_core.cli import main
from merging_core.sweep import parse_spec, run_sweep, store
from tests.sweep.conftest import TASKS

STEPS = {"steps": 3, "batch_size": 8}


def tara_spec(**extra):
    return parse_spec({
        "bundle": "vision8", "tasks": list(TASKS), "method": "tara_b", "params": STEPS,
        "grid": {"rho": {"line": list(TASKS), "points": 4}}, "device": "cpu", **extra,
    })  # fmt: skip


def by_rho(folder) -> dict[tuple[float, ...], dict]:
    return {tuple(r["recipe"]["params"]["rho"]): r["scores"]["test"]
            for r in store.iter_points(folder)}  # fmt: skip


def cli_scores(rho) -> dict:
    buf = io.StringIO()
    sets = [f"rho={','.join(str(v) for v in rho)}"] + [f"{k}={v}" for k, v in STEPS.items()]
    args = ["evaluate", "--method", "tara_b", "--tasks", ",".join(TASKS), "--json", "--no-progress"]
    with redirect_stdout(buf):
        assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    return json.loads(buf.getvalue())


@pytest.mark.slow
def test_tara_line_on_local_workers_equals_the_serial_cli(tmp_path):
    summary = run_sweep(tara_spec(), tmp_path, executor="local", workers=2)
    assert (summary.done, summary.failed) == (4, 0), list(store.iter_points(tmp_path, failed=True))
    got = by_rho(tmp_path)
    assert len(got) == 4
    for rho, scores in got.items():
        assert scores == cli_scores(rho)
    states = list((tmp_path / "states").glob("*.safetensors"))
    assert len(states) == 4  # every point keeps its learned φ (warm starts, reopening)


@pytest.mark.slow
def test_warm_started_chain_is_the_same_serial_local_and_resumed(tmp_path):
    spec = tara_spec(warm_start=True, warm_steps=2)
    run_sweep(spec, tmp_path / "serial", executor="serial")
    reference = by_rho(tmp_path / "serial")
    run_sweep(spec, tmp_path / "local", executor="local", workers=2)
    assert by_rho(tmp_path / "local") == reference

    def stop_after_two(progress):
        if progress.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path / "resumed", executor="serial", on_progress=stop_after_two)
    resumed = run_sweep(spec, tmp_path / "resumed", executor="serial")
    assert (resumed.skipped, resumed.done) == (2, 2)  # children start from the saved states
    assert by_rho(tmp_path / "resumed") == reference
