"""Timings of nli6 through the bundle loader (``python -m merging_core.bundles.nli6 time``).

What the app and the reports pay on this machine, as CPU seconds (``time.process_time``, all
threads) and wall-clock seconds:

* one slider evaluation: the app scores a Task Arithmetic merge task by task on the fixed slider
  subset (``bundle.slider_rows`` rows per task, the first of each test file);
* one full evaluation: every test row of every task (the reports' and tables' numbers);
* a TARA-B run of ``steps`` steps on the validation rows (the data-driven merges' cost).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, cpu seconds, wall seconds)`` of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def slider_evaluation(bundle, result) -> dict[str, float]:
    """The app's slider path: one ``evaluate`` per task on the slider subset (normalised %)."""
    rows = bundle.slider_rows
    return {
        t: bundle.evaluate(result, tasks=[t], rows=rows)["tasks"][t]["normalized"]
        for t in bundle.task_names
    }


def run_timings(
    bundle, *, steps: int = 250, scaling: float = 0.3, full: bool = True
) -> list[dict[str, Any]]:
    """Rows ``{"what", "cpu_s", "wall_s"}``: slider evaluation (twice: the first call also warms
    caches), full evaluation (``full``), a TARA-B run of ``steps`` steps (0: none)."""
    from merging_core.merge import merge

    adapters = bundle.adapter_set()
    ta = merge(adapters, "task_arithmetic", scaling=scaling)
    rows = []
    for label in ("slider evaluation (first)", "slider evaluation"):
        _, cpu, wall = timed(lambda: slider_evaluation(bundle, ta))
        rows.append({"what": f"{label}, {bundle.slider_rows} rows × {len(adapters)} tasks",
                     "cpu_s": cpu, "wall_s": wall})  # fmt: skip
    if full:
        _, cpu, wall = timed(lambda: bundle.evaluate(ta, rows=0))
        n = sum(int(bundle.labels(t).shape[0]) for t in bundle.task_names)
        rows.append({"what": f"full test evaluation, {n} rows", "cpu_s": cpu, "wall_s": wall})
    if not steps:
        return rows
    data = bundle.task_data()
    res, cpu, wall = timed(lambda: merge(adapters, "tara_b", task_data=data, steps=steps))
    done = res.run["steps_done"]
    rows.append({"what": f"TARA-B, {done} steps", "cpu_s": cpu, "wall_s": wall})
    return rows
