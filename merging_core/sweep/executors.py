"""Executors: run groups of points on resident workers and hand each group's records back.

Every executor has the same shape, ``execute(tasks, on_start, on_records)``: ``on_start(task)``
when a group is handed to a worker, ``on_records(records)`` when it comes back (in the driver
process, which alone writes the sweep folder). A ``KeyboardInterrupt`` stops handing out work;
what finished before it is already written.

* :func:`run_serial`: one :class:`Worker` in this process.
* :func:`run_local`: a process pool; each process builds its :class:`Worker` once in the pool's
  initializer (bundle, adapters and task data stay loaded for every later point).
* the Ray executor lives in :mod:`merging_core.sweep.ray_executor` (optional dependency).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from merging_core.sweep.worker import GroupTask, Source, Worker

OnStart = Callable[[GroupTask], None]
OnRecords = Callable[[list[dict[str, Any]]], None]
_WORKER: Worker | None = None  # the resident worker of a pool process


def run_serial(
    worker: Worker, tasks: Sequence[GroupTask], on_start: OnStart, on_records: OnRecords
) -> None:
    """Run every group in this process, in order, handing back each point as it finishes."""
    for task in tasks:
        on_start(task)
        worker.run_group(task, on_record=lambda record: on_records([record]))


def threads_per_worker(workers: int, cpu_count: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes sharing ``cpu_count`` cores (>= 1)."""
    return max(1, (cpu_count or os.cpu_count() or 1) // max(1, workers))


def run_local(
    source: Source,
    tasks: Sequence[GroupTask],
    on_start: OnStart,
    on_records: OnRecords,
    *,
    workers: int,
) -> None:
    """Run the groups on ``workers`` resident processes (spawned: safe with torch's threads).

    As with any spawned pool, the processes re-import the main script: call this from the CLI
    or from a script guarded by ``if __name__ == "__main__":``.

    Raises:
        ValueError: ``workers < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(source,)
    )
    queue = list(tasks)[::-1]
    pending: dict[Future, GroupTask] = {}
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.pop()
                pending[pool.submit(_run_group, task)] = task
                on_start(task)
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.pop(future)
                on_records(future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _init_worker(source: Source) -> None:
    global _WORKER
    _WORKER = Worker(source)


def _run_group(task: GroupTask) -> list[dict[str, Any]]:
    if _WORKER is None:
        raise RuntimeError("pool process has no worker; the initializer did not run")
    return _WORKER.run_group(task)
