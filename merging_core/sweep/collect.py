"""Collect a sweep folder: the table of points, the Pareto front over chosen tasks, the plots.

Works from the point files alone (no bundle, no adapters, no torch work), so a folder produced
on a cluster can be collected anywhere. Scores are normalised accuracies in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from merging_core import figures
from merging_core.preference import pareto_front
from merging_core.sweep import store


@dataclass(frozen=True)
class Collected:
    """A collected sweep: one row per finished point (sorted by label), the front (row indices)
    over ``front_tasks``, the parameters that vary, and the failed points' errors."""

    split: str
    tasks: tuple[str, ...]
    front_tasks: tuple[str, ...]
    varying: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]
    front: tuple[int, ...]
    failed: tuple[dict[str, str], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "tasks": list(self.tasks),
            "front_tasks": list(self.front_tasks),
            "varying": list(self.varying),
            "rows": list(self.rows),
            "front": list(self.front),
            "front_keys": [self.rows[i]["key"] for i in self.front],
            "failed": list(self.failed),
        }


def collect(
    records: Sequence[Mapping[str, Any]],
    *,
    tasks: Sequence[str] | None = None,
    split: str = "test",
    failed: Sequence[Mapping[str, Any]] = (),
) -> Collected:
    """Tabulate finished point records and find the Pareto front over ``tasks`` (default: all).

    Raises:
        ValueError: no point scored ``split``, or an unknown task (named).
    """
    scored = [r for r in records if split in (r.get("scores") or {})]
    if not scored:
        raise ValueError(f"no finished point has {split!r} scores ({len(records)} points read)")
    all_tasks = tuple(scored[0]["scores"][split]["tasks"])
    chosen = tuple(tasks) if tasks else all_tasks
    unknown = [t for t in chosen if t not in all_tasks]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the points score {list(all_tasks)}")
    varying = varying_keys([r["recipe"] for r in scored])
    rows = sorted((_row(r, split, varying) for r in scored), key=lambda row: row["sort"])
    front = pareto_front([[row["scores"][t] for t in chosen] for row in rows])
    errors = tuple({"key": f["key"], "error": f.get("error", "")} for f in failed)
    return Collected(split, all_tasks, chosen, varying, tuple(rows), tuple(front), errors)


def collect_folder(
    folder: str | Path, *, tasks: Sequence[str] | None = None, split: str = "test"
) -> Collected:
    """:func:`collect` over the point files of ``folder``."""
    folder = Path(folder)
    if not (folder / "points").is_dir():
        raise FileNotFoundError(f"{folder} is not a sweep folder (it has no points/ folder)")
    records = list(store.iter_points(folder))
    return collect(
        records, tasks=tasks, split=split, failed=list(store.iter_points(folder, failed=True))
    )


def varying_keys(recipes: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """``method``, ``seed`` and parameter names whose values differ between recipes."""
    out = []
    for name in ("method", "seed"):
        if len({repr(r[name]) for r in recipes}) > 1:
            out.append(name)
    names = sorted({k for r in recipes for k in r["params"]})
    out += [k for k in names if len({repr(r["params"].get(k)) for r in recipes}) > 1]
    return tuple(out)


def table_csv(collected: Collected) -> str:
    """The table as CSV text: key, label, varying values, per-task scores, average, timings."""
    cols = ["key", "label", *collected.varying, *collected.tasks, "average", "merge_s", "front"]
    front = set(collected.front)
    lines = [",".join(cols)]
    for i, row in enumerate(collected.rows):
        values = [row["key"], f'"{row["label"]}"']
        values += [_csv(row["values"][k]) for k in collected.varying]
        values += [f"{row['scores'][t]:.4f}" for t in collected.tasks]
        values += [f"{row['average']:.4f}", f"{row['merge_s']:.3f}", str(i in front).lower()]
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"


def figures_for(collected: Collected) -> list[go.Figure]:
    """The trade-off plane of the first two front tasks (with the front) and, per varying
    numeric parameter, the average score against it."""
    out = []
    rows = collected.rows
    if len(collected.front_tasks) >= 2:
        a, b = collected.front_tasks[:2]
        pts = [(r["scores"][a], r["scores"][b]) for r in rows]
        front = [pts[i] for i in collected.front] if len(collected.front_tasks) == 2 else []
        out.append(
            figures.tradeoff_chart(
                {"sweep points": pts},
                task_a=a,
                task_b=b,
                front=front,
                labels={"sweep points": [r["label"] for r in rows]},
            )
        )
    for name in collected.varying:
        xs = [r["values"][name] for r in rows]
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
            continue
        order = sorted(range(len(rows)), key=lambda i: xs[i])
        out.append(
            figures.line_chart(
                [xs[i] for i in order],
                {"average": [rows[i]["average"] for i in order]},
                title=f"Average normalised accuracy vs {name}",
                x_title=name,
                y_title="average normalised accuracy (%)",
            )
        )
    return out


def report_html(collected: Collected) -> str:
    """One self-contained HTML page with every figure (plotly.js embedded once)."""
    parts = ["<html><head><meta charset='utf-8'><title>sweep</title></head><body>"]
    parts.append(
        f"<h2>Sweep: {len(collected.rows)} points, front of {len(collected.front)} "
        f"over {', '.join(collected.front_tasks)} ({collected.split})</h2>"
    )
    for i, fig in enumerate(figures_for(collected)):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: str | Path, collected: Collected) -> list[Path]:
    """Write ``collect/table.csv``, ``collect/front.json`` and ``collect/report.html``."""
    out = Path(folder) / "collect"
    store.write_text(out / "table.csv", table_csv(collected))
    store.write_json(out / "front.json", collected.to_dict())
    store.write_text(out / "report.html", report_html(collected))
    return [out / "table.csv", out / "front.json", out / "report.html"]


def _row(record: Mapping[str, Any], split: str, varying: Sequence[str]) -> dict[str, Any]:
    recipe, scores = record["recipe"], record["scores"][split]
    values = {k: recipe[k] if k in ("method", "seed") else recipe["params"].get(k) for k in varying}
    label = ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or recipe["method"]
    per_task = {t: 100 * float(s["normalized"]) for t, s in scores["tasks"].items()}
    return {
        "key": record["key"],
        "label": label,
        "values": values,
        "scores": per_task,
        "average": 100 * float(scores["average_normalized"]),
        "merge_s": float(record.get("timings", {}).get("merge_s", 0.0)),
        "sort": tuple(_sortable(values[k]) for k in varying) + (record["key"],),
    }


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "(" + ",".join(f"{v:.2g}" for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, repr(value))


def _csv(value: Any) -> str:
    text = _short(value)
    return f'"{text}"' if "," in text else text
