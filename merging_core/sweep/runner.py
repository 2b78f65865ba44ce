"""Run a sweep into a folder: plan the points, skip the finished ones, execute, write each file.

:func:`run_sweep` is resumable by construction: a point's file name is the hash of its recipe,
it is written atomically once the point is done, and a new run plans the same keys and runs only
those without a file (failed points are retried). Progress goes to an optional callback as
:class:`SweepProgress` snapshots; the library prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merging_core.sweep import store
from merging_core.sweep.executors import LocalPool, SerialPool, threads_per_worker
from merging_core.sweep.spec import PlannedPoint, SweepSpec, plan_points
from merging_core.sweep.worker import GroupTask, Source, Worker

EXECUTORS = ("serial", "local", "ray")


@dataclass
class SweepProgress:
    """A snapshot: points in the plan, already finished before this run, done / failed in this
    run, running now, seconds since start and the estimated seconds left (None until a point
    finished)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0
    elapsed_s: float = 0.0
    eta_s: float | None = None
    last: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def finished(self) -> int:
        return self.skipped + self.done + self.failed


@dataclass(frozen=True)
class SweepSummary:
    """What a run did: the plan's size, how many points were skipped / done / failed."""

    folder: Path
    total: int
    skipped: int
    done: int
    failed: int
    seconds: float
    executor: str
    workers: int


def run_sweep(
    spec: SweepSpec,
    folder: str | Path,
    *,
    executor: str = "local",
    workers: int = 2,
    address: str | None = None,
    cpus_per_worker: int | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> SweepSummary:
    """Run the points of ``spec`` that ``folder`` does not hold yet.

    Args:
        spec: the parsed spec. folder: the sweep folder (created).
        executor: ``serial`` (this process), ``local`` (process pool) or ``ray``.
        workers: pool processes / Ray actors (Ray: 0 = one per GPU, else per ``cpus_per_worker``).
        address: Ray cluster address (``auto`` or ``host:port``); None starts a local Ray.
        cpus_per_worker: CPU cores (torch threads) per worker; default cores / workers.
        on_progress: called after every change with a :class:`SweepProgress`.

    Raises:
        ValueError: unknown executor, bad spec values (named). ImportError: ``ray`` asked for
            but not installed (the message says how to install it).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")
    folder = Path(folder)
    started = time.perf_counter()
    driver = Worker(Source.from_spec(spec))
    plan = plan_points(spec, tasks=driver.tasks, identity=driver.identity())
    store.save_spec(folder, spec.to_dict())
    tasks, skipped = pending_tasks(plan, folder, spec)
    progress = SweepProgress(total=sum(len(g) for g in plan), skipped=skipped)
    tracker = _Tracker(progress, folder, on_progress, started, workers)
    tracker.emit()
    if tasks:
        with open_pool(executor, spec, driver, workers, address, cpus_per_worker) as pool:
            tracker.workers = pool.workers
            pool.run(tasks, tracker.on_start, tracker.on_records)
    return SweepSummary(
        folder,
        progress.total,
        skipped,
        progress.done,
        progress.failed,
        time.perf_counter() - started,
        executor,
        workers,
    )


def open_pool(
    executor: str,
    spec: SweepSpec,
    driver: Worker,
    workers: int,
    address: str | None = None,
    cpus_per_worker: int | None = None,
) -> Any:
    """A started pool of resident workers: ``serial`` reuses ``driver``; ``local`` spawns
    ``workers`` processes; ``ray`` starts (or joins) Ray and its actors. Use as a context manager.

    Raises:
        ValueError: unknown executor.
    """
    if executor == "serial":
        return SerialPool(driver)
    if executor == "local":
        threads = cpus_per_worker or threads_per_worker(workers)
        return LocalPool(Source.from_spec(spec, threads=threads), workers=workers)
    if executor == "ray":
        from merging_core.sweep.ray_executor import RayPool

        return RayPool(
            Source.from_spec(spec),
            workers=workers,
            address=address,
            cpus_per_worker=cpus_per_worker,
        )
    raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {executor!r}")


def pending_tasks(
    plan: list[list[PlannedPoint]], folder: Path, spec: SweepSpec
) -> tuple[list[GroupTask], int]:
    """The groups still to run (finished points dropped, their states handed to children) and
    how many points were already finished."""
    done = store.done_keys(folder)
    export = None
    if spec.export is not False:
        export = (str(folder.resolve()), None if spec.export is True else int(spec.export))
    tasks, skipped = [], 0
    for group in plan:
        todo = [p for p in group if p.key not in done]
        skipped += len(group) - len(todo)
        if not todo:
            continue
        parents = {p.parent for p in todo if p.parent in done}
        states = {k: s for k in parents if (s := store.load_state(folder, k)) is not None}
        tasks.append(GroupTask(tuple(todo), states, export))
    return tasks, skipped


class _Tracker:
    """Counts points, writes each record as it arrives, and reports progress."""

    def __init__(self, progress, folder, callback, started, workers) -> None:
        self.progress, self.folder, self.callback = progress, folder, callback
        self.started, self.workers, self.outstanding = started, max(1, workers), 0

    def on_start(self, task: GroupTask) -> None:
        self.outstanding += len(task.points)
        self.emit()

    def on_records(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            state = record.pop("_state", None)
            if state is not None:
                record["state"] = store.save_state(self.folder, record["key"], state)
            store.save_point(self.folder, record)
            self.outstanding -= 1
            if record["status"] == "failed":
                self.progress.failed += 1
            else:
                self.progress.done += 1
            self.progress.last = record
            self.emit()

    def emit(self) -> None:
        p = self.progress
        p.running = min(self.outstanding, self.workers)
        p.elapsed_s = time.perf_counter() - self.started
        ran = p.done + p.failed
        left = p.total - p.finished
        p.eta_s = p.elapsed_s / ran * left if ran else None
        if self.callback is not None:
            self.callback(p)
