"""Views of one merge result: weight-space agreement, per-task accuracy, learned coefficients.

Each function draws one panel from a :class:`~merging_core.merge.MergeResult`; figures come from
:mod:`merging_core.figures`, evaluation from the bundle (when the adapters are its tasks).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app_support.merging import weight_space_retention
from merging_core import figures
from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult

COEFFICIENT_KEYS = ("coefficients", "lambdas")


def describe_method(info: Any) -> None:
    """One caption line: the space, whether it needs data, and the paper link."""
    space = "factor space (exact low-rank)" if info.space == "factors" else "element-wise on ΔW"
    data = "learns from unlabeled task data" if info.needs_data else "data-free"
    recon = " · reconstructed from the paper's abstract" if info.reconstructed else ""
    st.caption(f"{info.summary}  \n{space} · {data}{recon} · [paper]({info.reference_url})")


def agreement_chart(adapter_set: AdapterSet, result: MergeResult) -> None:
    """Bars per task: cosine with, and effective coefficient of, its update (no data needed)."""
    kept = weight_space_retention(adapter_set, result)
    fig = figures.task_bars(
        {
            "cosine(merged ΔW, task ΔW)": kept["cosine"],
            "effective coefficient ⟨merged, task⟩ / ‖task‖²": kept["coefficient"],
        },
        title="How much of each task's update the merge keeps (weight space, no data)",
        y_title="value",
    )
    st.plotly_chart(fig, key="merge.agreement_chart", width="stretch")


def accuracy_chart(series: dict[str, dict[str, float]]) -> None:
    """Per-task normalised accuracy of the merge against baselines (100 = individual adapter)."""
    fig = figures.task_bars(
        series,
        title="Per-task normalised accuracy (100 % = the task's own adapter)",
        y_title="normalised accuracy (%)",
        reference_line=100.0,
    )
    st.plotly_chart(fig, key="merge.accuracy_chart", width="stretch")


def coefficient_heatmap(result: MergeResult) -> None:
    """Heatmap of learned per-layer coefficients (e.g. TARA's φ) when the method reports them."""
    coeffs = dict(result.state) if result.state else None  # data-driven methods' learned state
    if coeffs is None:
        coeffs = next(
            (result.diagnostics.get(k) for k in COEFFICIENT_KEYS if k in result.diagnostics), None
        )
    matrix, rows, cols = coefficient_matrix(coeffs)
    if matrix is None:
        return
    fig = figures.heatmap(
        matrix,
        x_labels=cols,
        y_labels=rows,
        title="Learned coefficients φ per module",
        x_title="direction",
        y_title="module",
        colorbar_title="φ",
    )
    st.plotly_chart(fig, key="merge.phi_heatmap", width="stretch")


def coefficient_matrix(coeffs: Any) -> tuple[np.ndarray | None, list[str], list[str]]:
    """(layers × directions) matrix and labels from a mapping layer -> vector, or a 2-D array."""
    if coeffs is None:
        return None, [], []
    if isinstance(coeffs, dict):
        rows = list(coeffs)
        vectors = [np.asarray(_to_numpy(coeffs[r]), dtype=float).ravel() for r in rows]
        width = max((v.size for v in vectors), default=0)
        matrix = np.full((len(rows), width), np.nan)
        for i, v in enumerate(vectors):
            matrix[i, : v.size] = v
    else:
        matrix = np.atleast_2d(np.asarray(_to_numpy(coeffs), dtype=float))
        rows = [str(i) for i in range(matrix.shape[0])]
    return matrix, [str(r) for r in rows], [str(j) for j in range(matrix.shape[1])]


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


def summary_table(result: MergeResult) -> None:
    """Per-module rank and norm of the merged update, in an expander."""
    with st.expander("Per-module summary"):
        st.dataframe(result.module_summary(), hide_index=True, width="stretch")
