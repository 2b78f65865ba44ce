"""Merge page: registry-driven widgets, live data-free merges, what the results show."""

from __future__ import annotations

import json

import pytest

from app_support import state
from app_support.state import param_key


def chart_specs(at) -> dict[str, dict]:
    """Plotly figures on the page by their title text."""
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return {s["layout"]["title"]["text"]: s for s in specs}


def agreement(at) -> dict:
    spec = next(s for t, s in chart_specs(at).items() if t.startswith("How much of each task"))
    return spec["data"][0]


@pytest.fixture
def merge_page(app_page, adapters):
    at = app_page("merge.py", adapters).run()
    assert not at.exception, at.exception
    return at


def test_defaults_to_task_arithmetic_with_its_spec_widgets(merge_page):
    at = merge_page
    assert at.selectbox(key=state.METHOD).value == "task_arithmetic"
    assert at.slider(key=param_key("task_arithmetic", "scaling")).value == pytest.approx(0.4)
    # one weight slider per adapter, generated from the "weights" spec
    for i in range(3):
        assert at.slider(key=param_key("task_arithmetic", "weights", i)).value == 1.0


def test_live_merge_shows_agreement_and_stores_result(merge_page):
    at = merge_page
    bars = agreement(at)
    assert list(bars["x"]) == ["task0", "task1", "task2"]
    result = at.session_state[state.MERGE_RESULT]
    assert result.method == "task_arithmetic"
    assert result.params["scaling"] == pytest.approx(0.4)


def test_zero_weight_drops_that_task(merge_page):
    at = merge_page
    at.slider(key=param_key("task_arithmetic", "weights", 1)).set_value(0.0).run()
    assert not at.exception
    result = at.session_state[state.MERGE_RESULT]
    assert result.params["weights"] == (1.0, 0.0, 1.0)
    recipe = at.session_state[state.MERGE_RECIPE]
    assert recipe["params"]["weights"] == [1.0, 0.0, 1.0] or recipe["params"]["weights"] == (
        1.0,
        0.0,
        1.0,
    )


def test_changing_method_rebuilds_widgets_from_registry(merge_page):
    at = merge_page
    at.selectbox(key=state.METHOD).set_value("ties").run()
    assert not at.exception, at.exception
    assert at.slider(key=param_key("ties", "density")).value == pytest.approx(0.2)
    assert at.selectbox(key=param_key("ties", "threshold")).value == "global"
    assert at.session_state[state.MERGE_RESULT].method == "ties"


def test_data_driven_method_without_bundle_says_what_it_needs(merge_page):
    at = merge_page
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    assert not at.exception
    assert any("unlabeled task data" in i.value for i in at.info)


def test_bad_parameter_is_an_error_not_a_traceback(app_page, adapters):
    # Two adapters with the same name cannot form a set: the page must say so plainly.
    at = app_page("merge.py", [adapters[0], adapters[0]]).run()
    assert not at.exception
    assert any("unique" in e.value for e in at.error)


def test_pending_settings_load_into_widgets(app_page, adapters):
    pending = {"method": "ties", "params": {"density": 0.5}, "seed": 3}
    at = app_page("merge.py", adapters, **{state.PENDING_SETTINGS: pending}).run()
    assert not at.exception, at.exception
    assert at.selectbox(key=state.METHOD).value == "ties"
    assert at.slider(key=param_key("ties", "density")).value == pytest.approx(0.5)
    assert at.session_state[state.MERGE_RESULT].seed == 3


def rho_values(at, method: str, count: int) -> list[float]:
    return [at.slider(key=param_key(method, "rho", i)).value for i in range(count)]


def test_rho_sliders_stay_on_the_simplex(merge_page):
    at = merge_page
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    assert rho_values(at, "tara_b", 3) == pytest.approx([1 / 3] * 3)
    at.slider(key=param_key("tara_b", "rho", 0)).set_value(0.6).run()
    assert not at.exception, at.exception
    rho = rho_values(at, "tara_b", 3)
    assert rho[0] == pytest.approx(0.6)
    assert sum(rho) == pytest.approx(1.0, abs=1e-3)
    assert rho[1] == pytest.approx(rho[2], abs=1e-3)  # the others shrink in proportion
    # alpha is offered on a log scale, as its spec says
    assert at.select_slider(key=param_key("tara_b", "alpha")).value == pytest.approx(1.0)
    # without a bundle the run button is disabled rather than failing
    assert at.button(key="merge.run").disabled
