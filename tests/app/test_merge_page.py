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
    for name in ("task0", "task1", "task2"):
        assert at.slider(key=param_key("task_arithmetic", "weights", name)).value == 1.0


def test_live_merge_shows_agreement_and_stores_result(merge_page):
    at = merge_page
    bars = agreement(at)
    assert list(bars["x"]) == ["task0", "task1", "task2"]
    result = at.session_state[state.MERGE_RESULT]
    assert result.method == "task_arithmetic"
    assert result.params["scaling"] == pytest.approx(0.4)


def test_zero_weight_drops_that_task(merge_page):
    at = merge_page
    at.slider(key=param_key("task_arithmetic", "weights", "task1")).set_value(0.0).run()
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
    pending = {"method": "dare", "params": {"drop_rate": 0.5}, "seed": 3}
    at = app_page("merge.py", adapters, **{state.PENDING_SETTINGS: pending}).run()
    assert not at.exception, at.exception
    assert at.selectbox(key=state.METHOD).value == "dare"
    assert at.slider(key=param_key("dare", "drop_rate")).value == pytest.approx(0.5)
    assert at.session_state[state.MERGE_RESULT].seed == 3


def test_pending_weights_land_on_the_named_adapters(app_page, adapters):
    # A point over (task2, task0) with weights (0.3, 0.7): each value goes to its adapter by
    # name; task1, which the point does not name, gets the default 1, not a stale 0.99.
    pending = {"method": "task_arithmetic", "adapters": ["task2", "task0"],
               "params": {"scaling": 0.2, "weights": [0.3, 0.7]}}  # fmt: skip
    at = app_page("merge.py", adapters, **{param_key("task_arithmetic", "weights", "task1"): 0.99,
                                           state.PENDING_SETTINGS: pending}).run()  # fmt: skip
    assert not at.exception, at.exception
    result = at.session_state[state.MERGE_RESULT]
    assert dict(zip(result.adapter_names, result.params["weights"], strict=True)) == {
        "task0": 0.7, "task1": 1.0, "task2": 0.3}  # fmt: skip


def test_weights_follow_adapter_names_across_selection_changes(app_page, adapters):
    at = app_page("merge.py", adapters).run()
    at.slider(key=param_key("task_arithmetic", "weights", "task1")).set_value(0.99).run()
    # task0 leaves the working set: task1 is now 1st, task2 2nd; 0.99 must stay with task1
    at.session_state[state.SELECTED] = ["task1", "task2"]
    at.run()
    assert not at.exception, at.exception
    result = at.session_state[state.MERGE_RESULT]
    assert result.adapter_names == ("task1", "task2")
    assert result.params["weights"] == (0.99, 1.0)
    # and back with a new order: still task1's own value, nobody else gets it
    at.session_state[state.SELECTED] = ["task2", "task0", "task1"]
    at.run()
    result = at.session_state[state.MERGE_RESULT]
    weights = dict(zip(result.adapter_names, result.params["weights"], strict=True))
    assert weights == {"task2": 1.0, "task0": 1.0, "task1": 0.99}


def test_share_link_carries_the_method_id(merge_page):
    at = merge_page
    at.selectbox(key=state.METHOD).set_value("tsv_m").run()
    assert at.query_params[state.METHOD] == "tsv_m"


def test_seed_box_only_for_methods_that_use_it(merge_page):
    at = merge_page
    assert not at.number_input  # Task Arithmetic is deterministic
    at.selectbox(key=state.METHOD).set_value("dare").run()
    assert at.number_input(key=state.SEED).value == 0


def test_entropy_scale_default_is_the_librarys(merge_page):
    from merging_core.methods import get_method

    at = merge_page
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    shown = at.slider(key=param_key("tara_b", "entropy_scale")).value
    assert shown == get_method("tara_b").param("entropy_scale").default


def rho_values(at, method: str, count: int) -> list[float]:
    names = [f"task{i}" for i in range(count)]
    return [at.slider(key=param_key(method, "rho", n)).value for n in names]


def test_rho_sliders_stay_on_the_simplex(merge_page):
    at = merge_page
    at.selectbox(key=state.METHOD).set_value("tara_b").run()
    assert rho_values(at, "tara_b", 3) == pytest.approx([1 / 3] * 3)
    at.slider(key=param_key("tara_b", "rho", "task0")).set_value(0.6).run()
    assert not at.exception, at.exception
    rho = rho_values(at, "tara_b", 3)
    assert rho[0] == pytest.approx(0.6)
    assert sum(rho) == pytest.approx(1.0, abs=1e-3)
    assert rho[1] == pytest.approx(rho[2], abs=1e-3)  # the others shrink in proportion
    # alpha is offered on a log scale, as its spec says
    assert at.select_slider(key=param_key("tara_b", "alpha")).value == pytest.approx(1.0)
    # without a bundle the run button is disabled rather than failing
    assert at.button(key="merge.run").disabled
