"""Sensitivity: how each task's loss reacts to each merge direction (J), κ(J), and ξ."""

import streamlit as st

from app_support import sensitivity_view as sv
from app_support import state
from app_support.library import feature, needs
from app_support.widgets import log_grid, simplex_sliders
from app_support.workset import require_task_context, require_working_set, set_key
from merging_core import figures

ERRORS = (ValueError, KeyError, TypeError)

state.init_state()
st.title("Sensitivity")
st.caption(
    "J[i, k] = ∂H_i/∂φ_k: how task i's prediction entropy on its unlabeled data changes along "
    "merge direction k, at the Task Arithmetic point (φ = 0.4). Large |J| = a direction that "
    "matters to that task. κ(J) and ξ follow the TARA paper as reconstructed (its exact "
    "definitions are not published)."
)
if feature("sensitivity") is None:
    needs("sensitivity")
    st.stop()
adapter_set = require_working_set("analysed together")
context = require_task_context(adapter_set, "This analysis needs each task's unlabeled data")

left, right = st.columns(2)
variant = left.radio(
    "Directions", list(sv.VARIANTS), format_func=sv.VARIANTS.get, key="sensitivity.variant",
    horizontal=True,
)  # fmt: skip
unit = right.toggle("Per unit-norm direction (divide by ‖S_k‖)", key="sensitivity.unit_norm")
try:
    sens = sv.jacobian(
        adapter_set, set_key(adapter_set.adapters), context, variant=variant, unit_norm=unit
    )
except ERRORS as err:
    st.error(f"Computing J failed: {err}")
    st.stop()

sensitivity = feature("sensitivity")
cols = st.columns(3)
cols[0].metric("κ(J) = σ_max / σ_min", f"{sensitivity.condition_number(sens.J):.3g}",
               help="Condition number of the tasks × directions matrix J: how unevenly the "
                    "tasks' losses can be moved by any change of φ.")  # fmt: skip
cols[1].metric("tasks × directions", f"{sens.J.shape[0]} × {sens.J.shape[1]}")
cols[2].metric("directions per layer", f"{sens.J.shape[1] // max(1, len(sv.layers_of(sens)))}")
ratios = dict(zip(sens.task_names, sv.robust_anisotropy(sens.J), strict=True))
low, high = (f"{p:g}" for p in sv.ANISOTROPY_PERCENTILES)
st.plotly_chart(
    figures.task_bars(
        {f"P{high} |J| / P{low} |J|": ratios},
        title=f"Per-task anisotropy: P{high} / P{low} of |∂H/∂φ| over directions",
        y_title="ratio (log scale)", log_y=True, value_labels=True, value_format=".2s",
    ),
    key="sensitivity.anisotropy", width="stretch",
)  # fmt: skip
st.caption(f"**Anisotropy** · {sv.ANISOTROPY_HELP}", help=sv.ANISOTROPY_HELP)
magnitude, layers = sv.layer_magnitude(sens)
st.plotly_chart(
    figures.heatmap(
        magnitude, x_labels=layers, y_labels=list(sens.task_names),
        title="Where each task is sensitive: RMS of ∂H/∂φ over each layer's directions",
        x_title="layer", y_title="task", colorbar_title="RMS ∂H/∂φ",
    ),
    key="sensitivity.layers", width="stretch",
)  # fmt: skip
layer = st.selectbox("Directions of", [sv.ALL_LAYERS, *layers], key="sensitivity.layer")
J, labels = sv.strongest(sens, layer)
st.plotly_chart(
    figures.heatmap(
        J, x_labels=labels, y_labels=list(sens.task_names),
        title=f"J on the {len(labels)} strongest directions of {layer} (strongest first)",
        x_title="direction", y_title="task", colorbar_title="∂H/∂φ", symlog=True,
        show_values=False, height=560,
    ).update_xaxes(tickangle=-45, tickfont={"size": 10}),
    key="sensitivity.j", width="stretch",
)  # fmt: skip
st.caption(
    "Colours on a symmetric log scale (zero is white; each colour-bar tick is ten times the "
    "previous), so weak and strong directions both show. Hover a cell for its value."
)


@st.fragment
def misalignment_panel() -> None:
    """Two preferences on sliders -> ξ(ρ₁, ρ₂) and their direction profiles."""
    st.subheader("Misalignment ξ between two preferences")
    names = list(sens.task_names)
    st.caption(
        "ξ = 0: the two preferences pull φ the same way (one merge serves both); ξ = 1: they "
        "pull at right angles. It opens on two preferences that favour different tasks."
    )
    rho1 = simplex_sliders("ρ₁", names, [f"sensitivity.rho1.{n}" for n in names],
                           sv.tilted(len(names), 0))  # fmt: skip
    rho2 = simplex_sliders("ρ₂", names, [f"sensitivity.rho2.{n}" for n in names],
                           sv.tilted(len(names), min(1, len(names) - 1)))  # fmt: skip
    kind = st.selectbox("Scalarisation", sv.KINDS, key="sensitivity.kind")
    alpha = st.select_slider(
        "STCH α (log scale)", log_grid(0.001, 1000.0), value=1.0, key="sensitivity.alpha"
    )
    try:
        h1 = sensitivity.preference_sensitivity(sens, rho1, kind=kind, alpha=alpha)
        h2 = sensitivity.preference_sensitivity(sens, rho2, kind=kind, alpha=alpha)
        xi = sensitivity.misalignment(h1, h2)
    except ERRORS as err:
        st.error(f"ξ is undefined here: {err}")
        return
    st.metric("ξ(ρ₁, ρ₂) = 1 − |cos(h(ρ₁), h(ρ₂))|", f"{xi:.3g}")
    profiles = sv.top_profiles(sens, h1, h2)
    fig = figures.task_bars(
        profiles, title=f"h(ρ) on the {sv.TOP_DIRECTIONS} most sensitive directions",
        y_title="normalised h", x_title="direction", height=520,
    )  # fmt: skip
    st.plotly_chart(fig.update_xaxes(tickangle=-45, tickfont={"size": 10}), key="sensitivity.h",
                    width="stretch")  # fmt: skip


misalignment_panel()
