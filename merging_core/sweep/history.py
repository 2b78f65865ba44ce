"""A run history: merge runs (single CLI/app runs and sweep points) as point files, indexed in
SQLite so that listing thousands of runs does not read thousands of files.

A history folder has the layout of a sweep folder (``points/<key>.json``, ``states/``) plus
``index.sqlite``; any sweep folder is therefore a history too, and :meth:`RunHistory.refresh`
indexes points written by a sweep. A single run is recorded with :func:`single_run_record`
(same record format as a sweep point, ``kind: "single"``).

:func:`delta_difference` compares two merges in factor space: ``‖ΔW_a − ΔW_b‖_F`` per module
from Gram matrices of the stacked factors (no dense ``d_out × d_in`` product unless a module is
dense already).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merging_core.factors import inner_product
from merging_core.sweep import store
from merging_core.sweep.spec import point_key

INDEX = "index.sqlite"
_COLUMNS = ("key", "kind", "finished", "method", "source", "tasks", "params", "seed", "average")


class RunHistory:
    """The runs of one history (or sweep) folder; see the module docstring."""

    def __init__(self, folder: str | Path) -> None:
        if not str(folder).strip():
            raise ValueError("a run history needs a folder, got an empty path")
        self.folder = Path(folder)

    def record(self, record: Mapping[str, Any]) -> str:
        """Write a run record (atomically) and index it; returns its key."""
        store.save_point(self.folder, record)
        self._upsert([dict(record)])
        return str(record["key"])

    def refresh(self) -> int:
        """Index point files that the index does not know yet; returns how many were added."""
        with self._db() as db:
            known = {row[0] for row in db.execute("SELECT key FROM runs")}
        new = [r for r in store.iter_points(self.folder) if r["key"] not in known]
        self._upsert(new)
        return len(new)

    def runs(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Indexed runs, newest first: key, kind, finished (epoch s), method, source, tasks,
        params, seed and the test average (fraction; None when not scored)."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY finished DESC, key"
        with self._db() as db:
            rows = db.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        out = [dict(zip(_COLUMNS, row, strict=True)) for row in rows]
        for row in out:
            row["tasks"], row["params"] = json.loads(row["tasks"]), json.loads(row["params"])
        return out

    def load(self, key: str) -> dict[str, Any]:
        """The full record of run ``key``.

        Raises:
            KeyError: no such run in this folder.
        """
        path = store.point_path(self.folder, key)
        if not path.is_file():
            raise KeyError(f"run {key!r} is not in the history at {self.folder}")
        return store.read_json(path)

    def _db(self) -> sqlite3.Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.folder / INDEX)
        db.execute(
            "CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, kind TEXT, finished REAL, "
            "method TEXT, source TEXT, tasks TEXT, params TEXT, seed INTEGER, average REAL)"
        )
        return db

    def _upsert(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        rows = [_index_row(r) for r in records]
        marks = ", ".join("?" * len(_COLUMNS))
        with self._db() as db:
            db.executemany(f"INSERT OR REPLACE INTO runs VALUES ({marks})", rows)


def single_run_record(
    result: Any,
    *,
    inputs: Mapping[str, Any],
    scores: Mapping[str, Any],
    seconds: float,
    state_path: str | None = None,
) -> dict[str, Any]:
    """A history record for one merge run outside a sweep (same format as a sweep point).

    Args:
        result: the ``MergeResult``. inputs: what identifies the adapters (bundle name and
            fingerprint, or adapter hashes). scores: split -> the bundle's ``evaluate`` output.
        seconds: wall time of the merge.
    """
    recipe = {
        "method": result.method,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in result.params.items()},
        "seed": int(result.seed),
        "inputs": dict(inputs),
        "tasks": list(result.adapter_names),
        "warm_start": None,
        "splits": sorted(scores),
    }
    return {
        "key": point_key({**recipe, "kind": "single", "at": round(time.time(), 3)}),
        "kind": "single",
        "status": "done",
        "recipe": recipe,
        "scores": dict(scores),
        "timings": {"merge_s": float(seconds)},
        "finished": {"at": time.time(), "wall_s": float(seconds)},
        **({"state": state_path} if state_path else {}),
    }


def delta_difference(a: Any, b: Any) -> dict[str, Any]:
    """``‖ΔW_a − ΔW_b‖_F`` of two merge results over their shared modules, and relative to
    ``‖ΔW_a‖_F``. Space: ΔW, computed from factors where both modules are factored.

    Raises:
        ValueError: the results share no module.
    """
    shared = [m for m in a.modules if m in b.modules]
    if not shared:
        raise ValueError("the two merges have no module in common")
    per_module = {m: _difference_sq(a.modules[m], b.modules[m]) for m in shared}
    total = sum(d for d, _ in per_module.values()) ** 0.5
    norm_a = sum(n for _, n in per_module.values()) ** 0.5
    return {
        "difference": total,
        "norm_a": norm_a,
        "relative": total / norm_a if norm_a else float("inf"),
        "per_module": {m: d**0.5 for m, (d, _) in per_module.items()},
    }


def _difference_sq(ma: Any, mb: Any) -> tuple[float, float]:
    """``(‖ΔW_a − ΔW_b‖², ‖ΔW_a‖²)`` of one module."""
    if ma.factors is not None and mb.factors is not None:
        Ba, Aa, Bb, Ab = ma.factors.B, ma.factors.A, mb.factors.B, mb.factors.A
        aa, bb = inner_product(Ba, Aa, Ba, Aa), inner_product(Bb, Ab, Bb, Ab)
        # ‖a − b‖² = ‖a‖² + ‖b‖² − 2⟨a, b⟩ in float64 (clamped: rounding can go below 0)
        return max(aa + bb - 2 * inner_product(Ba, Aa, Bb, Ab), 0.0), aa
    da, db = ma.linear_delta().double(), mb.linear_delta().double()
    return float(((da - db) ** 2).sum()), float((da**2).sum())


def _index_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    recipe = record["recipe"]
    test = (record.get("scores") or {}).get("test") or {}
    source = recipe["inputs"].get("bundle") or ",".join(
        a["name"] for a in recipe["inputs"].get("adapters", [])
    )
    return (
        record["key"], record.get("kind", "sweep"), float(record["finished"]["at"]),
        recipe["method"], source, json.dumps(recipe["tasks"]),
        json.dumps(recipe["params"], sort_keys=True), int(recipe["seed"]),
        test.get("average_normalized"),
    )  # fmt: skip


def record_bundle_run(
    folder: str | Path, result: Any, bundle: Any, scores: Mapping[str, Any], seconds: float
) -> str:
    """Record one merge of a bundle's adapters (e.g. ``merge-lab evaluate``) into ``folder``;
    a data-driven run's learned state is saved next to it. Returns the run's key."""
    history = RunHistory(folder)
    identity = {"bundle": bundle.name, "fingerprint": bundle.fingerprint()}
    record = single_run_record(result, inputs=identity, scores=scores, seconds=seconds)
    record["source"] = {"bundle": bundle.name, "adapters": []}
    if result.state:
        record["state"] = store.save_state(history.folder, record["key"], result.state)
    return history.record(record)
