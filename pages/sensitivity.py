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
    "merge direction k, at the Task Arithmetic point (φ = 0.4). κ(J) and ξ follow the TARA paper "
    "as reconstructed (its exact definitions are not published)."
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
cols[0].metric("κ(J) = σ_max / σ_min", f"{sensitivity.condition_number(sens.J):.3g}")
cols[1].metric("tasks × directions", f"{sens.J.shape[0]} × {sens.J.shape[1]}")
cols[2].metric("directions per layer", f"{sens.J.shape[1] // max(1, len(sv.layers_of(sens)))}")
ratios = dict(zip(sens.task_names, sensitivity.per_task_anisotropy(sens.J), strict=True))
st.plotly_chart(
    figures.task_bars(
        {"max_k |J_ik| / min_k |J_ik|": ratios}, title="Per-task anisotropy (log scale)",
        y_title="max |J| / min |J| over directions", log_y=True,
    ),
    key="sensitivity.anisotropy", width="stretch",
)  # fmt: skip
layer = st.selectbox("Layer", [sv.ALL_LAYERS, *sv.layers_of(sens)], key="sensitivity.layer")
J, labels = sv.j_slice(sens, layer)
st.plotly_chart(
    figures.heatmap(
        J, x_labels=labels, y_labels=list(sens.task_names), title=f"J on {layer}",
        x_title="direction", y_title="task", colorbar_title="∂H/∂φ", midpoint=0.0,
    ).update_xaxes(showticklabels=J.shape[1] <= 40),
    key="sensitivity.j", width="stretch",
)  # fmt: skip


@st.fragment
def misalignment_panel() -> None:
    """Two preferences on sliders -> ξ(ρ₁, ρ₂) and their direction profiles."""
    st.subheader("Misalignment ξ between two preferences")
    names = list(sens.task_names)
    rho1 = simplex_sliders("ρ₁", names, [f"sensitivity.rho1.{i}" for i in range(len(names))])
    rho2 = simplex_sliders("ρ₂", names, [f"sensitivity.rho2.{i}" for i in range(len(names))])
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
    st.metric("ξ(ρ₁, ρ₂) = 1 − |cos(h(ρ₁), h(ρ₂))|", f"{xi:.4f}")
    profiles = sv.top_profiles(sens, h1, h2)
    fig = figures.task_bars(
        profiles, title=f"h(ρ) on the {sv.TOP_DIRECTIONS} most sensitive directions",
        y_title="normalised h", x_title="direction",
    )  # fmt: skip
    st.plotly_chart(fig.update_xaxes(tickangle=-45), key="sensitivity.h", width="stretch")


misalignment_panel()
