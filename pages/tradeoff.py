"""Trade-off: sweep the preference between two tasks, stream the curve, load a point to Merge."""

import streamlit as st

from app_support import history_view, state
from app_support import tradeoff_view as tv
from app_support.evaluation import current_bundle
from app_support.jobs import FAILED, STOPPED
from app_support.library import feature, needs
from app_support.merging import open_result
from app_support.run_view import status_panel
from app_support.settings import request_settings
from app_support.workset import narrow_selection, require_task_context, require_working_set

state.init_state()
st.title("Trade-off")
st.caption(
    "Merge two tasks along preferences ρ = (t, 1 − t) and plot their normalised accuracies. "
    "Baselines (Task Arithmetic's λ sweep, TIES, KnOTS, Iso-C, TSV-M, Pico) are single points; "
    "the dotted staircase is the Pareto front. Click a point to open that merge on the Merge page."
)
with st.expander("Open a sweep folder", expanded=False):
    history_view.sweep_folder_panel()
if feature("tradeoff") is None:
    needs("tradeoff")
    st.stop()
adapter_set = require_working_set(
    "merged", empty="Load at least two adapters on the Adapters page first.", minimum=2
)
context = require_task_context(adapter_set, "Trade-off curves need each task's data")

names = adapter_set.names
a, b = st.columns(2)
task_a = a.selectbox("Task on the x axis", names, index=0, key=state.TRADEOFF_TASK_A)
task_b = b.selectbox("Task on the y axis", names, index=1, key=state.TRADEOFF_TASK_B)
if task_a == task_b:
    st.error("Choose two different tasks.")
    st.stop()
with st.expander("Sweep settings", expanded=False):
    options = tv.SweepOptions(
        methods=tuple(st.multiselect("Methods", tv.sweep_methods(), default=["tara_b"],
                                     format_func=tv.method_label, key="tradeoff.methods")),
        points=st.slider("Preferences t on the grid", 3, 21, 5, key="tradeoff.points"),
        steps=st.slider("Steps of the first (middle) point (0 = the method's schedule)", 0, 500,
                        tv.SweepOptions.steps, key="tradeoff.steps", help=tv.STEPS_HELP),
        warm_steps=st.slider("Steps of each warm-started point (0 = the method's schedule)", 0,
                             200, tv.SweepOptions.warm_steps, key="tradeoff.warm"),
        baselines=st.toggle("Add baseline points", value=True, key="tradeoff.baselines"),
    )  # fmt: skip
pair = (task_a, task_b)
stored = st.session_state[state.TRADEOFF_POINTS].get(pair)
run = st.button("Run sweep", type="primary", key="tradeoff.run")
chart_slot = st.empty()
job = st.session_state.get(state.TRADEOFF_JOB)
if run:
    if job is not None and not job.finished_:
        job.cancel()  # a new sweep replaces this session's running one
    job = tv.submit_sweep(adapter_set, context, current_bundle(), pair, options)
    st.session_state[state.TRADEOFF_JOB] = job
if job is not None and job.meta["pair"] == pair and not job.finished_:
    status_panel(job, stop_key="tradeoff.stop",
                 draw=lambda: st.plotly_chart(tv.chart(list(job.items), pair), width="stretch"))
    st.stop()
if job is not None and job.finished_ and not job.meta.get("seen"):
    job.meta["seen"] = True
    if job.status == FAILED:
        st.error(f"The sweep failed: {job.error}")
    elif job.result is not None:
        stored = (job.result, job.meta["options"])
        st.session_state[state.TRADEOFF_POINTS][job.meta["pair"]] = stored
        if job.status == STOPPED:
            st.info(f"Stopped: showing the {len(job.result.points)} points computed so far.")
if stored is None:
    chart_slot.plotly_chart(tv.chart([], pair), width="stretch")
    st.info("Press **Run sweep** to compute the curve for these two tasks.")
    st.stop()

result, _options = stored
event = chart_slot.plotly_chart(
    tv.chart(result.points, pair, result.front), key="tradeoff.chart", width="stretch",
    on_select="rerun", selection_mode="points",
)  # fmt: skip
for label, why in result.skipped.items():
    st.caption(f"Skipped {label}: {why}")
selection = event.selection if event else {}
picked = tv.clicked_point(result.points, result.front, selection)
if picked is not None and st.session_state.get(state.TRADEOFF_CLICK) == repr(selection):
    picked = None  # this click was already handled (the page was re-opened)
st.session_state[state.TRADEOFF_CLICK] = repr(selection)
labels = tv.point_names(result.points)
choice = st.selectbox("Or pick a point", range(len(labels)), format_func=labels.__getitem__,
                      key="tradeoff.pick")  # fmt: skip
if st.button("Open this point on the Merge page", key="tradeoff.open"):
    picked = result.points[choice]
if picked is not None:
    method, params, seed = tv.merge_settings(picked)
    open_result(picked.result)
    names = list(picked.result.adapter_names)
    request_settings(method, params, adapters=names, seed=seed, source="the trade-off point")
    narrow_selection(names)
    st.switch_page("pages/merge.py")
