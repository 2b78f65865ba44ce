"""Sweep specs on the shipped vision8 bundle, kept small: two tasks, Task Arithmetic."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from merging_core.cli import main
from merging_core.sweep import parse_spec

TASKS = ("mnist", "svhn")
SCALINGS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
FIXTURES = Path(__file__).parent / "fixtures"


def ta_spec_dict(**extra) -> dict:
    return {
        "bundle": "vision8",
        "tasks": list(TASKS),
        "method": "task_arithmetic",
        "grid": {"scaling": list(SCALINGS)},
        **extra,
    }


@pytest.fixture
def ta_spec():
    return parse_spec(ta_spec_dict())


@pytest.fixture(scope="session")
def serial_cli_scores() -> dict[float, dict]:
    """``merge-lab evaluate`` (the serial CLI) for each λ of the sweep: scaling -> scores."""
    out = {}
    for lam in SCALINGS:
        buf = io.StringIO()
        with redirect_stdout(buf):
            code = main(
                [
                    "evaluate",
                    "--bundle",
                    "vision8",
                    "--method",
                    "task_arithmetic",
                    "--set",
                    f"scaling={lam}",
                    "--tasks",
                    ",".join(TASKS),
                    "--json",
                    "--no-progress",
                ]
            )
        assert code == 0
        out[lam] = json.loads(buf.getvalue())
    return out


def scores_by(folder: Path, param: str) -> dict:
    """Test scores of every finished point in ``folder``, keyed by one parameter's value."""
    from merging_core.sweep import store

    return {r["recipe"]["params"][param]: r["scores"]["test"] for r in store.iter_points(folder)}


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """One intra-op thread, as the CLI and each sweep worker use on a 2-core machine (restored)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def plain_main_module(monkeypatch):
    """Spawned pool processes re-import ``__main__`` from its file; AppTest leaves a page script
    there (``tests/app`` runs first), which must not run inside a sweep worker."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
