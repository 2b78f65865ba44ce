"""Two-task trade-off sweeps and preference-sensitivity clouds for preference-driven merges.

Space: factors (every merge here is exact factors; scoring is the caller's ``evaluate``).
Every merge goes through :func:`merging_core.merge.merge` with a registered method id:

* :func:`two_task_sweep`: merge only adapters ``i`` and ``j``, sweep ``ρ = (t, 1 − t)`` over a
  grid for each preference-driven method (any registered data-driven method with a ``rho``
  parameter; by default TARA-A, TARA-B and layer-wise AdaMerging in the TARA repository's
  ρ-weighted variant), each point warm-started from its finished neighbour (continuation,
  middle-out), plus the operating points of Task Arithmetic's λ grid and of every method tagged
  ``tradeoff-baseline`` at its defaults. Each point carries its method, parameters, seed and the
  merge itself, so a view can reopen exactly that merge. Points stream through ``on_point``.
* :func:`preference_cloud`: ``K`` Dirichlet preferences over all tasks -> per-task score clouds
  (the paper's preference-sensitivity figure, reconstructed: its exact protocol is not known).

``evaluate(result, task_names) -> scores`` is supplied by the caller (e.g. a bundle's normalised
test accuracy), so this module never sees labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult, Progress, merge, report_progress
from merging_core.methods import available_methods, get_method
from merging_core.preference import pareto_front, sample_preferences

Evaluate = Callable[[MergeResult, Sequence[str]], Sequence[float]]
ShouldStop = Callable[[], bool]
DEFAULT_SWEEP: Mapping[str, Mapping[str, Any]] = {
    "tara_a": {},
    "tara_b": {},
    "adamerging_layer": {"variant": "tara_repo"},
}
BASELINE_TAG = "tradeoff-baseline"
TA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))
# A sweep's own schedule, not the methods' defaults (those follow their official code): with the
# official rule on a small validation split (5 epochs × 8 batches = 40 steps on vision8), AdamW at
# lr 1e-3 moves each coefficient by at most 0.04, so every preference lands on the initial merge
# and the curve is a cluster. The middle point gets the official schedule of a full-size split
# (5 epochs × 50 batches = 250) and each continuation point 100 more, so points can separate.
SWEEP_STEPS = 250
SWEEP_WARM_STEPS = 100
DEFAULT_STEPS_GUESS = 40  # progress weight of a run on the method's own schedule (vision8's)
BASELINE_WEIGHT = 2  # progress weight of a data-free point (a merge and one evaluation)


@dataclass(frozen=True)
class TradeoffPoint:
    """One operating point: ``scores[k]`` is the score on ``tasks[k]``.

    Attributes:
        method: the registered method id. params: its validated parameters (JSON-able) and
            seed: the seed, i.e. what ``merge()`` needs to redo it (plus ``warm_start``).
        label: display label (``"t=0.30"``, ``"λ=0.4"``, a pretty name).
        t: preference on the first task (None for baselines). scores: per task.
        seconds: wall time to produce the merge (not the evaluation).
        result: the merge itself (learned state included); not part of :meth:`to_dict`.
    """

    method: str
    label: str
    t: float | None
    scores: tuple[float, ...]
    seconds: float
    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    result: MergeResult | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "label": self.label, "t": self.t, "scores": list(self.scores),
            "seconds": self.seconds, "params": _jsonable(self.params), "seed": self.seed,
        }  # fmt: skip


@dataclass(frozen=True)
class TradeoffResult:
    """A two-task sweep: all points, the global Pareto front, per-method fronts, skips."""

    tasks: tuple[str, ...]
    points: tuple[TradeoffPoint, ...]
    front: tuple[int, ...]
    method_fronts: Mapping[str, tuple[int, ...]]
    skipped: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "tasks": list(self.tasks),
            "points": [p.to_dict() for p in self.points],
            "front": list(self.front),
            "method_fronts": {k: list(v) for k, v in self.method_fronts.items()},
            "skipped": dict(self.skipped),
        }


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def preference_grid(points: int) -> list[float]:
    """``points`` evenly spaced ``t`` in ``[0, 1]`` (inclusive); ``ValueError`` below 2."""
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    return [k / (points - 1) for k in range(points)]


def continuation_order(count: int) -> list[tuple[int, int | None]]:
    """Middle-out visiting order as ``(index, warm-start neighbour or None)``."""
    mid = count // 2
    order: list[tuple[int, int | None]] = [(mid, None)]
    order += [(k, k - 1) for k in range(mid + 1, count)]
    order += [(k, k + 1) for k in range(mid - 1, -1, -1)]
    return order


def preference_methods() -> list[str]:
    """Registered data-driven methods that take a preference ``rho`` (sweepable)."""
    return [m.name for m in available_methods(needs_data=True) if "rho" in m.param_names]


def baseline_methods() -> list[str]:
    """Registered methods tagged ``tradeoff-baseline`` (drawn at their defaults)."""
    return [m.name for m in available_methods(needs_data=False) if BASELINE_TAG in m.tags]


def _check_sweep(methods: Mapping[str, Mapping[str, Any]]) -> None:
    allowed = preference_methods()
    for m in methods:
        if m not in allowed:
            raise ValueError(f"sweep method must be one of {allowed}, got {m!r}")


def two_task_sweep(
    adapter_set: AdapterSet,
    task_data: Any,
    evaluate: Evaluate,
    *,
    tasks: Sequence[str | int],
    points: int = 11,
    methods: Mapping[str, Mapping[str, Any]] = DEFAULT_SWEEP,
    steps: int = SWEEP_STEPS,
    warm_steps: int = SWEEP_WARM_STEPS,
    baselines: bool = True,
    ta_grid: Sequence[float] = TA_GRID,
    seed: int = 0,
    cache: Any = None,
    on_point: Callable[[TradeoffPoint], None] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TradeoffResult:
    """Sweep ``ρ = (t, 1 − t)`` for two tasks; see the module docstring.

    Args:
        adapter_set: all adapters; only the two named by ``tasks`` are merged.
        task_data: the bundle's task data. evaluate: ``(result, task_names) -> 2 scores``.
        tasks: two adapter names or indices. points: grid size (11 = steps of 0.1).
        methods: registered method id -> fixed parameters (``lr``, ``alpha``, ``variant`` ...).
        steps: ``steps`` of the first (middle) point; warm_steps: of each continuation point
            (0 = the method's default schedule; see :data:`SWEEP_STEPS` for the defaults' reason).
        baselines: add Task Arithmetic's λ grid and the tagged baselines. seed: every run's seed.
        cache: an ``AdaptiveCache`` shared by all runs. on_point: called with each scored point.
        progress: ``callback(fraction, message)``. should_stop: polled between runs and steps.
    """
    _check_sweep(methods)
    pair = adapter_set.subset(_pair_indices(adapter_set, tasks))
    grid = preference_grid(points)
    specs = _baseline_specs(ta_grid) if baselines else []
    jobs = len(methods) * len(grid) + len(specs)
    # progress counts work, not points: a learned point weighs its steps, a baseline a few
    work = [steps or DEFAULT_STEPS_GUESS] + [warm_steps or DEFAULT_STEPS_GUESS] * (len(grid) - 1)
    total = len(methods) * sum(work) + BASELINE_WEIGHT * len(specs)
    out: list[TradeoffPoint] = []
    skipped: dict[str, str] = {}
    done = [0.0]

    def emit(point: TradeoffPoint, weight: float) -> None:
        out.append(point)
        done[0] += weight
        if on_point is not None:
            on_point(point)
        report_progress(progress, done[0] / total,
                        f"point {len(out)} of {jobs} ({point.method} {point.label})")  # fmt: skip

    def within(weight: float) -> Progress | None:
        """The running merge's own progress, as a slice of the sweep's."""
        if progress is None:
            return None
        start, label = done[0], f"point {len(out) + 1} of {jobs}"
        return lambda f, _m: report_progress(progress, (start + f * weight) / total, label)

    for method, fixed in methods.items():
        finished: dict[int, MergeResult] = {}
        for order, (k, neighbour) in enumerate(continuation_order(len(grid))):
            if should_stop is not None and should_stop():
                break
            t = grid[k]
            params = {**fixed, "rho": (t, 1.0 - t),
                      "steps": steps if neighbour is None else warm_steps}  # fmt: skip
            warm = None if neighbour is None else finished[neighbour]
            point = _point(pair, method, params, f"t={t:.2f}", t, evaluate, seed=seed,
                           task_data=task_data, warm=warm, cache=cache, stop=should_stop,
                           progress=within(work[order]))  # fmt: skip
            if point is None:
                break
            emit(point, work[order])
            finished[k] = point.result
    for label, method, params in specs:
        if should_stop is not None and should_stop():
            break
        try:
            emit(_point(pair, method, params, label, None, evaluate, seed=seed), BASELINE_WEIGHT)
        except (KeyError, ValueError) as err:
            skipped[label] = f"{method}: {err}"
    return _result(tuple(pair.names), out, skipped)


def _point(pair, method, params, label, t, evaluate, *, seed, task_data=None, warm=None,
           cache=None, stop=None, progress=None) -> TradeoffPoint | None:  # fmt: skip
    start = time.perf_counter()
    result = merge(pair, method, task_data=task_data, warm_start=warm, should_stop=stop,
                   seed=seed, cache=cache, progress=progress, **params)  # fmt: skip
    if result.run.get("stopped"):
        return None
    seconds = time.perf_counter() - start
    scores = tuple(float(s) for s in evaluate(result, pair.names))
    return TradeoffPoint(method, label, t, scores, seconds, dict(result.params), result.seed,
                         result)  # fmt: skip


def _baseline_specs(ta_grid: Sequence[float]) -> list[tuple[str, str, dict[str, Any]]]:
    specs = [(f"λ={lam:g}", "task_arithmetic", {"scaling": float(lam)}) for lam in ta_grid]
    return specs + [(get_method(m).pretty_name, m, {}) for m in baseline_methods()]


def _pair_indices(adapter_set: AdapterSet, tasks: Sequence[str | int]) -> list[int]:
    if len(tasks) != 2:
        raise ValueError(f"a trade-off needs exactly two tasks, got {list(tasks)}")
    idx = []
    for t in tasks:
        if isinstance(t, int):
            idx.append(t)
        elif t in adapter_set.names:
            idx.append(adapter_set.names.index(t))
        else:
            raise KeyError(f"no adapter named {t!r}; adapters are {adapter_set.names}")
    if idx[0] == idx[1]:
        raise ValueError(f"the two tasks must differ, got {list(tasks)}")
    return idx


def _result(names, out, skipped) -> TradeoffResult:
    front = tuple(pareto_front([p.scores for p in out]))
    by_method: dict[str, list[int]] = {}
    for i, p in enumerate(out):
        by_method.setdefault(p.method, []).append(i)
    method_fronts = {
        m: tuple(idx[j] for j in pareto_front([out[i].scores for i in idx]))
        for m, idx in by_method.items()
    }
    return TradeoffResult(names, tuple(out), front, method_fronts, skipped)


# ---------------------------------------------------------------------------------------------
# Preference-sensitivity clouds.


@dataclass(frozen=True)
class PreferenceCloud:
    """Per-task scores of ``K`` random-preference merges for each method.

    Attributes:
        tasks: task names. rhos: ``(K, N)`` preferences (simplex rows).
        scores: method -> ``(K, N)`` per-task scores. spread: method -> mean over tasks of the
            across-preference standard deviation of that task's score (how far a preference
            moves the merge). alignment: method -> mean over tasks of the Spearman correlation
            between ``ρ_i`` and the score on task ``i`` (positive: the merge follows the
            preference).
    """

    tasks: tuple[str, ...]
    rhos: torch.Tensor
    scores: Mapping[str, torch.Tensor]
    spread: Mapping[str, float]
    alignment: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "rhos": self.rhos.tolist(),
            "scores": {m: s.tolist() for m, s in self.scores.items()},
            "spread": dict(self.spread),
            "alignment": dict(self.alignment),
        }


def preference_cloud(
    adapter_set: AdapterSet,
    task_data: Any,
    evaluate: Evaluate,
    *,
    k: int = 8,
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    concentration: int = 1,
    steps: int = 0,
    warm_steps: int = 0,
    seed: int = 0,
    cache: Any = None,
    on_point: Callable[[str, int, Sequence[float]], None] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> PreferenceCloud:
    """``K`` Dirichlet preferences; each method's run per ρ is warm-started from its uniform-ρ run.

    Args:
        k: number of preferences. methods: method id -> fixed parameters (default TARA-B and
            layer-wise AdaMerging, TARA-repo variant). concentration: symmetric Dirichlet
            parameter (whole number). steps: steps of the uniform-ρ run; warm_steps: of each
            preference's run (0 = the method's default). seed: the draw and every run.
        Other arguments as in :func:`two_task_sweep`.
    """
    methods = dict(methods if methods is not None else
                   {m: DEFAULT_SWEEP[m] for m in ("tara_b", "adamerging_layer")})  # fmt: skip
    _check_sweep(methods)
    n = len(adapter_set)
    rhos = sample_preferences(
        k, num_tasks=n, concentration=concentration, generator=torch.Generator().manual_seed(seed)
    )
    scores: dict[str, torch.Tensor] = {}
    total, done = len(methods) * (k + 1), 0
    for method, fixed in methods.items():
        run = dict(task_data=task_data, should_stop=should_stop, seed=seed, cache=cache)
        base = merge(adapter_set, method, rho=[1.0 / n] * n, steps=steps, **fixed, **run)
        done += 1
        report_progress(progress, done / total, f"{method} uniform ρ")
        rows = []
        for i, rho in enumerate(rhos.tolist()):
            if base.run.get("stopped") or (should_stop is not None and should_stop()):
                break
            result = merge(adapter_set, method, rho=rho, steps=warm_steps, warm_start=base,
                           **fixed, **run)  # fmt: skip
            if result.run.get("stopped"):
                break
            row = [float(s) for s in evaluate(result, adapter_set.names)]
            rows.append(row)
            done += 1
            if on_point is not None:
                on_point(method, i, row)
            report_progress(progress, done / total, f"{method} ρ #{i + 1}")
        scores[method] = torch.tensor(rows, dtype=torch.float64).reshape(len(rows), n)
    return PreferenceCloud(
        tasks=tuple(adapter_set.names), rhos=rhos, scores=scores,
        spread={m: cloud_spread(s) for m, s in scores.items()},
        alignment={m: preference_alignment(rhos[: len(s)], s) for m, s in scores.items()},
    )  # fmt: skip


def cloud_spread(scores: torch.Tensor) -> float:
    """Mean over tasks of the standard deviation across preferences, ``(K, N) -> float``."""
    if scores.shape[0] < 2:
        return 0.0
    return float(scores.double().std(dim=0).mean())


def preference_alignment(rhos: torch.Tensor, scores: torch.Tensor) -> float:
    """Mean over tasks of Spearman ``corr(ρ_{:, i}, scores_{:, i})``; tasks with a constant column
    are left out (0.0 when none is left or ``K < 3``)."""
    if scores.shape[0] < 3:
        return 0.0
    values = []
    for i in range(scores.shape[1]):
        a, b = _ranks(rhos[:, i]), _ranks(scores[:, i])
        if float(a.std()) == 0 or float(b.std()) == 0:
            continue
        values.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
    return sum(values) / len(values) if values else 0.0


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), float64."""
    x = x.double()
    order = torch.argsort(x)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for value in torch.unique(x):
        mask = x == value
        ranks[mask] = ranks[mask].mean()
    return ranks
