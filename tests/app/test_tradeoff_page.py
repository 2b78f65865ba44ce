"""Trade-off page on a (fake) bundle: task choice, a short streamed sweep, point -> Merge page."""

from __future__ import annotations

import json
import time

import pytest

from app_support import state
from app_support import tradeoff_view as tv
from merging_core.tradeoff import TradeoffPoint


def tradeoff_spec(at) -> dict:
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if spec["layout"]["title"]["text"].startswith("Trade-off"):
            return spec
    raise AssertionError("no trade-off chart")


@pytest.fixture
def page(bundle_page):
    at = bundle_page("tradeoff.py").run()
    assert not at.exception, at.exception
    return at


def short_sweep(at):
    at.multiselect(key="tradeoff.methods").set_value(["tara_b"])
    at.slider(key="tradeoff.points").set_value(3)
    at.slider(key="tradeoff.steps").set_value(2)
    at.slider(key="tradeoff.warm").set_value(1)
    at.button(key="tradeoff.run").click().run()
    assert not at.exception, at.exception
    wait_for_sweep(at)
    return at


def wait_for_sweep(at, timeout: float = 120.0):
    """Rerun the page (as its polling fragment would) once this session's sweep has finished."""
    job = at.session_state[state.TRADEOFF_JOB]
    deadline = time.monotonic() + timeout
    while not job.finished_ and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.finished_, f"sweep still {job.status} after {timeout} s"
    at.run()
    assert not at.exception, at.exception
    return job


def test_empty_state_then_switch_tasks(page):
    assert tradeoff_spec(page)["layout"]["title"]["text"] == "Trade-off: task0 vs task1"
    assert any("Run sweep" in i.value for i in page.info)
    page.selectbox(key=state.TRADEOFF_TASK_B).set_value("task2").run()
    assert not page.exception
    spec = tradeoff_spec(page)
    assert spec["layout"]["title"]["text"] == "Trade-off: task0 vs task2"
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("task0")
    assert spec["layout"]["yaxis"]["title"]["text"].startswith("task2")


def test_same_task_twice_is_refused(page):
    page.selectbox(key=state.TRADEOFF_TASK_B).set_value("task0").run()
    assert any("two different tasks" in e.value for e in page.error)


@pytest.mark.slow
def test_short_sweep_plots_curve_baselines_and_front(page):
    short_sweep(page)
    spec = tradeoff_spec(page)
    names = [t["name"] for t in spec["data"]]
    assert names[0].startswith(tv.method_label("tara_b")) and len(spec["data"][0]["x"]) == 3
    hover = [row[3] for row in spec["data"][0]["customdata"]]  # steps and objective per point
    assert all(" steps" in h and "objective" in h for h in hover), hover
    assert sum("warm-started" in h for h in hover) == 2  # the middle point starts cold
    assert any(n.startswith(tv.TA_CURVE) for n in names) and "Pareto front" in names
    assert tv.method_label("ties") in names  # a baseline operating point, at its defaults
    result, _ = page.session_state[state.TRADEOFF_POINTS][("task0", "task1")]
    assert all(0.0 <= s <= 100.0 for p in result.points for s in p.scores)


@pytest.mark.slow
def test_a_sweep_runs_on_the_queue_and_stop_keeps_its_points(page):
    page.multiselect(key="tradeoff.methods").set_value(["tara_b"])
    page.slider(key="tradeoff.points").set_value(5)
    page.slider(key="tradeoff.steps").set_value(500)
    page.slider(key="tradeoff.warm").set_value(200)
    page.toggle(key="tradeoff.baselines").set_value(False)
    page.button(key="tradeoff.run").click().run()
    job = page.session_state[state.TRADEOFF_JOB]
    assert page.button(key="tradeoff.stop")  # the status panel with its Stop button
    while not job.items and not job.finished_:
        time.sleep(0.05)
    job.cancel()  # what the Stop button does
    wait_for_sweep(page)
    assert job.status == "stopped"
    result, _ = page.session_state[state.TRADEOFF_POINTS][("task0", "task1")]
    assert 1 <= len(result.points) < 5
    assert any("Stopped: showing the" in i.value for i in page.info)


@pytest.mark.slow
def test_opening_a_point_loads_it_into_merge(page):
    short_sweep(page)
    result, _ = page.session_state[state.TRADEOFF_POINTS][("task0", "task1")]
    index = next(i for i, p in enumerate(result.points) if p.method == "tara_b" and p.t == 0.5)
    page.selectbox(key="tradeoff.pick").set_value(index)
    page.button(key="tradeoff.open").click().run()
    pending = page.session_state[state.PENDING_SETTINGS]
    assert pending["method"] == "tara_b"
    assert pending["params"]["rho"] == [0.5, 0.5]
    assert page.session_state[state.SELECTED] == ["task0", "task1"]


def point(method, label, t, scores):
    return TradeoffPoint(method, label, t, scores, 0.0)


def test_layout_and_click_mapping():
    pts = [
        point("tara_b", "t=1.00", 1.0, (90.0, 50.0)),
        point("tara_b", "t=0.00", 0.0, (50.0, 90.0)),
        point("task_arithmetic", "λ=0.4", None, (70.0, 70.0)),
        point("ties", "TIES", None, (60.0, 60.0)),
    ]
    lay = tv.layout(pts, front=[0, 1, 2])
    assert lay.curves[tv.method_label("tara_b")] == [(50.0, 90.0), (90.0, 50.0)]  # sorted by t
    assert lay.labels[tv.method_label("tara_b")] == ["t=0.00", "t=1.00"]  # every point says its t
    assert lay.baselines == {"TIES": (60.0, 60.0)}
    fig = tv.chart(pts, ("a", "b"), [0, 1, 2])
    assert [t.name for t in fig.data] == [
        tv.method_label("tara_b") + " — 2 of 2 on the front",
        tv.TA_CURVE + " — 1 of 1 on the front",
        "Pareto front",
        "TIES",
    ]
    assert list(fig.data[0].text) == ["t=0.00", "t=1.00"]
    click = {"points": [{"curve_number": 0, "point_index": 1}]}
    assert tv.clicked_point(pts, [0, 1, 2], click) is pts[0]
    assert (
        tv.clicked_point(pts, [0, 1, 2], {"points": [{"curve_number": 3, "point_index": 0}]})
        is pts[3]
    )
    assert tv.clicked_point(pts, [0, 1, 2], {"points": []}) is None


def test_merge_settings_are_the_points_own():
    """A point reopens with exactly the method, parameters and seed that produced it."""
    p = TradeoffPoint(
        "adamerging_layer", "t=0.50", 0.5, (0.0, 0.0), 0.1,
        params={"variant": "tara_repo", "rho": [0.5, 0.5], "steps": 7}, seed=3,
    )  # fmt: skip
    assert tv.merge_settings(p) == (
        "adamerging_layer", {"variant": "tara_repo", "rho": [0.5, 0.5], "steps": 7}, 3
    )
