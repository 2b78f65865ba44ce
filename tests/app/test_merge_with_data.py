"""Merge page on a (fake) bundle: accuracy bars vs baselines, a short TARA run, warm start."""

from __future__ import annotations

import json

import pytest

from app_support import state
from app_support.state import param_key


def titles(at) -> list[str]:
    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]


def spec_titled(at, prefix: str) -> dict:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return next(s for s in specs if s["layout"]["title"]["text"].startswith(prefix))


def test_data_free_merge_shows_accuracy_against_baselines(bundle_page):
    at = bundle_page("merge.py").run()
    assert not at.exception, at.exception
    fig = spec_titled(at, "Per-task normalised accuracy")
    names = [trace["name"] for trace in fig["data"]]
    assert names == [
        "this merge (task_arithmetic)",
        "Task Arithmetic (λ = 0.4)",
        "zero-shot base model",
    ]
    # the default merge *is* Task Arithmetic at 0.4: both series agree
    assert fig["data"][0]["y"] == fig["data"][1]["y"]


def test_single_task_weight_recovers_that_task(bundle_page):
    at = bundle_page("merge.py").run()
    at.slider(key=param_key("task_arithmetic", "scaling")).set_value(1.0).run()
    for i in (1, 2):
        at.slider(key=param_key("task_arithmetic", "weights", i)).set_value(0.0).run()
    assert not at.exception
    fig = spec_titled(at, "Per-task normalised accuracy")
    merged = fig["data"][0]
    assert merged["x"][0] == "task0"
    assert merged["y"][0] == pytest.approx(100.0)  # base + its own adapter = the labels


@pytest.mark.slow
def test_short_tara_run_then_warm_start(bundle_page):
    at = bundle_page("merge.py").run()
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    at.slider(key=param_key("tara_b", "steps")).set_value(3).run()
    assert not at.button(key="merge.run").disabled
    at.button(key="merge.run").click().run()
    assert not at.exception, at.exception
    assert "Learned coefficients φ per module" in titles(at)
    first = at.session_state[state.MERGE_RESULT]
    assert first.method == "tara_b" and first.params["steps"] == 3
    warm = at.session_state[state.WARM_START]
    assert [generation for generation, _ in warm.values()] == [1]
    # move a ρ slider and run again: the new run starts from the previous φ
    at.slider(key=param_key("tara_b", "rho", 0)).set_value(0.6).run()
    at.button(key="merge.run").click().run()
    assert not at.exception, at.exception
    assert [generation for generation, _ in warm.values()] == [2]
    second = at.session_state[state.MERGE_RESULT]
    assert second.params["rho"][0] == pytest.approx(0.6)
