"""Two-task trade-off sweeps and preference-sensitivity clouds for preference-driven merges.

Space: factors (every merge here is exact factors; scoring is the caller's ``evaluate``).

* :func:`two_task_sweep`: merge only adapters ``i`` and ``j``, sweep ``ρ = (t, 1 − t)`` over a
  grid with TARA-A/B and AdaMerging (layer-wise, the TARA repository's ρ-weighted variant), each
  point warm-started from its finished neighbour (continuation, middle-out), plus the operating
  points of data-free baselines (Task Arithmetic λ grid, TIES, KnOTS-TIES, Iso-C, TSV-M, Pico-TA)
  when registered. Returns every point and the Pareto front; points stream through ``on_point``.
* :func:`preference_cloud`: ``K`` Dirichlet preferences over all tasks -> per-task score clouds
  for TARA and AdaMerging, with a spread statistic (the paper's preference-sensitivity figure,
  reconstructed: its exact protocol is not known).

``evaluate(result, task_names) -> scores`` is supplied by the caller (e.g. a bundle's normalised
test accuracy), so this module never sees labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.directional import ShouldStop
from merging_core.merge import MergeResult, Progress, merge, report_progress
from merging_core.methods.adamerging import run_adamerging
from merging_core.methods.registry import get_method
from merging_core.methods.tara import TaraRun, run_tara
from merging_core.preference import pareto_front, sample_preferences

Evaluate = Callable[[MergeResult, Sequence[str]], Sequence[float]]
SWEEP_METHODS = ("tara_a", "tara_b", "adamerging")
TA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))
BASELINES: tuple[tuple[str, str, Mapping[str, Any]], ...] = (
    ("TIES", "ties", {}),
    ("KnOTS-TIES", "knots", {"variant": "ties"}),
    ("Iso-C", "iso_c", {}),
    ("TSV-M", "tsv_m", {}),
    ("Pico-TA", "pico", {"base": "task_arithmetic"}),
)


@dataclass(frozen=True)
class TradeoffPoint:
    """One operating point: ``scores[k]`` is the score on ``tasks[k]``.

    Attributes:
        method: ``tara_a``/``tara_b``/``adamerging`` or a baseline's method id.
        label: display label (``"t=0.30"``, ``"λ=0.4"``, ``"TIES"``).
        t: preference on the first task (None for baselines). scores: per task.
        seconds: wall time to produce the merge (not the evaluation).
    """

    method: str
    label: str
    t: float | None
    scores: tuple[float, ...]
    seconds: float


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
            "points": [asdict(p) for p in self.points],
            "front": list(self.front),
            "method_fronts": {k: list(v) for k, v in self.method_fronts.items()},
            "skipped": dict(self.skipped),
        }


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


def run_preference(
    method: str,
    adapter_set: AdapterSet,
    context: Any,
    rho: Sequence[float],
    *,
    steps: int,
    init_phi: Mapping[str, torch.Tensor] | None,
    options: Mapping[str, Any],
    should_stop: ShouldStop | None = None,
) -> TaraRun:
    """One preference-driven run: ``tara_a``/``tara_b`` or ``adamerging`` (layer-wise, tara_repo).

    Raises:
        ValueError: unknown method.
    """
    if method in ("tara_a", "tara_b"):
        return run_tara(
            adapter_set, context, variant=method[-1], rho=rho, steps=steps, init_phi=init_phi,
            should_stop=should_stop, **options,
        )  # fmt: skip
    if method == "adamerging":
        ada = {k: v for k, v in options.items() if k in ("lr", "batch_size", "seed")}
        return run_adamerging(
            adapter_set, context, layerwise=True, variant="tara_repo", rho=rho, steps=steps,
            init_phi=init_phi, should_stop=should_stop, **ada,
        )  # fmt: skip
    raise ValueError(f"sweep method must be one of {list(SWEEP_METHODS)}, got {method!r}")


def two_task_sweep(
    adapter_set: AdapterSet,
    context: Any,
    evaluate: Evaluate,
    *,
    tasks: Sequence[str | int],
    points: int = 11,
    methods: Sequence[str] = SWEEP_METHODS,
    steps: int = 250,
    warm_steps: int = 50,
    baselines: bool = True,
    ta_grid: Sequence[float] = TA_GRID,
    options: Mapping[str, Any] | None = None,
    on_point: Callable[[TradeoffPoint], None] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TradeoffResult:
    """Sweep ``ρ = (t, 1 − t)`` for two tasks; see the module docstring.

    Args:
        adapter_set: all adapters; only the two named by ``tasks`` are merged.
        context: the bundle's ``TaskContext``. evaluate: ``(result, task_names) -> 2 scores``.
        tasks: two adapter names or indices. points: grid size (11 = steps of 0.1).
        methods: subset of ``tara_a``, ``tara_b``, ``adamerging``.
        steps: steps of the first (middle) point; warm_steps: of each continuation point.
        baselines: add the data-free baselines' operating points. ta_grid: TA's λ values.
        options: extra ``run_tara`` options (``alpha``, ``lr``, ``batch_size``, ``seed`` ...).
        on_point: called with each point as soon as it is scored.
        progress: ``callback(fraction, message)``. should_stop: polled between runs and steps.
    """
    pair = adapter_set.subset(_pair_indices(adapter_set, tasks))
    names = tuple(pair.names)
    grid = preference_grid(points)
    jobs = _sweep_jobs(methods, grid, baselines, ta_grid)
    out: list[TradeoffPoint] = []
    skipped: dict[str, str] = {}

    def emit(point: TradeoffPoint) -> None:
        out.append(point)
        if on_point is not None:
            on_point(point)
        report_progress(progress, len(out) / jobs, f"{point.method} {point.label}")

    for method in methods:
        _sweep_method(method, pair, context, evaluate, grid, steps, warm_steps, options, emit,
                      should_stop)  # fmt: skip
    if baselines:
        _baseline_points(pair, evaluate, ta_grid, emit, skipped, should_stop)
    return _result(names, out, skipped)


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


def _sweep_jobs(methods, grid, baselines, ta_grid) -> int:
    for m in methods:
        if m not in SWEEP_METHODS:
            raise ValueError(f"sweep method must be one of {list(SWEEP_METHODS)}, got {m!r}")
    return len(methods) * len(grid) + (len(ta_grid) + len(BASELINES) if baselines else 0)


def _sweep_method(method, pair, context, evaluate, grid, steps, warm_steps, options, emit, stop):
    states: dict[int, Mapping[str, torch.Tensor]] = {}
    for k, neighbour in continuation_order(len(grid)):
        if stop is not None and stop():
            return
        t = grid[k]
        start = time.perf_counter()
        run = run_preference(
            method, pair, context, (t, 1.0 - t),
            steps=steps if neighbour is None else warm_steps,
            init_phi=None if neighbour is None else states[neighbour],
            options=dict(options or {}), should_stop=stop,
        )  # fmt: skip
        if run.stopped:
            return
        states[k] = run.state
        scores = tuple(float(s) for s in evaluate(run.result, pair.names))
        emit(TradeoffPoint(method, f"t={t:.2f}", t, scores, time.perf_counter() - start))


def _baseline_points(pair, evaluate, ta_grid, emit, skipped, stop) -> None:
    specs = [(f"λ={lam:g}", "task_arithmetic", {"scaling": lam}) for lam in ta_grid]
    for label, method, params in [*specs, *BASELINES]:
        if stop is not None and stop():
            return
        start = time.perf_counter()
        try:
            get_method(method)
            result = merge(pair, method, **params)
        except (KeyError, ValueError) as err:
            skipped[label] = f"{method}: {err}"
            continue
        scores = tuple(float(s) for s in evaluate(result, pair.names))
        emit(TradeoffPoint(method, label, None, scores, time.perf_counter() - start))


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
    context: Any,
    evaluate: Evaluate,
    *,
    k: int = 8,
    methods: Sequence[str] = ("tara_b", "adamerging"),
    concentration: int = 1,
    steps: int = 250,
    warm_steps: int = 100,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    on_point: Callable[[str, int, Sequence[float]], None] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> PreferenceCloud:
    """``K`` Dirichlet preferences; each method's run per ρ is warm-started from its uniform-ρ run.

    Args:
        k: number of preferences. concentration: symmetric Dirichlet parameter (whole number).
        steps: steps of the uniform-ρ run; warm_steps: of each preference's run.
        seed: seeds the preference draw. on_point: ``(method, index, scores)`` per finished run.
        Other arguments as in :func:`two_task_sweep`.
    """
    for m in methods:
        if m not in SWEEP_METHODS:
            raise ValueError(f"cloud method must be one of {list(SWEEP_METHODS)}, got {m!r}")
    n = len(adapter_set)
    rhos = sample_preferences(
        k, num_tasks=n, concentration=concentration, generator=torch.Generator().manual_seed(seed)
    )
    scores: dict[str, torch.Tensor] = {}
    total, done = len(methods) * (k + 1), 0
    for method in methods:
        base = run_preference(
            method,
            adapter_set,
            context,
            [1.0 / n] * n,
            steps=steps,
            init_phi=None,
            options=dict(options or {}),
            should_stop=should_stop,
        )
        done += 1
        report_progress(progress, done / total, f"{method} uniform ρ")
        rows = []
        for i, rho in enumerate(rhos.tolist()):
            if should_stop is not None and should_stop():
                break
            run = run_preference(method, adapter_set, context, rho, steps=warm_steps,
                                 init_phi=base.state, options=dict(options or {}),
                                 should_stop=should_stop)  # fmt: skip
            if run.stopped:
                break
            row = [float(s) for s in evaluate(run.result, adapter_set.names)]
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
