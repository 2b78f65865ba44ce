"""Trade-off page helpers: run a streamed two-task sweep, lay it out, map a point to a merge.

The sweep is :func:`merging_core.tradeoff.two_task_sweep`; scores are the bundle's normalised
accuracy (%) through :mod:`app_support.evaluation`. Every point carries its registered method,
parameters, seed and the merge itself, so a click re-opens exactly that merge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from app_support.evaluation import normalised_scores
from app_support.jobs import Job, server_queue
from app_support.library import feature
from merging_core import figures
from merging_core.adapters import AdapterSet
from merging_core.tradeoff import SWEEP_STEPS, SWEEP_WARM_STEPS

TA_CURVE = "Task Arithmetic (λ sweep)"


def method_label(method: str) -> str:
    """The registered pretty name (AdaMerging sweeps run its ρ-weighted TARA-repo variant)."""
    from merging_core.methods import get_method

    return get_method(method).pretty_name


def sweep_methods() -> list[str]:
    """Registered preference-driven methods a sweep can run."""
    return list(feature("tradeoff").preference_methods())


STEPS_HELP = (
    "The method's own schedule (5 epochs over the validation split: 40 steps on vision8) moves "
    "each coefficient by at most lr × steps, so every preference would land on nearly the same "
    "merge. A sweep gives the middle point the schedule of a full-size split (250) and each "
    "next point 100 more, starting from its neighbour."
)


@dataclass(frozen=True)
class SweepOptions:
    """What the user chose for a sweep (kept with its result to rebuild merge settings)."""

    methods: tuple[str, ...] = ("tara_b",)
    points: int = 5
    steps: int = SWEEP_STEPS
    warm_steps: int = SWEEP_WARM_STEPS
    baselines: bool = True


@dataclass
class Layout:
    """Chart inputs plus, per plotted trace, the sweep points behind it (for clicks)."""

    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    labels: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    baselines: dict[str, tuple[float, float]] = field(default_factory=dict)
    front: list[tuple[float, float]] = field(default_factory=list)
    traces: list[list[Any]] = field(default_factory=list)


def evaluator(bundle: Any) -> Callable[[Any, Sequence[str]], list[float]]:
    """``(result, task names) -> normalised accuracy (%)`` per task, cached per session."""
    return lambda result, names: [normalised_scores(bundle, result, list(names))[n] for n in names]


def run_sweep(
    adapter_set: AdapterSet,
    context: Any,
    bundle: Any,
    tasks: tuple[str, str],
    options: SweepOptions,
    *,
    on_point: Callable[[Any], None],
    progress: Callable[[float, str], None],
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """The library's two-task sweep with the user's options; points stream to ``on_point``."""
    lib = feature("tradeoff")
    methods = {m: dict(lib.DEFAULT_SWEEP.get(m, {})) for m in options.methods}
    return lib.two_task_sweep(
        adapter_set, context, evaluator(bundle), tasks=list(tasks), points=options.points,
        methods=methods, steps=options.steps, warm_steps=options.warm_steps,
        baselines=options.baselines, on_point=on_point, progress=progress,
        should_stop=should_stop,
    )  # fmt: skip


def submit_sweep(
    adapter_set: AdapterSet, context: Any, bundle: Any, tasks: tuple[str, str],
    options: SweepOptions,
) -> Job:  # fmt: skip
    """Queue the sweep on the server's run queue; its points stream into ``job.items``.

    Stopping keeps the points computed so far (the library polls the flag between runs and steps).
    """

    def work(progress, should_stop, publish):
        return run_sweep(adapter_set, context, bundle, tasks, options, on_point=publish,
                         progress=progress, should_stop=should_stop)  # fmt: skip

    label = f"Trade-off sweep {tasks[0]} vs {tasks[1]}"
    job = server_queue().submit(("sweep", tasks, options), label, work, stop_in_progress=False,
                                isolated=True)  # fmt: skip
    job.meta.update(pair=tuple(tasks), options=options)
    return job


def layout(points: Sequence[Any], front: Sequence[int] = ()) -> Layout:
    """Group points into curves (sweeps by preference t, TA by λ) and single baselines."""
    out = Layout()
    groups: dict[str, list[Any]] = {}
    for p in points:
        if p.t is not None:
            groups.setdefault(method_label(p.method), []).append(p)
        elif p.method == "task_arithmetic":
            groups.setdefault(TA_CURVE, []).append(p)
    for name, pts in groups.items():
        pts = sorted(pts, key=lambda p: p.t if p.t is not None else _lambda(p.label))
        out.curves[name] = [(p.scores[0], p.scores[1]) for p in pts]
        out.labels[name] = [p.label for p in pts]
        out.notes[name] = [run_note(p) for p in pts]
        out.traces.append(pts)
    singles = [p for p in points if p.t is None and p.method != "task_arithmetic"]
    out.front = [tuple(points[i].scores[:2]) for i in front]
    if out.front:
        out.traces.append([])  # the front's own trace
    for p in singles:
        out.baselines[p.label] = (p.scores[0], p.scores[1])
        out.traces.append([p])
    return out


OBJECTIVE_WINDOW = 5  # steps averaged at each end of a run (the batch loss is noisy)


def run_note(point: Any) -> str:
    """Hover line of a learned point: steps run and the objective at their start and end."""
    run = point.result.run if point.result is not None else {}
    losses = list(run.get("losses") or [])
    if not losses:
        return ""
    k = min(OBJECTIVE_WINDOW, len(losses))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    warm = " (warm-started)" if run.get("warm_start") else ""
    return (f"{len(losses)} steps{warm} · objective {first:.4f} → {last:.4f} "
            f"({last - first:+.4f})")  # fmt: skip


def _lambda(label: str) -> float:
    return float(label.split("=", 1)[1]) if "=" in label else 0.0


def chart(points: Sequence[Any], tasks: tuple[str, str], front: Sequence[int] = ()) -> go.Figure:
    """The trade-off figure of ``points`` (partial while streaming)."""
    lay = layout(points, front)
    on_front = {tuple(p.scores[:2]) for i, p in enumerate(points) if i in set(front)}
    names = {name: front_note(name, pts, on_front) for name, pts in lay.curves.items()}
    return figures.tradeoff_chart(
        {names[n]: pts for n, pts in lay.curves.items()}, task_a=tasks[0], task_b=tasks[1],
        baselines=lay.baselines, front=lay.front,
        labels={names[n]: texts for n, texts in lay.labels.items()},
        notes={names[n]: texts for n, texts in lay.notes.items()},
    )  # fmt: skip


def front_note(name: str, pts: Sequence[tuple[float, float]], on_front: set) -> str:
    """The legend entry: how many of the curve's points are on the Pareto front (or dominated)."""
    if not on_front:
        return name
    k = sum(tuple(p) in on_front for p in pts)
    return f"{name} — {k} of {len(pts)} on the front" if k else f"{name} (dominated)"


def clicked_point(points: Sequence[Any], front: Sequence[int], selection: Mapping) -> Any | None:
    """The sweep point behind the first selected chart point, if it maps to one."""
    chosen = list(selection.get("points", []) if selection else [])
    if not chosen:
        return None
    traces = layout(points, front).traces
    curve, index = chosen[0].get("curve_number"), chosen[0].get("point_index")
    if curve is None or index is None or curve >= len(traces) or index >= len(traces[curve]):
        return None
    return traces[curve][index]


def merge_settings(point: Any) -> tuple[str, dict[str, Any], int]:
    """(registered method, parameters, seed) of ``point``: exactly what produced it."""
    return point.method, point.to_dict()["params"], int(point.seed)


def point_names(points: Sequence[Any]) -> list[str]:
    """Readable names for a point picker: ``"TARA-B t=0.30 (82.1 %, 77.4 %)"``."""
    return [
        f"{method_label(p.method)} {p.label} "
        f"({p.scores[0]:.1f} %, {p.scores[1]:.1f} %)"
        for p in points
    ]
