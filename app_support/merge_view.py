"""Views of one merge result: weight-space agreement, per-task accuracy, learned coefficients.

Each function draws one panel from a :class:`~merging_core.merge.MergeResult`; figures come from
:mod:`merging_core.figures`, evaluation from the bundle (when the adapters are its tasks). The
headline answers "did this merge help?" before any chart: its average normalised accuracy on the
test split next to Task Arithmetic at its best λ and the zero-shot base model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from app_support.evaluation import Scores, accuracy_series
from app_support.merging import learned_state, set_terms, weight_space_retention
from app_support.session_cache import per_object
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
    terms = per_object("agreement.set_terms", adapter_set, lambda: set_terms(adapter_set), size=4)
    kept = weight_space_retention(adapter_set, result, terms)
    fig = figures.task_bars(
        {
            "cosine(merged ΔW, task ΔW)": kept["cosine"],
            "effective coefficient ⟨merged, task⟩ / ‖task‖²": kept["coefficient"],
        },
        title="How much of each task's update the merge keeps (weight space, no data)",
        y_title="value",
    )
    st.plotly_chart(fig, key="merge.agreement_chart", width="stretch")


def accuracy_panel(
    adapter_set: AdapterSet, result: MergeResult, context: Any, set_key: str, headline: Any
) -> None:
    """Score the merge on the test split, then draw the headline (in ``headline``) and the bars."""
    status = st.empty()
    scores, why = accuracy_series(
        adapter_set, result, context, set_key,
        on_task=lambda task: status.caption(f"Scoring on {task}'s test data…"),
    )  # fmt: skip
    status.empty()
    if scores is None:
        headline.caption(f"Per-task accuracy {why}")
        return
    with headline:
        draw_headline(scores, len(adapter_set))
    accuracy_chart(scores.series)


def verdict(scores: Scores, tasks: int) -> str:
    """One sentence: the merge's average and its differences to the two references, in points."""
    m, ta, zs = (scores.averages[k] for k in (scores.merge, scores.ta, scores.zero_shot))

    def diff(d: float) -> str:
        return f"{abs(d):.1f} points {'above' if d >= 0 else 'below'}"

    return (
        f"On the **test split** ({tasks} tasks) this merge keeps on average **{m:.1f} %** of what "
        f"each task's own adapter reaches: {diff(m - ta)} Task Arithmetic at its best "
        f"λ = {scores.ta_lambda:g} (chosen on the validation split) and {diff(m - zs)} the "
        "zero-shot base model."
    )


def draw_headline(scores: Scores, tasks: int) -> None:
    """Three averages with their differences, and the sentence that says what they mean."""
    m, ta, zs = (scores.averages[k] for k in (scores.merge, scores.ta, scores.zero_shot))
    cols = st.columns(3)
    cols[0].metric("This merge · average", f"{m:.1f} %", delta=f"{m - ta:+.1f} pts vs TA",
                   help="Mean normalised accuracy over the tasks, test split "
                        "(100 % = each task's own adapter).")  # fmt: skip
    cols[1].metric(f"TA, best λ = {scores.ta_lambda:g}", f"{ta:.1f} %",
                   delta=f"{ta - zs:+.1f} pts vs zero-shot", delta_color="off",
                   help="Task Arithmetic with λ chosen on the validation split among "
                        "0.1 … 1.0; scored on the test split.")  # fmt: skip
    cols[2].metric("Zero-shot base model", f"{zs:.1f} %", delta=f"{m - zs:+.1f} pts (this merge)",
                   help="The base model with each task's zero-shot head, no adapter.")  # fmt: skip
    st.markdown(verdict(scores, tasks))


def accuracy_chart(series: dict[str, dict[str, float]]) -> None:
    """Per-task normalised accuracy of the merge against baselines (100 = individual adapter)."""
    fig = figures.task_bars(
        series,
        title="Per-task normalised accuracy, test split (100 % = the task's own adapter)",
        y_title="normalised accuracy (%)",
        reference_line=100.0,
        value_labels=True,
    )
    st.plotly_chart(fig, key="merge.accuracy_chart", width="stretch")


def coefficient_heatmap(result: MergeResult) -> None:
    """Heatmap of learned per-layer coefficients (e.g. TARA's φ) when the method reports them."""
    coeffs = learned_state(result)  # data-driven methods' learned state (φ / λ)
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
