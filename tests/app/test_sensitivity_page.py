"""Sensitivity page on a (fake) bundle: J heatmap, κ(J), ξ between two slider preferences."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from apptest_support import plotly_array

from merging_core import sensitivity


def specs(at) -> dict[str, dict]:
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def metric(at, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


@pytest.fixture
def page(bundle_page):
    at = bundle_page("sensitivity.py").run()
    assert not at.exception, at.exception
    return at


def test_shows_j_and_kappa_matching_the_library(page, fake_bundle):
    _, bundle = fake_bundle
    ref = sensitivity.directional_jacobian(bundle.adapter_set(), bundle.task_data(), variant="b")
    assert metric(page, "κ(J)") == f"{sensitivity.condition_number(ref.J):.3g}"
    assert metric(page, "tasks × directions") == f"3 × {ref.J.shape[1]}"
    title = next(t for t in specs(page) if t.startswith("J on the"))
    assert title.startswith(f"J on the {min(40, ref.J.shape[1])} strongest directions")


def test_strongest_directions_sorted_and_symlog_coloured(page, fake_bundle):
    page.selectbox(key="sensitivity.layer").set_value("blocks.1").run()
    assert not page.exception
    spec = next(s for t, s in specs(page).items() if t.startswith("J on the"))
    trace = spec["data"][0]
    assert all(label.startswith("blocks.1.") for label in trace["x"])
    assert trace["colorbar"]["ticktext"]  # colour bar labelled in true units
    true = plotly_array(trace["customdata"])  # hover/true values, strongest first
    peaks = np.abs(true).max(axis=0)
    assert list(peaks) == sorted(peaks, reverse=True)


def test_per_layer_view_and_robust_anisotropy(page, fake_bundle):
    from app_support import sensitivity_view as sv

    _, bundle = fake_bundle
    ref = sensitivity.directional_jacobian(bundle.adapter_set(), bundle.task_data(), variant="b")
    heat = next(s for t, s in specs(page).items() if t.startswith("Where each task"))
    assert list(heat["data"][0]["x"]) == ["blocks.0", "blocks.1"]
    bars = next(s for t, s in specs(page).items() if t.startswith("Per-task anisotropy"))
    expected = np.percentile(ref.J.abs().double().numpy(), 95, axis=1) / np.percentile(
        ref.J.abs().double().numpy(), 5, axis=1
    )
    assert bars["data"][0]["y"] == pytest.approx(list(expected), rel=1e-6)
    assert sv.robust_anisotropy(torch.tensor([[0.0] * 20 + [1.0]])) == [float("inf")]


def test_preferences_open_apart_and_moving_one_changes_xi(page):
    xi0 = float(metric(page, "ξ(ρ₁, ρ₂)"))
    assert xi0 > 0.0  # two different preferences: not the uninformative 0.0000
    page.slider(key="sensitivity.rho2.task0").set_value(0.9).run()
    assert not page.exception
    rho2 = [page.slider(key=f"sensitivity.rho2.task{i}").value for i in range(3)]
    assert sum(rho2) == pytest.approx(1.0, abs=1e-3)
    xi = float(metric(page, "ξ(ρ₁, ρ₂)"))
    assert 0.0 <= xi <= 1.0 and xi != xi0


def test_xi_is_one_minus_abs_cos():
    h1, h2 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert sensitivity.misalignment(h1, h2) == pytest.approx(1 - 2**-0.5)


def test_without_data_it_says_what_it_needs(app_page, adapters):
    at = app_page("sensitivity.py", adapters).run()
    assert not at.exception
    assert any("unlabeled data" in i.value for i in at.info)
