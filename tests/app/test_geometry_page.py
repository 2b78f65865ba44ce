"""Geometry page: per-adapter effective rank per layer, coverage per module type, the table."""

from __future__ import annotations

import json

import pytest
import torch
from apptest_support import plotly_array

from app_support import geometry_view as gv
from merging_core.adapters import layer_key
from merging_core.geometry.spectra import effective_rank


def spec_titled(at, prefix: str) -> dict:
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    return next(s for s in specs if s["layout"]["title"]["text"].startswith(prefix))


@pytest.fixture
def page(app_page, adapters):
    at = app_page("geometry.py", adapters).run()
    assert not at.exception, at.exception
    return at


def test_effective_rank_per_adapter_and_layer(page, adapters):
    trace = spec_titled(page, "Effective rank of each adapter")["data"][0]
    assert list(trace["y"]) == ["task0", "task1", "task2"]
    assert list(trace["x"]) == ["blocks.0", "blocks.1"]
    # task1 on blocks.1: mean over its two modules of erank(σ(ΔW)), computed independently
    mods = [m for m in adapters[1].modules if layer_key(m) == "blocks.1"]
    expected = sum(
        float(effective_rank(torch.linalg.svdvals(adapters[1].delta(m).double()))) for m in mods
    ) / len(mods)
    assert plotly_array(trace["z"])[1][1] == pytest.approx(expected, rel=1e-4)


def test_coverage_per_module_type_and_sign_chart_on_demand(page):
    trace = spec_titled(page, "Coverage ratio per layer and module type")["data"][0]
    assert list(trace["y"]) == ["attn.q", "attn.v"]
    assert not any("sign conflicts per layer" in t for t in _titles(page))
    page.toggle(key="geometry.signs").set_value(True).run()
    assert not page.exception, page.exception
    assert any("sign conflicts per layer" in t for t in _titles(page))


def test_table_shows_chosen_columns_and_the_rest_on_demand(page):
    table = page.dataframe[0].value
    assert list(table.columns) == [c for c in gv.TABLE_COLUMNS if c in table.columns]
    assert "erank_B_stack" not in table.columns
    page.multiselect(key="geometry.columns").set_value(["erank_B_stack"]).run()
    assert "erank_B_stack" in page.dataframe[0].value.columns


def _titles(at) -> list[str]:
    return [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]
