"""Geometry: effective ranks and coverage per layer, spectra, overlaps, SVD-vs-CUR angles."""

import streamlit as st

from app_support import geometry_view as gv
from app_support import state
from app_support.library import feature_attr, needs
from app_support.workset import require_working_set, set_key
from merging_core import figures

state.init_state()
st.title("Geometry")
st.caption(
    "Weight-only analyses of the selected adapters (no data needed): how much of the span of the "
    "task updates survives stacking, per-module spectra, and how the tasks' subspaces overlap."
)
if feature_attr("geometry", "analyse_geometry") is None:
    needs("geometry")
    st.stop()
adapter_set = require_working_set("analysed together")

signs = st.toggle(
    "Also count TIES sign conflicts (forms each dense ΔW, slower)",
    value=False,
    key="geometry.signs",
)
try:
    report = gv.analysis(adapter_set, set_key(adapter_set.adapters), sign_conflicts=signs)
except (ValueError, KeyError, TypeError) as err:
    st.error(f"The geometry analysis failed: {err}")
    st.stop()
for note in report.notes:
    st.caption(note)

layers = [row["layer"] for row in report.per_layer]
chosen = st.multiselect("Layers", layers, default=layers, key=state.GEOMETRY_LAYER)
xs, eranks = gv.layer_series(report.per_layer, gv.ERANK_COLUMNS, chosen)
st.plotly_chart(
    figures.line_chart(
        xs,
        eranks,
        title="Effective rank of the three stacks, per layer (mean over modules)",
        x_title="layer",
        y_title="effective rank",
    ),
    key="geometry.erank",
    width="stretch",
)
xs, cover = gv.layer_series(report.per_layer, gv.COVERAGE_COLUMNS, chosen)
st.plotly_chart(
    figures.line_chart(
        xs,
        cover,
        title="Coverage ratio per layer (1 = the tasks' directions do not crowd)",
        x_title="layer",
        y_title="ratio",
    ),
    key="geometry.coverage",
    width="stretch",
)

modules = [m for m in report.modules if adapter_set.layer_of(m) in set(chosen)] or report.modules
module = st.selectbox("Module", modules, key=state.GEOMETRY_MODULE)
normalise = st.toggle("Normalise each spectrum by its largest value", key="geometry.norm")
st.plotly_chart(
    figures.spectra_chart(
        gv.spectra_for(report, module), title=f"Singular values: {module}", normalise=normalise
    ),
    key="geometry.spectra",
    width="stretch",
)
overlaps = report.overlaps(module)
names = list(report.adapter_names)
left, right = st.columns(2)
for col, side, words in ((left, "B", "output (column) space"), (right, "A", "input (row) space")):
    fig = figures.heatmap(
        overlaps[side],
        x_labels=names,
        y_labels=names,
        title=f"O_{side}: {words} overlap",
        x_title="task",
        y_title="task",
        colorbar_title="overlap",
    )
    col.plotly_chart(fig, key=f"geometry.overlap_{side}", width="stretch")
ks, angles = gv.angle_series(report, module)
st.plotly_chart(
    figures.line_chart(
        ks,
        angles,
        title="Principal angles between SVD and CUR subspaces (reconstructed)",
        x_title="angle index",
        y_title="angle (degrees)",
    ),
    key="geometry.angles",
    width="stretch",
)
with st.expander("Per-module table"):
    st.dataframe(report.per_module, hide_index=True, width="stretch")
