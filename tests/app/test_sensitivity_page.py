"""Sensitivity page on a (fake) bundle: J heatmap, κ(J), ξ between two slider preferences."""

from __future__ import annotations

import json

import pytest
import torch

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
    assert "J on all layers" in specs(page)
    assert metric(page, "tasks × directions") == f"3 × {ref.J.shape[1]}"


def test_layer_filter_keeps_only_that_layer(page):
    page.selectbox(key="sensitivity.layer").set_value("blocks.1").run()
    assert not page.exception
    spec = specs(page)["J on blocks.1"]
    assert all(label.startswith("blocks.1.") for label in spec["data"][0]["x"])


def test_equal_preferences_are_aligned_and_moving_one_changes_xi(page):
    assert float(metric(page, "ξ(ρ₁, ρ₂)")) == pytest.approx(0.0, abs=1e-6)
    page.slider(key="sensitivity.rho2.0").set_value(0.9).run()
    assert not page.exception
    rho2 = [page.slider(key=f"sensitivity.rho2.{i}").value for i in range(3)]
    assert sum(rho2) == pytest.approx(1.0, abs=1e-3)
    xi = float(metric(page, "ξ(ρ₁, ρ₂)"))
    assert 0.0 < xi <= 1.0


def test_xi_is_one_minus_abs_cos():
    h1, h2 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert sensitivity.misalignment(h1, h2) == pytest.approx(1 - 2**-0.5)


def test_without_data_it_says_what_it_needs(app_page, adapters):
    at = app_page("sensitivity.py", adapters).run()
    assert not at.exception
    assert any("unlabeled data" in i.value for i in at.info)
