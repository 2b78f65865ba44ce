"""History: the merge runs of a history or sweep folder; compare two, reopen one on Merge."""

import streamlit as st

from app_support import history_view as hv
from app_support import state

ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError)

state.init_state()
st.title("History")
st.caption(
    "Every recorded merge run (single runs and sweep points) of a folder: a sweep's output "
    "folder, or the folder single runs are recorded into. Pick two runs to compare their "
    "per-task scores and how far apart their merged updates ΔW are."
)
folder = st.text_input("History or sweep folder", value=hv.default_folder(), key=hv.FOLDER_KEY)
if not folder:
    st.info("Type a folder: a sweep's --out folder, or the one set in MERGE_LAB_HISTORY.")
    st.stop()
try:
    history, runs = hv.open_history(folder)
except ERRORS as err:
    st.error(str(err))
    st.stop()
if not runs:
    st.info("This folder holds no runs yet.")
    st.stop()
st.dataframe(hv.run_table(runs), hide_index=True, width="stretch")
by_key = {r["key"]: r for r in runs}
a, b = st.columns(2)
key_a = a.selectbox("Run A", list(by_key), format_func=lambda k: hv.run_label(by_key[k]),
                    key=hv.RUN_A_KEY)  # fmt: skip
key_b = b.selectbox("Run B", list(by_key), index=min(1, len(by_key) - 1),
                    format_func=lambda k: hv.run_label(by_key[k]), key=hv.RUN_B_KEY)  # fmt: skip
record_a, record_b = history.load(key_a), history.load(key_b)
st.plotly_chart(hv.compare_chart(record_a, record_b), width="stretch")
if st.button("Compute the ΔW difference ‖ΔW_A − ΔW_B‖", key="history.delta"):
    try:
        with st.spinner("Rebuilding both merges..."):
            diff = hv.delta_difference_of(folder, record_a, record_b)
    except ERRORS as err:
        st.error(f"Cannot compare the updates: {err}")
    else:
        c1, c2 = st.columns(2)
        c1.metric("‖ΔW_A − ΔW_B‖_F", f"{diff['difference']:.4g}")
        c2.metric("relative to ‖ΔW_A‖_F", f"{100 * diff['relative']:.2f}%")
if st.button("Open run A on the Merge page", key="history.open"):
    st.session_state[state.SELECTED] = hv.reopen(folder, record_a, source="a past run")
    st.switch_page("pages/merge.py")
