"""Merge: pick a registered method, set its parameters, run, and see what the merge keeps."""

import streamlit as st

from app_support import merge_view, state
from app_support.evaluation import accuracy_series
from app_support.library import device_label
from app_support.merging import params_key, run_with_progress
from app_support.settings import apply_pending_settings
from app_support.widgets import method_widgets
from app_support.workset import require_working_set, set_key, task_context
from merging_core.methods import available_methods, get_method

ERRORS = (ValueError, KeyError, TypeError)

state.init_state()
st.title("Merge")
adapter_set = require_working_set(
    "merged", empty="Load adapters on the Adapters page first (or build the vision8 sample bundle)."
)

try:
    applied = apply_pending_settings(adapter_set.names)
except KeyError as err:
    st.error(f"Could not load the chosen merge: {err}")
    applied = None
if applied:
    st.toast(f"Loaded a {get_method(applied).pretty_name} merge from the trade-off page")

methods = {m.name: m for m in available_methods()}
method = st.selectbox(
    "Merge method",
    list(methods),
    format_func=lambda n: methods[n].pretty_name,
    key=state.METHOD,
    bind="query-params",
)
info = methods[method]
merge_view.describe_method(info)
context, no_data = task_context(adapter_set)
blocked = info.needs_data and context is None
if blocked:
    st.info(f"{info.pretty_name} learns from unlabeled task data, which is missing: {no_data}.")


@st.fragment
def settings_and_results() -> None:
    """Parameter widgets + run + results; a slider drag reruns only this fragment."""
    params = method_widgets(info, adapter_set.names)
    seed = st.number_input("seed", min_value=0, step=1, key=state.SEED, bind="query-params")
    live = not info.needs_data
    if live:
        st.caption(
            "Data-free merges re-run on every change. The URL keeps these settings: "
            "copy it to share this what-if."
        )
    else:
        st.caption(f"Runs on {device_label()}; the next run starts from this one's φ.")
    if not live and not st.button("Run merge", type="primary", key="merge.run", disabled=blocked):
        show_last()
        return
    try:
        result = run_with_progress(
            adapter_set,
            set_key(adapter_set.adapters),
            info.name,
            params,
            seed=int(seed),
            context=context if info.needs_data else None,
        )
    except ERRORS as err:
        st.error(f"{info.pretty_name} failed: {err}")
        return
    st.session_state[state.MERGE_RESULT] = result
    st.session_state[state.MERGE_RECIPE] = {
        "method": info.name,
        "params": dict(result.params),
        "seed": int(seed),
        "adapters": list(adapter_set.names),
        "params_key": params_key(result.params),
    }
    show_result(result)


def show_last() -> None:
    result = st.session_state[state.MERGE_RESULT]
    if result is None or result.method != info.name:
        st.info("Set the parameters, then press **Run merge**.")
        return
    st.caption("Showing the last run; press **Run merge** to update it.")
    show_result(result)


def show_result(result) -> None:
    # The weight-space chart is cheap and drawn first, so it follows a slider at once; the
    # test-set scores (a forward pass per task) stream in after it.
    merge_view.agreement_chart(adapter_set, result)
    status = st.empty()
    series, why = accuracy_series(
        adapter_set, result, context,
        on_task=lambda task: status.caption(f"Scoring on {task}'s test data…"),
    )  # fmt: skip
    status.empty()
    if series:
        merge_view.accuracy_chart(series)
    else:
        st.caption(f"Per-task accuracy: {why}")
    merge_view.coefficient_heatmap(result)
    merge_view.summary_table(result)


settings_and_results()
