"""Export: write the current merge as a PEFT adapter (+ recipe + model card) and zip it."""

from pathlib import Path

import streamlit as st

from app_support import state
from app_support.exporting import default_folder, describe_params, export, zip_folder
from app_support.library import feature, needs
from app_support.widgets import uses_seed
from app_support.workset import working_set
from merging_core.methods import get_method

ERRORS = (ValueError, KeyError, TypeError, OSError)

state.init_state()
st.title("Export")
st.caption(
    "Writes the latest merge as a PEFT LoRA adapter folder (adapter_config.json, "
    "adapter_model.safetensors), with recipe.json to replay it and a README.md model card. "
    "The write is atomic and never replaces an existing folder unless you say so."
)
if feature("export") is None:
    needs("export")
    st.stop()
result = st.session_state[state.MERGE_RESULT]
adapter_set, problem = working_set()
if result is None:
    st.info("Nothing to export yet: run a merge on the Merge page first.")
    st.stop()
if adapter_set is None or not set(result.adapter_names) <= set(adapter_set.names):
    st.error("The adapters of the last merge are no longer loaded; run the merge again.")
    st.stop()

info = get_method(result.method)
seed = f", seed {result.seed}" if uses_seed(info) else ""
st.markdown(
    f"**Merge:** {info.pretty_name} of {len(result.adapter_names)} adapters "
    f"({', '.join(result.adapter_names)}){seed}"
)
st.caption("Parameters: " + "; ".join(describe_params(result)))
with st.form("export.form", border=True):
    folder = st.text_input(
        "Target folder",
        value=default_folder(result),
        key="export.folder",
        help=f"A relative folder is created under {Path.cwd()}.",
    )
    exact = st.toggle("Keep the exact rank of each module", value=True, key="export.exact")
    rank = st.number_input(
        "Rank per module (when not exact)",
        min_value=1,
        max_value=4096,
        value=16,
        key="export.rank",
        help="Each merged module is truncated to its best rank-k approximation (SVD).",
    )
    overwrite = st.checkbox("Replace the folder if it exists", key="export.overwrite")
    submitted = st.form_submit_button("Export", type="primary")

if submitted:
    try:
        with st.spinner("Writing the adapter…"):
            report = export(
                result, adapter_set, folder, rank=None if exact else int(rank), overwrite=overwrite
            )
    except ERRORS as err:
        st.error(f"Export refused: {err}")
    else:
        st.session_state[state.EXPORT_DIR] = str(report.path)
        st.success(
            f"Wrote {report.path}: {report.num_params:,} parameters, max rank {report.max_rank}, "
            f"largest relative error {report.max_rel_error:.2e}."
        )
        st.dataframe([m.__dict__ for m in report.modules], hide_index=True, width="stretch")

last = st.session_state[state.EXPORT_DIR]
if last:
    try:
        payload = zip_folder(last)
    except OSError as err:
        st.error(f"Could not zip {last}: {err}")
    else:
        st.download_button(
            "Download the exported adapter (.zip)",
            data=payload,
            file_name=f"{last.rstrip('/').split('/')[-1]}.zip",
            mime="application/zip",
            key="export.download",
            on_click="ignore",
        )
