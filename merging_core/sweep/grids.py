"""Grid axes of a sweep: plain value lists, ranges, and preference vectors ρ on the simplex.

Every axis expands to a list of JSON-able values (numbers, or tuples of floats for ρ). A spec
writes an axis as one of::

    [0.1, 0.2, 0.3]                                   # explicit values
    {"start": 0.1, "stop": 0.9, "num": 9}             # evenly spaced, both ends included
    {"start": 1e-4, "stop": 1e-2, "num": 3, "log": true}
    {"line": ["mnist", "svhn"], "points": 11}         # ρ = t·e_a + (1 − t)·e_b, t = 0 … 1
    {"simplex": 4}                                    # every ρ with entries in {0, 1/4, …, 1}
    {"dirichlet": 20, "concentration": 1, "seed": 0}  # 20 draws from Dir(1, …, 1)

Preference axes need the merged task names (their order is ρ's order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from merging_core.preference import sample_preferences

PREFERENCE_KINDS = ("line", "simplex", "dirichlet")
DIGITS = 12  # values are rounded so that keys do not depend on float noise in the expansion


def expand_axis(name: str, axis: Any, *, tasks: Sequence[str]) -> list[Any]:
    """The values of one grid axis (see the module docstring for the accepted forms).

    Raises:
        ValueError: an axis in none of the accepted forms, or an empty one (named).
    """
    if isinstance(axis, list | tuple):
        values = [_plain(name, v) for v in axis]
    elif isinstance(axis, Mapping):
        kind = [k for k in PREFERENCE_KINDS if k in axis]
        if len(kind) > 1:
            raise ValueError(f"grid axis {name!r} mixes {kind}; give one of them")
        values = _preference_axis(name, kind[0], axis, tasks) if kind else _range(name, axis)
    else:
        raise ValueError(
            f"grid axis {name!r} must be a list or a mapping (start/stop/num, line, simplex, "
            f"dirichlet), got {axis!r}"
        )
    if not values:
        raise ValueError(f"grid axis {name!r} has no values")
    return values


def is_line(axis: Any) -> bool:
    """True for a two-task preference line (the axis whose neighbours can warm-start)."""
    return isinstance(axis, Mapping) and "line" in axis


def linear_values(start: float, stop: float, num: int, *, log: bool = False) -> list[float]:
    """``num`` values from ``start`` to ``stop`` inclusive (geometric spacing with ``log``).

    Raises:
        ValueError: ``num < 1``, or non-positive ends with ``log``.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if num == 1:
        return [float(start)]
    if log:
        if start <= 0 or stop <= 0:
            raise ValueError(f"a log range needs positive ends, got {start} and {stop}")
        a, b = math.log(start), math.log(stop)
        return [round(math.exp(a + (b - a) * k / (num - 1)), DIGITS) for k in range(num)]
    return [round(start + (stop - start) * k / (num - 1), DIGITS) for k in range(num)]


def line_preferences(tasks: Sequence[str], a: str, b: str, points: int) -> list[tuple[float, ...]]:
    """ρ = t on task ``a``, 1 − t on task ``b``, 0 elsewhere, for ``points`` t from 0 to 1.

    Raises:
        ValueError: unknown or equal tasks, or fewer than 2 points.
    """
    if points < 2:
        raise ValueError(f"a preference line needs points >= 2, got {points}")
    for t in (a, b):
        if t not in tasks:
            raise ValueError(f"preference line task {t!r} is not merged; tasks are {list(tasks)}")
    if a == b:
        raise ValueError(f"a preference line needs two different tasks, got {a!r} twice")
    out = []
    for k in range(points):
        t = k / (points - 1)
        rho = [0.0] * len(tasks)
        rho[tasks.index(a)], rho[tasks.index(b)] = t, 1.0 - t
        out.append(tuple(round(v, DIGITS) for v in rho))
    return out


def simplex_grid(num_tasks: int, divisions: int) -> list[tuple[float, ...]]:
    """Every ρ whose entries are multiples of ``1 / divisions`` and sum to 1 (lexicographic).

    There are ``C(divisions + num_tasks − 1, num_tasks − 1)`` of them.

    Raises:
        ValueError: ``num_tasks < 1`` or ``divisions < 1``.
    """
    if num_tasks < 1 or divisions < 1:
        raise ValueError(f"num_tasks and divisions must be >= 1, got {num_tasks}, {divisions}")
    out: list[tuple[float, ...]] = []

    def fill(prefix: list[int], left: int) -> None:
        if len(prefix) == num_tasks - 1:
            out.append(tuple(round(c / divisions, DIGITS) for c in [*prefix, left]))
            return
        for c in range(left, -1, -1):
            fill([*prefix, c], left - c)

    fill([], divisions)
    return out


def dirichlet_samples(
    num_tasks: int, count: int, *, concentration: float = 1.0, seed: int = 0
) -> list[tuple[float, ...]]:
    """``count`` preferences drawn from a symmetric Dirichlet with a seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    rows = sample_preferences(
        count, num_tasks=num_tasks, concentration=concentration, generator=gen
    )
    return [tuple(round(float(v), DIGITS) for v in row) for row in rows]


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return round(value, DIGITS)
    raise ValueError(f"grid axis {name!r} has a value that is not JSON-able: {value!r}")


def _range(name: str, axis: Mapping[str, Any]) -> list[Any]:
    unknown = set(axis) - {"start", "stop", "num", "log", "int"}
    missing = {"start", "stop", "num"} - set(axis)
    if unknown or missing:
        raise ValueError(
            f"grid axis {name!r}: a range needs start, stop, num (optional log, int); "
            f"got {dict(axis)!r}"
        )
    values = linear_values(
        float(axis["start"]), float(axis["stop"]), int(axis["num"]), log=bool(axis.get("log"))
    )
    return [int(round(v)) for v in values] if axis.get("int") else values


def _preference_axis(
    name: str, kind: str, axis: Mapping[str, Any], tasks: Sequence[str]
) -> list[tuple[float, ...]]:
    if kind == "line":
        pair = axis["line"]
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"grid axis {name!r}: line must name two tasks, got {pair!r}")
        return line_preferences(tasks, str(pair[0]), str(pair[1]), int(axis.get("points", 11)))
    if kind == "simplex":
        return simplex_grid(len(tasks), int(axis["simplex"]))
    return dirichlet_samples(
        len(tasks),
        int(axis["dirichlet"]),
        concentration=float(axis.get("concentration", 1.0)),
        seed=int(axis.get("seed", 0)),
    )
