"""History page and "open a sweep" helpers: list runs of a history (or sweep) folder, compare two
side by side, and lay out a sweep folder on the Trade-off plane.

A history folder is any folder of point files (``merging_core.sweep.history``): a sweep's
``--out`` folder, or the folder single runs are recorded into (``MERGE_LAB_HISTORY``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app_support.settings import request_settings
from merging_core import figures
from merging_core.sweep import store
from merging_core.sweep.history import RunHistory, delta_difference

HISTORY_ENV = "MERGE_LAB_HISTORY"
FOLDER_KEY = "history.folder"  # widget key: the history folder
RUN_A_KEY, RUN_B_KEY = "history.run_a", "history.run_b"
SWEEP_FOLDER_KEY = "tradeoff.sweep_folder"  # widget key on the Trade-off page


def default_folder() -> str:
    """The history folder single runs are recorded into (empty when none is configured)."""
    return os.environ.get(HISTORY_ENV, "")


def open_history(folder: str) -> tuple[RunHistory, list[dict[str, Any]]]:
    """The history of ``folder`` (new point files indexed first) and its runs, newest first.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"history folder {folder!r} does not exist")
    history = RunHistory(path)
    history.refresh()
    return history, history.runs()


def run_table(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for ``st.dataframe``: when, kind, method, source, parameters, seed, average (%)."""
    return [
        {
            "run": r["key"],
            "finished": _when(r["finished"]),
            "kind": r["kind"],
            "method": r["method"],
            "source": r["source"],
            "params": params_text(r["params"]),
            "seed": r["seed"],
            "average %": None if r["average"] is None else round(100 * r["average"], 2),
        }
        for r in runs
    ]


def run_label(run: Mapping[str, Any]) -> str:
    """``method (params) · average`` for a select box."""
    avg = "" if run["average"] is None else f" · {100 * run['average']:.1f}%"
    return f"{run['method']} ({params_text(run['params'])}){avg} · {run['key'][:8]}"


def params_text(params: Mapping[str, Any]) -> str:
    """The non-default-looking parameters in one short line (None values left out)."""
    parts = []
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, list):
            v = "(" + ",".join(f"{x:.2g}" for x in v) + ")"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def compare_chart(a: Mapping[str, Any], b: Mapping[str, Any], split: str = "test") -> go.Figure:
    """Per-task normalised accuracy (%) of two runs as grouped bars (tasks scored by both)."""
    series = {}
    for name, record in (("A", a), ("B", b)):
        scores = (record.get("scores") or {}).get(split)
        if scores:
            series[f"{name}: {record['recipe']['method']}"] = {
                t: 100 * s["normalized"] for t, s in scores["tasks"].items()
            }
    if not series:
        return figures.empty_figure(f"Neither run has {split} scores", title="Per-task scores")
    return figures.task_bars(series, title=f"Per-task normalised accuracy ({split})",
                             y_title="normalised accuracy (%)", reference_line=100.0)  # fmt: skip


@st.cache_resource(scope="session", max_entries=2)
def _worker(bundle: str | None, adapters: tuple[str, ...], tasks: tuple[str, ...]) -> Any:
    from merging_core.sweep.worker import Source, Worker

    return Worker(Source(bundle=bundle, adapters=adapters, tasks=tasks))


def delta_difference_of(folder: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``‖ΔW_a − ΔW_b‖_F`` of two runs, rebuilt from their recipes (and saved learned states).

    Raises:
        ValueError: runs on different inputs or tasks, or a run without what rebuilds it.
    """
    if (
        a["recipe"]["inputs"] != b["recipe"]["inputs"]
        or a["recipe"]["tasks"] != b["recipe"]["tasks"]
    ):
        raise ValueError("the two runs merge different adapters; their ΔW cannot be compared")
    results = []
    for record in (a, b):
        source = record.get("source") or {}
        bundle = source.get("bundle") or record["recipe"]["inputs"].get("bundle")
        worker = _worker(bundle, tuple(source.get("adapters") or ()),
                         tuple(record["recipe"]["tasks"]))  # fmt: skip
        results.append(worker.rebuild(record["recipe"], store.load_state(folder, record["key"])))
    return delta_difference(*results)


def merge_settings(record: Mapping[str, Any]) -> tuple[str, dict[str, Any], int, list[str]]:
    """``(method, params, seed, tasks)`` that reopen a run on the Merge page."""
    recipe = record["recipe"]
    return recipe["method"], dict(recipe["params"]), int(recipe["seed"]), list(recipe["tasks"])


def reopen(folder: str | Path, record: Mapping[str, Any], *, source: str) -> list[str]:
    """Ask the Merge page to open ``record`` (its learned state too, when it saved one);
    returns the run's tasks (the page's new selection)."""
    method, params, seed, tasks = merge_settings(record)
    key = record.get("key")
    state = store.load_state(Path(folder).expanduser(), key) if key else None
    request_settings(method, params, adapters=tasks, seed=seed, warm_start=state, source=source)
    return tasks


def sweep_chart(folder: str, task_a: str, task_b: str) -> tuple[go.Figure, Any]:
    """The points of a sweep folder on the (task_a, task_b) plane, with their Pareto front.

    Raises:
        FileNotFoundError: not a sweep folder. ValueError: a task the points do not score.
    """
    from merging_core.sweep.collect import collect_folder

    collected = collect_folder(Path(folder).expanduser(), tasks=[task_a, task_b])
    pts = [(r["scores"][task_a], r["scores"][task_b]) for r in collected.rows]
    fig = figures.tradeoff_chart(
        {"sweep points": pts}, task_a=task_a, task_b=task_b,
        front=[pts[i] for i in collected.front],
        labels={"sweep points": [r["label"] for r in collected.rows]},
    )  # fmt: skip
    return fig, collected


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def sweep_folder_panel() -> None:
    """The Trade-off page's "open a sweep folder" panel: a folder from ``merge-lab sweep`` (run
    here or on a cluster) on the plane of two of its tasks; a point reopens on the Merge page."""
    folder = st.text_input("Sweep folder (the --out of merge-lab sweep)", key=SWEEP_FOLDER_KEY)
    if not folder:
        return
    try:
        tasks = _sweep_tasks(folder)
        a, b = st.columns(2)
        task_a = a.selectbox("x axis", tasks, index=0, key="tradeoff.sweep_a")
        task_b = b.selectbox("y axis", tasks, index=min(1, len(tasks) - 1), key="tradeoff.sweep_b")
        fig, collected = sweep_chart(folder, task_a, task_b)
    except (ValueError, KeyError, FileNotFoundError) as err:
        st.error(str(err))
        return
    st.plotly_chart(fig, width="stretch", key="tradeoff.sweep_chart")
    st.caption(f"{len(collected.rows)} points, {len(collected.front)} on the front; "
               f"{len(collected.failed)} failed.")  # fmt: skip
    labels = [r["label"] + (" (front)" if i in collected.front else "")
              for i, r in enumerate(collected.rows)]  # fmt: skip
    pick = st.selectbox("Point", range(len(labels)), format_func=labels.__getitem__,
                        key="tradeoff.sweep_pick")  # fmt: skip
    if st.button("Open this sweep point on the Merge page", key="tradeoff.sweep_open"):
        from app_support import state

        record = RunHistory(Path(folder).expanduser()).load(collected.rows[pick]["key"])
        st.session_state[state.SELECTED] = reopen(folder, record, source="a sweep point")
        st.switch_page("pages/merge.py")


def _sweep_tasks(folder: str) -> list[str]:
    from merging_core.sweep.collect import collect_folder

    return list(collect_folder(Path(folder).expanduser()).tasks)
