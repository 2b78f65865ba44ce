"""Merge: pick a registered method, set its parameters, run, and see whether the merge helped."""

import streamlit as st

from app_support import merge_view, state
from app_support.jobs import DONE, FAILED, STOPPED
from app_support.library import device_label
from app_support.merging import (
    keep_result,
    opened_result,
    remember_warm_start,
    run_key,
    run_with_progress,
    submit_run,
)
from app_support.run_view import duration, status_panel, steps_of
from app_support.settings import apply_pending_settings
from app_support.widgets import method_from_url, method_widgets, seed_widget
from app_support.workset import require_working_set, restore_selection_button, set_key, task_context
from merging_core.methods import available_methods

ERRORS = (ValueError, KeyError, TypeError)
NOTE = "merge.note"  # one-shot message about the run that just finished (page-local key)

state.init_state()
st.title("Merge")
adapter_set = require_working_set(
    "merged", empty="Load adapters on the Adapters page first (or build the vision8 sample bundle)."
)
restore_selection_button()
try:
    applied = apply_pending_settings(adapter_set.names)
except KeyError as err:
    st.error(f"Could not load the chosen merge: {err}")
    applied = None
if applied:
    st.toast(f"Opened {applied.get('source') or 'the chosen merge'} with its own settings")

methods = {m.name: m for m in available_methods()}
method = method_from_url(methods)
info = methods[method]
merge_view.describe_method(info)
SET_KEY = set_key(adapter_set.adapters)
context, no_data = task_context(adapter_set)
blocked = info.needs_data and context is None
if blocked:
    st.info(f"{info.pretty_name} learns from unlabeled task data, which is missing: {no_data}.")


@st.fragment
def settings_and_results() -> None:
    """Parameter widgets + run + results; a slider drag reruns only this fragment."""
    params = method_widgets(info, adapter_set.names)
    seed = seed_widget(info)
    if not info.needs_data:
        st.caption(
            "Data-free merges re-run on every change. The URL keeps these settings: "
            "copy it to share this what-if."
        )
        try:
            result = run_with_progress(adapter_set, SET_KEY, info.name, params, seed=seed)
        except ERRORS as err:
            st.error(f"{info.pretty_name} failed: {err}")
            return
        keep_result(result)
        show_result(result)
        return
    data_driven(params, seed)


def data_driven(params: dict, seed: int) -> None:
    """Queue a run on Run (or when a setting moves during a run), show progress, then the result."""
    st.caption(
        f"Runs on {device_label()}, one run at a time per server; the next run starts from this "
        "one's learned coefficients. Moving a setting during a run restarts it with the new value."
    )
    key = run_key(SET_KEY, info.name, params, seed)
    job = st.session_state[state.ACTIVE_RUN]
    pressed = st.button("Run merge", type="primary", key="merge.run", disabled=blocked)
    opened = opened_result(info.name, params, seed, adapter_set.names)
    if opened is not None and not pressed:
        keep_result(opened)
        st.success("Showing the merge you opened, exactly as it was computed (its own φ).")
        show_result(opened)
        return
    restart = job is not None and not job.finished_ and job.key != key and not job.cancelled
    if pressed or restart:
        if job is not None and not job.finished_:
            job.cancel()
        job = submit_run(adapter_set, SET_KEY, info.name, params, seed=seed, task_data=context)
        st.session_state[state.ACTIVE_RUN] = job
    if job is not None and not job.finished_:
        status_panel(job)
        show_last()
        return
    if job is not None and job.key == key and job.meta.get("seen") is None:
        job.meta["seen"] = True
        finished(job)
    show_last()


def finished(job) -> None:
    """Keep a finished run's result (a stopped run keeps what it learned so far)."""
    if job.status == FAILED:
        st.error(f"{info.pretty_name} failed: {job.error}")
        return
    if job.result is None:
        st.warning(f"{info.pretty_name} was stopped before it learned anything; nothing to show.")
        return
    remember_warm_start(info.name, job.meta["set_key"], job.result, job.meta["generation"])
    keep_result(job.result)
    if job.status == STOPPED:
        done, total = steps_of(job) or (job.result.run.get("steps_done", 0), "?")
        st.session_state[NOTE] = f"Stopped after {done} of {total} steps; showing what it learned."
    elif job.status == DONE:
        st.session_state[NOTE] = f"Finished in {duration(job.elapsed())}."


def show_last() -> None:
    result = st.session_state[state.MERGE_RESULT]
    if (
        result is None
        or result.method != info.name
        or tuple(result.adapter_names) != tuple(adapter_set.names)
    ):
        st.info("Set the parameters, then press **Run merge**.")
        return
    note = st.session_state.pop(NOTE, None)
    if note:
        st.success(note)
    else:
        st.caption("Showing the last run; press **Run merge** to update it.")
    show_result(result)


def show_result(result) -> None:
    # The headline goes on top but is filled last: the weight-space chart is cheap and drawn
    # first, so it follows a slider at once; the test-split scores stream in after it.
    headline = st.container()
    merge_view.agreement_chart(adapter_set, result)
    merge_view.accuracy_panel(adapter_set, result, context, SET_KEY, headline)
    merge_view.coefficient_heatmap(result)
    merge_view.summary_table(result)


settings_and_results()
