"""Sweep specifications: what to merge, with which method, over which grid, and how to score it.

A spec is a YAML or JSON mapping::

    bundle: vision8              # a shipped bundle's name or a bundle folder (scores per task)
    # adapters: [a/, b/]         # ... or adapter folders (data-free methods, no scores)
    tasks: [mnist, svhn]         # optional: merge and score only these tasks (in this order)
    method: tara_b
    params: {alpha: 1.0, steps: 50}       # fixed parameters
    grid:                                 # the cartesian product of the axes, in this order
      rho: {line: [mnist, svhn], points: 11}
      seed: [0, 1]
    warm_start: true             # along a ρ line each point starts from its finished neighbour
    warm_steps: 20               # ... with this many steps (default: the point's own steps)
    warm_segments: 1             # split the line into this many chains (one worker each)
    splits: [test]               # splits scored per point (validation for searches)
    device: auto                 # auto (CUDA when present), cpu or cuda
    export: false                # true (exact) or a rank: also write each point as a PEFT adapter
    search: {...}                # for `merge-lab search` (see merging_core.sweep.search)

:func:`plan_points` turns a spec into groups of point recipes. A point's key is the hash of its
canonical recipe (method, validated parameters, seed, the inputs' identity, the tasks, the
warm-start parent's key and the scored splits), so the same point always lands in the same file.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merging_core.sweep.grids import expand_axis, is_line

SPLITS = ("test", "validation")
DEVICES = ("auto", "cpu", "cuda")
_KEYS = {
    "bundle",
    "adapters",
    "tasks",
    "method",
    "params",
    "grid",
    "seed",
    "warm_start",
    "warm_steps",
    "warm_segments",
    "splits",
    "device",
    "export",
    "search",
    "name",
}


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring); build with :func:`parse_spec`."""

    method: str
    bundle: str | None = None
    adapters: tuple[str, ...] = ()
    tasks: tuple[str, ...] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    warm_start: bool = False
    warm_steps: int | None = None
    warm_segments: int = 1
    splits: tuple[str, ...] = ("test",)
    device: str = "auto"
    export: bool | int = False
    search: Mapping[str, Any] | None = None
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (written next to the points as ``spec.json``)."""
        out = {k: getattr(self, k) for k in sorted(_KEYS)}
        out.update(adapters=list(self.adapters), splits=list(self.splits))
        out["tasks"] = None if self.tasks is None else list(self.tasks)
        out.update(params=dict(self.params), grid=dict(self.grid))
        return out


@dataclass(frozen=True)
class PlannedPoint:
    """One point: its key, its canonical recipe, and the key of the point it warm-starts from."""

    key: str
    recipe: Mapping[str, Any]
    parent: str | None = None


def parse_spec(data: Mapping[str, Any], *, base: Path | None = None) -> SweepSpec:
    """Check a spec mapping and return a :class:`SweepSpec`; relative paths resolve from ``base``.

    Raises:
        ValueError: an unknown key, no or two sources, a bad split/device/export (named).
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a sweep spec must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"sweep spec has unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    if "method" not in data:
        raise ValueError("sweep spec needs a method")
    if ("bundle" in data) == ("adapters" in data):
        raise ValueError("sweep spec needs exactly one of bundle (a name or folder) or adapters")
    splits = tuple(data.get("splits", ("test",)))
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"sweep spec splits must be from {list(SPLITS)}, got {list(splits)}")
    if data.get("device", "auto") not in DEVICES:
        raise ValueError(
            f"sweep spec device must be one of {list(DEVICES)}, got {data['device']!r}"
        )
    return SweepSpec(
        method=str(data["method"]),
        bundle=_resolve_bundle(data.get("bundle"), base),
        adapters=tuple(_resolve(p, base) for p in data.get("adapters", ())),
        tasks=None if data.get("tasks") is None else tuple(str(t) for t in data["tasks"]),
        params=dict(data.get("params") or {}),
        grid=dict(data.get("grid") or {}),
        seed=int(data.get("seed", 0)),
        warm_start=bool(data.get("warm_start", False)),
        warm_steps=None if data.get("warm_steps") is None else int(data["warm_steps"]),
        warm_segments=_positive("warm_segments", data.get("warm_segments", 1)),
        splits=splits,
        device=str(data.get("device", "auto")),
        export=_export(data.get("export", False)),
        search=data.get("search"),
        name=str(data.get("name", "")),
    )


