"""Geometry page helpers: the cached analysis and the series its charts need.

The analysis is :func:`merging_core.geometry.analyse_geometry` (weight-only: it runs on any
adapters, no bundle needed), computed once per adapter set and options in this session.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from app_support.library import feature_attr
from app_support.session_cache import progress_bar, remember
from merging_core.adapters import AdapterSet, layer_key

ERANK_COLUMNS = {
    "erank_dw_stack": "ΔW stack (LoRA-agnostic)",
    "erank_rank1_task_sum": "Σ_t erank of each task's rank-1 stack",
    "erank_rank1_stack": "rank-1 stack of all tasks (LoRA-aware)",
}
SIGN_COLUMNS = {
    "sign_conflict_rate": "all active entries",
    "sign_conflict_rate_trimmed": "after TIES trimming (top 20 % per task)",
}
COVERAGE_COLUMNS = {
    "coverage_ratio": "coverage ratio (rank-1 stacks)",
    "ta_coverage": "Task-Arithmetic coverage",
}


def analysis(adapter_set: AdapterSet, set_key: str, *, sign_conflicts: bool) -> Any:
    """The geometry report of ``adapter_set`` (cached per session under a progress bar)."""
    analyse = feature_attr("geometry", "analyse_geometry")
    report, done = progress_bar("Analysing geometry:", show_message=False)
    try:
        return remember(
            "geometry",
            (set_key, sign_conflicts),
            lambda: analyse(adapter_set, sign_conflicts=sign_conflicts, progress=report),
            size=8,
        )
    finally:
        done()


def layer_series(
    rows: Sequence[dict[str, Any]], columns: dict[str, str], layers: Sequence[str]
) -> tuple[list[str], dict[str, list[float]]]:
    """x = chosen layers (report order); one series per column present, ``None`` -> nan."""
    picked = [r for r in rows if r["layer"] in set(layers)]
    xs = [r["layer"] for r in picked]
    series = {
        label: [_num(r.get(col)) for r in picked]
        for col, label in columns.items()
        if any(r.get(col) is not None for r in picked)
    }
    return xs, series


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def spectra_for(report: Any, module: str) -> dict[str, list[float]]:
    """Label -> σ for one module: each task, the TA sum, and the B / A factor stacks."""
    spectra = report.spectra(module)
    out = {f"task {name}": s for name, s in spectra["tasks"].items()}
    out["Task-Arithmetic sum"] = spectra["ta_sum"]
    out["B stack [B_1 … B_T]"] = spectra["B_stack"]
    out["A stack [A_1; …; A_T]"] = spectra["A_stack"]
    return out


def angle_series(report: Any, module: str) -> tuple[list[int], dict[str, list[float]]]:
    """Principal angles (degrees) between the SVD and CUR subspaces, left and right."""
    angles = report.principal_angles(module)
    count = max(len(angles["left"]), len(angles["right"]))
    pad = [math.nan] * count
    series = {
        "column space (left)": (list(angles["left"]) + pad)[:count],
        "row space (right)": (list(angles["right"]) + pad)[:count],
    }
    return list(range(1, count + 1)), series


TABLE_COLUMNS = (
    "module",
    "layer",
    "erank_task_mean",
    "erank_ta",
    "ta_coverage",
    "coverage_ratio",
    "overlap_B_mean",
    "overlap_A_mean",
    "sign_conflict_rate",
)  # fmt: skip  (the per-module table's default columns; the rest are offered on demand)


def module_type(module: str) -> str:
    """``"blocks.3.attn.q_proj"`` -> ``"attn.q_proj"``: the module's path inside its layer."""
    layer = layer_key(module)
    return module[len(layer) + 1 :] if module.startswith(layer + ".") else module


def task_erank_matrix(report: Any, layers: Sequence[str]) -> np.ndarray:
    """``(tasks, layers)``: each adapter's effective rank of ΔW_t, mean over the layer's modules.

    Space: ΔW. From the report's per-task metrics (``GeometryReport.task_layer_matrix``).
    """
    data = report.task_layer_matrix("erank")
    column = {layer: j for j, layer in enumerate(data["layers"])}
    return np.array(
        [[_num(row[column[layer]]) if layer in column else math.nan for layer in layers]
         for row in data["values"]]
    )  # fmt: skip


def coverage_matrix(
    report: Any, layers: Sequence[str], column: str = "coverage_ratio"
) -> tuple[np.ndarray, list[str]]:
    """``(module types, layers)`` of one per-module column (mean when a type repeats) and types."""
    types = list(dict.fromkeys(module_type(r["module"]) for r in report.per_module))
    values: dict[tuple[str, str], list[float]] = {}
    for row in report.per_module:
        if row.get(column) is not None:
            key = (module_type(row["module"]), row["layer"])
            values.setdefault(key, []).append(float(row[column]))
    matrix = np.array(
        [[np.mean(values[(t, layer)]) if (t, layer) in values else np.nan for layer in layers]
         for t in types]
    )  # fmt: skip
    return matrix, types


def table_rows(report: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The per-module rows restricted to ``columns`` (those the report has)."""
    return [{c: row.get(c) for c in columns if c in row} for row in report.per_module]


def column_help() -> dict[str, str]:
    """Column -> "space · meaning" from the library's column table (tooltips of the table)."""
    columns = feature_attr("geometry", "COLUMNS") or {}
    return {name: f"{space} · {meaning}" for name, (space, meaning) in columns.items()}
