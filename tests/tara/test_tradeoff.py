"""Two-task sweeps (continuation, streaming, Pareto front) and preference clouds, toy context."""

from __future__ import annotations

import copy

import pytest
import torch

from merging_core.adaptive.objective import mean_entropy
from merging_core.tradeoff import (
    cloud_spread,
    continuation_order,
    preference_alignment,
    preference_cloud,
    preference_grid,
    two_task_sweep,
)


def make_evaluate(context):
    """Score = minus the full-split entropy of the dense merged encoder (higher is better)."""

    def evaluate(result, names):
        enc = copy.deepcopy(context.encoder)
        with torch.no_grad():
            for path, dw in result.deltas().items():
                enc.get_submodule(path).weight += dw
            scores = []
            for name in names:
                logits = context.logits(name, enc(context.inputs[name]))
                scores.append(-float(mean_entropy(logits)))
        return scores

    return evaluate


def test_grid_and_continuation_order():
    assert preference_grid(3) == [0.0, 0.5, 1.0]
    order = continuation_order(5)
    assert order == [(2, None), (3, 2), (4, 3), (1, 2), (0, 1)]
    with pytest.raises(ValueError, match="points"):
        preference_grid(1)


def test_sweep_streams_points_and_front_is_non_dominated(toy_adapters, toy_context):
    seen, reports = [], []
    res = two_task_sweep(
        toy_adapters, toy_context, make_evaluate(toy_context), tasks=("task0", "task2"),
        points=5, methods={"tara_b": {"lr": 0.05}, "adamerging_layer": {"variant": "tara_repo"}},
        steps=6, warm_steps=3, ta_grid=(0.2, 0.6), on_point=seen.append,
        progress=lambda f, m: reports.append((f, m)),
    )  # fmt: skip
    fractions = [f for f, _ in reports]  # weighted by work, reported inside each run too
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert len(reports) > len(res.points) and reports[0][1] == f"point 1 of {len(res.points)}"
    assert res.tasks == ("task0", "task2")
    assert list(res.points) == seen
    tara = [p for p in res.points if p.method == "tara_b"]
    assert sorted(p.t for p in tara) == preference_grid(5) and tara[0].t == 0.5
    assert {p.label for p in res.points if p.method == "task_arithmetic"} == {"λ=0.2", "λ=0.6"}
    scores = [p.scores for p in res.points]
    for i in res.front:
        assert not any(
            all(q[k] >= scores[i][k] for k in range(2))
            and any(q[k] > scores[i][k] for k in range(2))
            for q in scores
        )
    for j in set(range(len(scores))) - set(res.front):
        assert any(all(scores[i][k] >= scores[j][k] for k in range(2)) for i in res.front)
    assert set(res.method_fronts) >= {"tara_b", "adamerging_layer", "task_arithmetic"}
    # every point reopens as exactly its merge: method, params (ρ, steps) and learned state
    for p in tara:
        assert p.params["rho"] == pytest.approx((p.t, 1 - p.t)) and p.result.state
        assert p.result.method == "tara_b" and p.to_dict()["params"]["lr"] == 0.05
    for label, reason in res.skipped.items():
        assert reason, label
    import json

    json.dumps(res.to_dict())


def test_sweep_is_deterministic_and_validates_tasks(toy_adapters, toy_context):
    kw = dict(tasks=(0, 1), points=3, methods={"tara_a": {"lr": 0.05}}, steps=4, warm_steps=2,
              baselines=False, seed=3)  # fmt: skip
    ev = make_evaluate(toy_context)
    a = two_task_sweep(toy_adapters, toy_context, ev, **kw)
    b = two_task_sweep(toy_adapters, toy_context, ev, **kw)
    assert [p.scores for p in a.points] == [p.scores for p in b.points]
    with pytest.raises(ValueError, match="differ"):
        two_task_sweep(toy_adapters, toy_context, ev, tasks=(1, 1))
    with pytest.raises(KeyError, match="nope"):
        two_task_sweep(toy_adapters, toy_context, ev, tasks=("task0", "nope"))
    with pytest.raises(ValueError, match="sweep method"):
        two_task_sweep(toy_adapters, toy_context, ev, tasks=(0, 1), methods={"ties": {}})


def test_preference_moves_the_merge_towards_the_preferred_task(toy_adapters, toy_context):
    ev = make_evaluate(toy_context)
    res = two_task_sweep(
        toy_adapters, toy_context, ev, tasks=(0, 1), points=3,
        methods={"tara_b": {"lr": 0.1, "alpha": 0.1}}, steps=25, warm_steps=25, baselines=False,
    )  # fmt: skip
    by_t = {p.t: p.scores for p in res.points}
    assert by_t[1.0][0] > by_t[0.0][0] and by_t[0.0][1] > by_t[1.0][1]


def test_cloud_shapes_and_statistics(toy_adapters, toy_context):
    calls = []
    cloud = preference_cloud(
        toy_adapters, toy_context, make_evaluate(toy_context), k=4, steps=4, warm_steps=2,
        on_point=lambda m, i, s: calls.append((m, i)),
    )  # fmt: skip
    assert cloud.rhos.shape == (4, 3)
    assert all(s.shape == (4, 3) for s in cloud.scores.values())
    assert calls == [(m, i) for m in ("tara_b", "adamerging_layer") for i in range(4)]
    assert all(v >= 0 for v in cloud.spread.values())


def test_spread_and_alignment_goldens():
    scores = torch.tensor([[1.0, 3.0], [3.0, 3.0]])
    assert cloud_spread(scores) == pytest.approx((2**0.5 + 0.0) / 2)
    rhos = torch.tensor([[0.1, 0.9], [0.5, 0.5], [0.9, 0.1]])
    follows = torch.tensor([[1.0, 9.0], [5.0, 5.0], [9.0, 1.0]])
    assert preference_alignment(rhos, follows) == pytest.approx(1.0)
    assert preference_alignment(rhos, -follows) == pytest.approx(-1.0)


def test_cancelled_sweep_emits_only_finished_points(toy_adapters, toy_context):
    ticks = iter(range(1000))
    res = two_task_sweep(
        toy_adapters, toy_context, make_evaluate(toy_context), tasks=(0, 1), points=5,
        methods={"tara_a": {}}, steps=4, warm_steps=4, baselines=False,
        should_stop=lambda: next(ticks) >= 7,
    )  # fmt: skip
    assert [p.t for p in res.points] == [0.5]