def read_spec_text(text: str, *, source: str = "spec") -> dict[str, Any]:
    """Parse YAML (or JSON, which is YAML) text into a mapping.

    Raises:
        ValueError: not YAML, or not a mapping.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{source} is not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a mapping, got {type(data).__name__}")
    return data


def point_key(recipe: Mapping[str, Any]) -> str:
    """20 hex digits of the SHA-256 of the recipe's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def plan_points(
    spec: SweepSpec, *, tasks: Sequence[str], identity: Mapping[str, Any]
) -> list[list[PlannedPoint]]:
    """Groups of points in run order; a group is a warm-start chain (one worker runs it in order).

    Args:
        spec: the parsed spec.
        tasks: the merged tasks in order (ρ's order).
        identity: what identifies the inputs (bundle name + fingerprint, or adapter hashes).

    Raises:
        KeyError: unknown method. ValueError: a grid axis that is not a parameter of the method
            or ``seed``, bad values (the method's own checks), or warm starts without a ρ line.
    """
    from merging_core.methods import get_method

    info = get_method(spec.method)
    known = {p.name for p in info.params} | {"seed"}
    for name in spec.grid:
        if name not in known:
            raise ValueError(
                f"grid axis {name!r} is not a parameter of {info.name!r}; "
                f"use one of {sorted(known)}"
            )
    axes = {n: expand_axis(n, a, tasks=tasks) for n, a in spec.grid.items()}
    line = [n for n, a in spec.grid.items() if is_line(a)]
    if spec.warm_start and (not info.needs_data or len(line) != 1):
        raise ValueError(
            f"warm_start needs a data-driven method and exactly one preference line axis; "
            f"{info.name!r} needs_data={info.needs_data}, line axes {line}"
        )
    base = _Base(spec, info, tasks, identity)
    if not spec.warm_start:
        return [[base.point(combo, None)] for combo in _product(axes)]
    others = {n: v for n, v in axes.items() if n != line[0]}
    return [
        base.chain(line[0], segment, combo)
        for combo in _product(others)
        for segment in split_line(axes[line[0]], spec.warm_segments)
    ]


def split_line(values: list[Any], segments: int) -> list[list[Any]]:
    """``values`` cut into ``segments`` contiguous, near-equal runs (fewer if there are fewer
    values); each becomes its own warm-start chain, so a long line spreads over workers."""
    count = min(segments, len(values))
    bounds = [round(k * len(values) / count) for k in range(count + 1)]
    return [values[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def point_for(
    spec: SweepSpec,
    values: Mapping[str, Any],
    *,
    tasks: Sequence[str],
    identity: Mapping[str, Any],
) -> PlannedPoint:
    """The cold-start point of ``spec`` with parameters (and ``seed``) overridden by ``values``.

    Raises:
        KeyError: unknown method. ValueError: a value the method's spec refuses.
    """
    from merging_core.methods import get_method

    return _Base(spec, get_method(spec.method), tasks, identity).point(values, None)


@dataclass(frozen=True)
class _Base:
    spec: SweepSpec
    info: Any
    tasks: Sequence[str]
    identity: Mapping[str, Any]

    def point(self, combo: Mapping[str, Any], parent: str | None, *, warm: bool = False):
        values = dict(combo)
        seed = int(values.pop("seed", self.spec.seed))
        params = {**self.spec.params, **values}
        if warm and self.spec.warm_steps is not None:
            params["steps"] = self.spec.warm_steps
        checked = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in self.info.validate_params(params).items()
        }
        recipe = {
            "method": self.info.name,
            "params": checked,
            "seed": seed,
            "inputs": dict(self.identity),
            "tasks": list(self.tasks),
            "warm_start": parent,
            "splits": list(self.spec.splits),
        }
        return PlannedPoint(point_key(recipe), recipe, parent)

    def chain(self, axis: str, values: list[Any], combo: Mapping[str, Any]) -> list[PlannedPoint]:
        """Middle-out along the line: each point warm-starts from its finished neighbour."""
        out: dict[int, PlannedPoint] = {}
        mid = len(values) // 2
        order = [(mid, None)] + [(k, k - 1) for k in range(mid + 1, len(values))]
        order += [(k, k + 1) for k in range(mid - 1, -1, -1)]
        for k, parent in order:
            parent_key = None if parent is None else out[parent].key
            out[k] = self.point({**combo, axis: values[k]}, parent_key, warm=parent is not None)
        return [out[k] for k, _ in order]


def _product(axes: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _resolve(path: Any, base: Path | None) -> str:
    p = Path(str(path)).expanduser()
    return str(p if p.is_absolute() or base is None else (base / p))


def _resolve_bundle(value: Any, base: Path | None) -> str | None:
    """A bare name is a shipped bundle; anything with a path separator is a folder."""
    if value is None:
        return None
    text = str(value)
    return _resolve(text, base) if ("/" in text or text.startswith(".")) else text


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sweep spec {name} must be a whole number >= 1, got {value!r}")
    return value


def _export(value: Any) -> bool | int:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value >= 1:
        return value
    raise ValueError(f"sweep spec export must be true, false or a rank >= 1, got {value!r}")
