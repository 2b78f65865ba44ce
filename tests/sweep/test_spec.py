"""Spec parsing and point planning: keys are recipe hashes, ρ lines become warm-start chains."""

import pytest

from merging_core.sweep import parse_spec, plan_points, point_key, read_spec_text

TASKS = ["mnist", "svhn", "signs"]
IDENTITY = {"bundle": "vision8", "fingerprint": "0" * 16}


def plan(**spec):
    return plan_points(parse_spec({"bundle": "vision8", **spec}), tasks=TASKS, identity=IDENTITY)


def test_keys_are_stable_and_depend_on_every_recipe_field():
    a = plan(method="task_arithmetic", grid={"scaling": [0.3]})[0][0]
    assert a.key == plan(method="task_arithmetic", params={"scaling": 0.3})[0][0].key
    assert a.key == point_key(a.recipe)
    assert a.recipe["params"] == {"scaling": 0.3, "weights": None}  # defaults filled in
    other_seed = plan(method="task_arithmetic", grid={"scaling": [0.3], "seed": [1]})[0][0]
    other_split = plan(method="task_arithmetic", params={"scaling": 0.3}, splits=["validation"])
    assert len({a.key, other_seed.key, other_split[0][0].key}) == 3


def test_grid_is_a_cartesian_product_in_axis_order():
    groups = plan(method="ties", grid={"density": [0.1, 0.2], "scaling": [1.0, 2.0, 3.0]})
    points = [g[0].recipe["params"] for g in groups]
    assert len(points) == 6
    assert [(p["density"], p["scaling"]) for p in points[:3]] == [
        (0.1, 1.0),
        (0.1, 2.0),
        (0.1, 3.0),
    ]


def test_a_preference_line_with_warm_start_is_one_middle_out_chain():
    groups = plan(
        method="tara_b",
        params={"steps": 30},
        warm_start=True,
        warm_steps=5,
        grid={"rho": {"line": ["mnist", "svhn"], "points": 5}, "seed": [0, 1]},
    )
    assert len(groups) == 2 and all(len(g) == 5 for g in groups)
    chain = groups[0]
    assert [p.recipe["params"]["rho"][0] for p in chain] == [0.5, 0.75, 1.0, 0.25, 0.0]
    assert chain[0].parent is None and chain[0].recipe["params"]["steps"] == 30
    assert chain[1].parent == chain[0].key and chain[3].parent == chain[0].key
    assert chain[2].parent == chain[1].key and chain[1].recipe["params"]["steps"] == 5
    assert chain[1].recipe["warm_start"] == chain[0].key


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "task_arithmetic", "grid": {"density": [0.1]}}, "not a parameter"),
        ({"method": "task_arithmetic", "grid": {"scaling": [9.0]}}, "scaling must be <="),
        ({"method": "task_arithmetic", "warm_start": True}, "warm_start needs"),
    ],
)
def test_bad_plans_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        plan(**spec)


def test_parse_refuses_unknown_keys_and_two_sources():
    with pytest.raises(ValueError, match="unknown key"):
        parse_spec({"bundle": "vision8", "method": "ties", "lamda": 1})
    with pytest.raises(ValueError, match="exactly one of"):
        parse_spec({"bundle": "vision8", "adapters": ["x"], "method": "ties"})
    with pytest.raises(ValueError, match="not valid YAML"):
        read_spec_text("a: [1, 2", source="s.yaml")


def test_warm_segments_split_a_long_line_into_independent_chains():
    groups = plan(
        method="tara_b",
        warm_start=True,
        warm_segments=3,
        grid={"rho": {"line": ["mnist", "svhn"], "points": 10}},
    )
    assert [len(g) for g in groups] == [3, 4, 3]
    firsts = [g[0] for g in groups]
    assert all(p.parent is None for p in firsts)
    covered = sorted(p.recipe["params"]["rho"][0] for g in groups for p in g)
    assert covered == sorted(round(k / 9, 12) for k in range(10))
    with pytest.raises(ValueError, match="warm_segments must be"):
        parse_spec({"bundle": "vision8", "method": "tara_b", "warm_segments": 0})
