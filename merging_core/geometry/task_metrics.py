"""Per-task spectra metrics: effective rank, stable rank and norm of every adapter's ΔW.

Space: ΔW (from the singular values of each ``ΔW_t = B_t A_t``, computed once by the batched
analysis, so invariant under ``(B M, M⁻¹ A)``). :func:`merging_core.geometry.analyse_geometry`
reports one row per (module, task) and one per (layer, task); :func:`task_layer_matrix` turns the
latter into the adapters × layers matrix behind a heatmap. A layer's value is the mean over its
modules, as for every per-layer column of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from merging_core.geometry.spectra import effective_rank, stable_rank

TASK_METRICS: dict[str, str] = {
    "erank": "effective rank of ΔW_t (Roy & Vetterli, σ-based)",
    "stable_rank": "stable rank ‖ΔW_t‖_F² / σ_max² of ΔW_t",
    "norm": "‖ΔW_t‖_F",
}


def task_metric_stacks(sigmas: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per task and module, every metric of :data:`TASK_METRICS`: ``(T, G)`` float64 each.

    Args:
        sigmas: per task ``(G, r_t)`` cleaned singular values of ``ΔW_t`` for ``G`` modules.
    """
    return {
        "erank": torch.stack([effective_rank(s) for s in sigmas]),
        "stable_rank": torch.stack([stable_rank(s) for s in sigmas]),
        "norm": torch.stack([s.norm(dim=-1) for s in sigmas]),
    }


def task_rows(
    module: str, layer: str, tasks: Sequence[str], stacks: dict[str, torch.Tensor], g: int
) -> list[dict[str, Any]]:
    """Rows ``{module, layer, task, erank, stable_rank, norm}`` of module ``g`` of a batch."""
    return [
        {"module": module, "layer": layer, "task": task}
        | {key: float(stacks[key][t, g]) for key in TASK_METRICS}
        for t, task in enumerate(tasks)
    ]


def task_layer_rows(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Per (layer, task) means of the per-module task metrics, layers in first-seen order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["layer"], row["task"]), []).append(row)
    layers = list(dict.fromkeys(row["layer"] for row in rows))
    out = []
    for layer in layers:
        for task in tasks:
            members = groups.get((layer, task), [])
            if not members:
                continue
            agg = {"layer": layer, "task": task, "num_modules": len(members)}
            agg |= {key: sum(r[key] for r in members) / len(members) for key in TASK_METRICS}
            out.append(agg)
    return out


def task_layer_matrix(
    layer_rows: Sequence[dict[str, Any]], tasks: Sequence[str], metric: str = "erank"
) -> dict[str, Any]:
    """``{"tasks", "layers", "values"}`` with ``values[t][l]`` the metric of task t in layer l.

    Raises:
        ValueError: unknown ``metric``.
    """
    if metric not in TASK_METRICS:
        raise ValueError(f"metric must be one of {list(TASK_METRICS)}, got {metric!r}")
    layers = list(dict.fromkeys(row["layer"] for row in layer_rows))
    cell = {(row["task"], row["layer"]): row[metric] for row in layer_rows}
    values = [[cell.get((task, layer)) for layer in layers] for task in tasks]
    return {"tasks": list(tasks), "layers": layers, "metric": metric, "values": values}
