"""Grid axes: ranges, ρ lines, simplex grids and Dirichlet samples."""

import math

import pytest

from merging_core.sweep.grids import (
    dirichlet_samples,
    expand_axis,
    line_preferences,
    linear_values,
    simplex_grid,
)

TASKS = ("a", "b", "c")


def test_range_includes_both_ends_and_log_spacing():
    assert linear_values(0.1, 0.5, 5) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert linear_values(1e-4, 1e-2, 3, log=True) == pytest.approx([1e-4, 1e-3, 1e-2])
    assert expand_axis("steps", {"start": 10, "stop": 50, "num": 3, "int": True}, tasks=TASKS) == [
        10,
        30,
        50,
    ]


def test_line_puts_t_on_the_first_task_and_zero_elsewhere():
    rhos = line_preferences(TASKS, "c", "a", 3)
    assert rhos == [(1.0, 0.0, 0.0), (0.5, 0.0, 0.5), (0.0, 0.0, 1.0)]


def test_simplex_grid_counts_and_sums():
    grid = simplex_grid(3, 4)
    assert len(grid) == math.comb(4 + 2, 2)
    assert all(abs(sum(r) - 1) < 1e-12 for r in grid)
    assert len(set(grid)) == len(grid)
    assert len(simplex_grid(8, 2)) == math.comb(2 + 7, 7)


def test_dirichlet_is_seeded_and_on_the_simplex():
    a = dirichlet_samples(3, 5, seed=1)
    assert a == dirichlet_samples(3, 5, seed=1)
    assert a != dirichlet_samples(3, 5, seed=2)
    assert all(abs(sum(r) - 1) < 1e-9 and min(r) >= 0 for r in a)


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ({"line": ["a", "zz"], "points": 3}, "'zz' is not merged"),
        ({"line": ["a", "a"], "points": 3}, "two different tasks"),
        ({"start": 0, "stop": 1}, "start, stop, num"),
        ({"simplex": 2, "line": ["a", "b"]}, "mixes"),
        ("0.1,0.2", "must be a list or a mapping"),
        ([], "has no values"),
    ],
)
def test_bad_axes_are_named(axis, message):
    with pytest.raises(ValueError, match=message):
        expand_axis("rho", axis, tasks=TASKS)
