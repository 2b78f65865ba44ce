"""The entropy objective's scale: softmax(s · cos) for cosine heads, 0 = the task data's own,
anchors and objectives computed at the scale the run uses, evaluation never affected."""

from __future__ import annotations

import math

import pytest
import torch

from merging_core.adaptive.cache import AdaptiveCache, anchors_for
from merging_core.adaptive.objective import batch_entropies
from merging_core.merge import merge

from .conftest import MODULES
from .test_tara import dense_encoder


def reference_entropy(data, encoder, task, scale):
    """Independent: entropy of softmax(scale · cos(f, head)) with f from a dense-weight copy."""
    with torch.no_grad():
        f = encoder(data.inputs[task])
        cos = (f / f.norm(dim=-1, keepdim=True)) @ data.heads[task].T  # (N, C)
        p = torch.softmax(scale * cos, dim=-1)
        return float(-(p * p.log()).sum(-1).mean())


@pytest.mark.parametrize("scale", [1.0, 3.0, 14.5])
def test_logits_are_scaled_cosines_and_none_is_the_heads_own(toy_context, scale):
    for task in toy_context.task_names:
        with torch.no_grad():
            H = batch_entropies(toy_context, [task], [toy_context.inputs[task]], None, scale=scale)
        assert float(H[0]) == pytest.approx(
            reference_entropy(toy_context, toy_context.encoder, task, scale), rel=1e-5
        )
    f = toy_context.features([toy_context.inputs["task1"]])[0]
    own = toy_context.logits("task1", f)
    torch.testing.assert_close(own, toy_context.logits("task1", f, scale=toy_context.logit_scale))


def test_small_scales_approach_log_c(toy_context):
    xs = [toy_context.inputs[t][:8] for t in toy_context.task_names]
    with torch.no_grad():
        hot = batch_entropies(toy_context, toy_context.task_names, xs, None, scale=1e-4)
    log_c = torch.tensor([math.log(toy_context.heads[t].shape[0]) for t in toy_context.task_names])
    torch.testing.assert_close(hot, log_c, atol=1e-4, rtol=1e-4)


def test_anchors_follow_the_scale_and_are_cached_per_scale(toy_adapters, toy_context):
    cache = AdaptiveCache()
    by_scale = {s: anchors_for(cache, toy_adapters, toy_context, scale=s) for s in (1.0, 2.0)}
    assert anchors_for(cache, toy_adapters, toy_context, scale=1.0) == by_scale[1.0]
    for s, anchors in by_scale.items():
        for i, adapter in enumerate(toy_adapters):
            enc = dense_encoder(toy_context, {p: adapter.delta(p) for p in MODULES})
            want = reference_entropy(toy_context, enc, adapter.name, s)
            assert anchors[i] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("method", ["tara_a", "tara_b", "adamerging_layer"])
def test_objective_and_anchors_use_the_scale(toy_adapters, toy_context, method):
    scale, n = 1.5, toy_context.num_unlabeled("task0")  # one batch = the whole split
    extra = {"variant": "tara_repo"} if method.startswith("adamerging") else {}
    res = merge(toy_adapters, method, task_data=toy_context, steps=1, batch_size=n,
                entropy_scale=scale, precision="float32", **extra)  # the formula, exactly
    assert res.diagnostics["anchors"] == pytest.approx(
        list(anchors_for(None, toy_adapters, toy_context, scale=scale))
    )
    ta = dense_encoder(toy_context, merge(toy_adapters, "task_arithmetic", scaling=0.4).deltas())
    want = [reference_entropy(toy_context, ta, t, scale) for t in toy_adapters.names]
    anchors = torch.tensor(res.diagnostics["anchors"])
    gap = torch.tensor(want) - anchors
    rho = torch.full((3,), 1 / 3)
    expected = float(torch.sum(rho * gap)) if method.startswith("ada") else float(
        torch.logsumexp(rho * gap, 0))  # fmt: skip
    assert res.run["losses"][0] == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    ("method", "own"), [("tara_b", "entropy_scale"), ("adamerging_task", "logit_scale")]
)
def test_zero_means_the_task_datas_own_scale(method, own, toy_adapters, toy_context):
    value = getattr(toy_context, own)
    zero = merge(toy_adapters, method, task_data=toy_context, steps=2, entropy_scale=0.0)
    explicit = merge(toy_adapters, method, task_data=toy_context, steps=2, entropy_scale=value)
    other = merge(toy_adapters, method, task_data=toy_context, steps=2, entropy_scale=0.5)
    for path in MODULES:
        torch.testing.assert_close(zero.delta(path), explicit.delta(path))
    assert any(not torch.allclose(zero.delta(p), other.delta(p)) for p in MODULES)
