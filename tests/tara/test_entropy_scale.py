"""``entropy_scale``: the logit scale inside the entropy objective and the anchors.

At scale ``s`` every entropy the data-driven merges see must be ``H(softmax(s · cos))`` with
``cos = normalize(features) @ headᵀ``; ``None`` keeps the bundle's own ``logit_scale``.
"""

from __future__ import annotations

import math

import pytest
import torch

from merging_core.directional import (
    batch_entropies,
    compute_anchors,
    entropy_logits,
    task_entropy,
)
from merging_core.merge import merge
from merging_core.methods import get_method
from merging_core.methods.adamerging import run_adamerging
from merging_core.methods.tara import run_tara

from .test_tara import dense_encoder


def reference_entropy(context, encoder, task, scale):
    """Mean entropy of softmax(scale · cos), written from the formula."""
    with torch.no_grad():
        f = encoder(context.unlabeled[task])
        cos = (f / f.norm(dim=-1, keepdim=True)) @ context.heads[task].T  # (N, C)
        p = torch.softmax(scale * cos.double(), dim=-1)
        return float(-(p * p.log()).sum(dim=-1).mean())


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0, 25.0])
def test_entropy_is_that_of_softmax_of_scaled_cosines(toy_context, scale):
    for t in range(len(toy_context.task_names)):
        with torch.no_grad():
            got = float(task_entropy(toy_context, t, toy_context.unlabeled[t], scale=scale))
        want = reference_entropy(toy_context, toy_context.encoder, t, scale)
        assert got == pytest.approx(want, rel=1e-5)


def test_none_is_the_bundle_scale_and_small_scales_approach_log_c(toy_context):
    f = toy_context.encoder(toy_context.unlabeled[1]).detach()
    bundle = entropy_logits(toy_context, 1, f, None)
    torch.testing.assert_close(bundle, toy_context.logits(1, f))
    torch.testing.assert_close(entropy_logits(toy_context, 1, f, toy_context.logit_scale), bundle)
    xs = [toy_context.unlabeled[t][:8] for t in range(3)]
    with torch.no_grad():
        hot = batch_entropies(toy_context, [0, 1, 2], xs, scale=1e-4)
        cold = batch_entropies(toy_context, [0, 1, 2], xs)
    log_c = torch.tensor([math.log(h.shape[0]) for h in toy_context.heads])
    torch.testing.assert_close(hot, log_c, rtol=0, atol=1e-6)
    assert bool((cold < hot).all())


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_non_positive_scale_is_a_value_error(toy_context, scale):
    with pytest.raises(ValueError, match="entropy_scale"):
        task_entropy(toy_context, 0, toy_context.unlabeled[0], scale=scale)


def test_anchors_follow_the_scale_and_are_cached_per_scale(toy_adapters, toy_context):
    by_scale = {s: compute_anchors(toy_adapters, toy_context, scale=s) for s in (1.0, None, 2.0)}
    assert compute_anchors(toy_adapters, toy_context, scale=1.0) == by_scale[1.0]
    assert by_scale[None] == compute_anchors(toy_adapters, toy_context)
    for s, anchors in by_scale.items():
        for i, adapter in enumerate(toy_adapters.adapters):
            single = merge(toy_adapters.subset([i]), "task_arithmetic", scaling=1.0)
            enc = dense_encoder(toy_context, single.deltas())
            scale = toy_context.logit_scale if s is None else s
            want = reference_entropy(toy_context, enc, toy_context.task_index(adapter.name), scale)
            assert anchors[i] == pytest.approx(want, rel=1e-5)
    assert len({by_scale[1.0], by_scale[2.0], by_scale[None]}) == 3


@pytest.mark.parametrize("method", ["tara_a", "tara_b", "adamerging"])
def test_objective_and_anchors_use_the_scale(toy_adapters, toy_context, method):
    scale, n = 1.5, toy_context.unlabeled[0].shape[0]  # one batch = the whole split
    if method == "adamerging":
        run = run_adamerging(
            toy_adapters, toy_context, variant="tara_repo", steps=1, batch_size=n,
            entropy_scale=scale,
        )  # fmt: skip
    else:
        variant = method[-1]
        run = run_tara(
            toy_adapters, toy_context, variant=variant, steps=1, batch_size=n, entropy_scale=scale
        )
    assert run.anchors == compute_anchors(toy_adapters, toy_context, scale=scale)
    assert run.result.params["entropy_scale"] == scale
    ta = dense_encoder(toy_context, merge(toy_adapters, "task_arithmetic", scaling=0.4).deltas())
    want = [reference_entropy(toy_context, ta, t, scale) for t in range(3)]
    assert run.entropies[0] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["tara_a", "tara_b"])
def test_registered_tara_param(name):
    param = get_method(name).param("entropy_scale")
    assert (param.kind, param.low, param.high, param.log) == ("float", 0.1, 100.0, True)
    assert param.default == 3.0


@pytest.mark.parametrize("name", ["adamerging_task", "adamerging_layer"])
def test_registered_adamerging_param_zero_means_the_bundle_scale(name, toy_adapters, toy_context):
    info = get_method(name)
    assert (info.param("entropy_scale").default, info.param("entropy_scale").low) == (0.0, 0.0)
    results = {
        s: merge(toy_adapters, name, context=toy_context, steps=2, entropy_scale=s)
        for s in (0.0, toy_context.logit_scale, 1.0)
    }
    for path in results[0.0].modules:
        bundle = results[0.0].modules[path].delta()
        torch.testing.assert_close(bundle, results[toy_context.logit_scale].modules[path].delta())
        assert not torch.allclose(bundle, results[1.0].modules[path].delta())
