"""Geometry: how much room each adapter takes per layer, whether they crowd, where signs clash."""

import streamlit as st

from app_support import geometry_view as gv
from app_support import state
from app_support.library import feature_attr, needs
from app_support.workset import require_working_set, set_key
from merging_core import figures

state.init_state()
st.title("Geometry")
st.caption(
    "Weight-only analyses of the selected adapters (no data needed): how many directions each "
    "adapter uses per layer (effective rank), how much of the span survives stacking them "
    "(coverage), how their subspaces overlap, and where their signs disagree."
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

layers = [row["layer"] for row in report.per_layer]
chosen = st.multiselect("Layers", layers, default=layers, key=state.GEOMETRY_LAYER) or layers
names = list(report.adapter_names)

st.plotly_chart(
    figures.heatmap(
        gv.task_erank_matrix(report, chosen), x_labels=chosen, y_labels=names,
        title="Effective rank of each adapter's update ΔW_t, per layer (mean over its modules)",
        x_title="layer", y_title="adapter", colorbar_title="erank",
    ),
    key="geometry.task_erank", width="stretch",
)  # fmt: skip
cover, types = gv.coverage_matrix(report, chosen)
st.plotly_chart(
    figures.heatmap(
        cover, x_labels=chosen, y_labels=types,
        title="Coverage ratio per layer and module type (1 = the tasks' directions do not crowd)",
        x_title="layer", y_title="module type", colorbar_title="ratio",
    ),
    key="geometry.coverage", width="stretch",
)  # fmt: skip
xs, eranks = gv.layer_series(report.per_layer, gv.ERANK_COLUMNS, chosen)
st.plotly_chart(
    figures.line_chart(
        xs, eranks, title="Effective rank of the three stacks, per layer (mean over modules)",
        x_title="layer", y_title="effective rank",
    ),
    key="geometry.erank", width="stretch",
)  # fmt: skip
if signs:
    xs, rates = gv.layer_series(report.per_layer, gv.SIGN_COLUMNS, chosen)
    st.plotly_chart(
        figures.line_chart(
            xs, {k: [100 * v for v in vs] for k, vs in rates.items()},
            title="TIES sign conflicts per layer (share of active entries whose signs disagree)",
            x_title="layer", y_title="conflicts (%)",
        ),
        key="geometry.signs_chart", width="stretch",
    )  # fmt: skip
else:
    st.caption("Sign conflicts are not computed yet: switch on the toggle above to chart them.")

st.subheader("One module in detail")
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
st.plotly_chart(
    figures.heatmap_pair(
        {"O_B: output (column) space": overlaps["B"], "O_A: input (row) space": overlaps["A"]},
        labels=names, title=f"How much the adapters' subspaces overlap: {module}",
        axis_title="adapter", colorbar_title="overlap", zrange=(0.0, 1.0),
    ),
    key="geometry.overlaps", width="stretch",
)  # fmt: skip
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

st.subheader("Per-module table")
all_columns = list(report.per_module[0]) if report.per_module else []
extra = st.multiselect(
    "More columns", [c for c in all_columns if c not in gv.TABLE_COLUMNS], key="geometry.columns",
    help="Every metric of the analysis; hover a column title for its meaning and space.",
)  # fmt: skip
columns = [c for c in gv.TABLE_COLUMNS if c in all_columns] + list(extra)
hints = gv.column_help()
st.dataframe(
    gv.table_rows(report, columns), hide_index=True, width="stretch",
    column_config={c: st.column_config.Column(c, help=hints.get(c)) for c in columns},
)  # fmt: skip
for note in report.notes:
    st.caption(note)
