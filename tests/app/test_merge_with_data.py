"""Merge page on a (fake) bundle: headline, accuracy bars, queued TARA runs, Stop, warm start."""

from __future__ import annotations

import json
import time

import pytest

from app_support import state
from app_support.state import param_key


def titles(at) -> list[str]:
    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]


def spec_titled(at, prefix: str) -> dict:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return next(s for s in specs if s["layout"]["title"]["text"].startswith(prefix))


def wait_for_run(at, timeout: float = 60.0):
    """Rerun the page (as its polling fragment would) until this session's run has finished."""
    deadline = time.monotonic() + timeout
    job = at.session_state[state.ACTIVE_RUN]
    while not job.finished_ and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.finished_, f"run still {job.status} after {timeout} s"
    at.run()
    assert not at.exception, at.exception
    return job


def test_data_free_merge_has_a_headline_against_best_ta_and_zero_shot(bundle_page):
    at = bundle_page("merge.py").run()
    assert not at.exception, at.exception
    fig = spec_titled(at, "Per-task normalised accuracy, test split")
    names = [trace["name"] for trace in fig["data"]]
    assert names[0] == "this merge (Task Arithmetic)"
    assert names[1].startswith("Task Arithmetic, best λ = ")
    assert names[2] == "zero-shot base model"
    assert fig["data"][0]["texttemplate"] == "%{y:.1f}"  # bars carry their numbers
    labels = [m.label for m in at.metric]
    assert labels[0] == "This merge · average" and labels[2] == "Zero-shot base model"
    assert labels[1].startswith("TA, best λ = ")
    merged, ta = (sum(t["y"]) / len(t["y"]) for t in fig["data"][:2])
    assert at.metric[0].value == f"{merged:.1f} %"
    assert at.metric[0].delta == f"{merged - ta:+.1f} pts vs TA"
    sentence = next(m.value for m in at.markdown if "test split" in m.value)
    assert "chosen on the validation split" in sentence and "zero-shot" in sentence


def test_single_task_weight_recovers_that_task(bundle_page):
    at = bundle_page("merge.py").run()
    at.slider(key=param_key("task_arithmetic", "scaling")).set_value(1.0).run()
    for name in ("task1", "task2"):
        at.slider(key=param_key("task_arithmetic", "weights", name)).set_value(0.0).run()
    assert not at.exception
    fig = spec_titled(at, "Per-task normalised accuracy")
    merged = fig["data"][0]
    assert merged["x"][0] == "task0"
    assert merged["y"][0] == pytest.approx(100.0)  # base + its own adapter = the labels


def tara_page(bundle_page, steps: int):
    at = bundle_page("merge.py").run()
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    at.select_slider(key=param_key("tara_b", "steps")).set_value(steps).run()
    assert not at.button(key="merge.run").disabled
    return at


@pytest.mark.slow
def test_short_tara_run_then_warm_start(bundle_page):
    at = tara_page(bundle_page, 5)
    at.button(key="merge.run").click().run()
    assert not at.exception, at.exception
    wait_for_run(at)
    assert "Learned coefficients φ per module" in titles(at)
    first = at.session_state[state.MERGE_RESULT]
    assert first.method == "tara_b" and first.params["steps"] == 5
    warm = at.session_state[state.WARM_START]
    assert [generation for generation, _ in warm.values()] == [1]
    # move a ρ slider and run again: the new run starts from the previous φ
    at.slider(key=param_key("tara_b", "rho", "task0")).set_value(0.6).run()
    at.button(key="merge.run").click().run()
    wait_for_run(at)
    assert [generation for generation, _ in warm.values()] == [2]
    second = at.session_state[state.MERGE_RESULT]
    assert second.params["rho"][0] == pytest.approx(0.6)


@pytest.mark.slow
def test_stop_ends_a_run(bundle_page):
    at = tara_page(bundle_page, 2000)
    at.button(key="merge.run").click().run()
    job = at.session_state[state.ACTIVE_RUN]
    assert not job.finished_
    assert at.button(key="merge.stop")  # the run shows a Stop button …
    words = [p.proto.text for p in at.get("progress")]  # … and its progress in words
    assert any(w.startswith(("TARA-B", "Waiting", "Starting")) for w in words), words
    assert job.key[2].count('"steps": 2000') == 1
    while job.fraction == 0 and not job.finished_:
        time.sleep(0.05)
    at.button(key="merge.stop").click().run()
    wait_for_run(at, timeout=30)
    assert job.status == "stopped"
    assert job.elapsed() < 30
    # the library returns what it had learned so far, and the page shows it as the merge
    assert job.result.run["stopped"] and job.result.run["steps_done"] < 2000
    assert at.session_state[state.MERGE_RESULT] is job.result
    note = next(s.value for s in at.success if "Stopped after" in s.value)
    assert f"Stopped after {job.result.run['steps_done']} of 2000 steps" in note


@pytest.mark.slow
def test_moving_a_setting_during_a_run_restarts_it(bundle_page):
    at = tara_page(bundle_page, 2000)
    at.button(key="merge.run").click().run()
    first = at.session_state[state.ACTIVE_RUN]
    at.slider(key=param_key("tara_b", "rho", "task0")).set_value(0.6).run()
    second = at.session_state[state.ACTIVE_RUN]
    assert second is not first and first.cancelled
    assert json.loads(second.key[2])["rho"][0] == pytest.approx(0.6)
    second.cancel()
    wait_for_run(at, timeout=30)


@pytest.mark.slow
def test_a_tradeoff_point_reopens_with_its_own_numbers(bundle_page, fake_bundle):
    from app_support.merging import opened_key
    from merging_core.merge import merge

    _, bundle = fake_bundle
    pair = bundle.adapter_set().subset([2, 0])  # the point's own task order
    point = merge(pair, "tara_b", task_data=bundle.task_data(), steps=5, rho=[0.7, 0.3])
    stale = merge(bundle.adapter_set(), "tara_b", task_data=bundle.task_data(), steps=2)
    key = opened_key(point.method, point.params, point.seed, point.adapter_names)
    pending = {"method": "tara_b", "params": dict(point.params), "seed": point.seed,
               "adapters": list(point.adapter_names), "source": "the trade-off point"}  # fmt: skip
    at = bundle_page("merge.py", **{
        state.OPENED_RESULT: {key: point}, state.PENDING_SETTINGS: pending,
        state.MERGE_RESULT: stale, state.SELECTED: ["task2", "task0"],
        state.PREVIOUS_SELECTION: {"selection": None, "count": 3},
    }).run()  # fmt: skip
    assert not at.exception, at.exception
    assert at.session_state[state.MERGE_RESULT] is point  # not the stale 3-task run
    assert [at.slider(key=param_key("tara_b", "rho", n)).value for n in ("task2", "task0")] == [
        0.7, 0.3]  # fmt: skip
    scores = bundle.evaluate(point, tasks=["task2", "task0"])["tasks"]
    fig = spec_titled(at, "Per-task normalised accuracy")
    assert fig["data"][0]["y"] == pytest.approx([100 * scores[t]["normalized"]
                                                 for t in ("task2", "task0")])  # fmt: skip
    # the narrowed working set is said out loud, with a way back to all 3 adapters
    assert any("narrowed to task2, task0" in i.value for i in at.info)
    at.button(key="workset.restore").click().run()
    assert at.session_state[state.SELECTED] is None
