"""Executors: run groups of points on resident workers and hand each group's records back.

Every pool has the same shape, ``pool.run(tasks, on_start, on_records)``: ``on_start(task)``
when a group is handed to a worker, ``on_records(records)`` when it comes back (in the driver
process, which alone writes the sweep folder). A ``KeyboardInterrupt`` stops handing out work;
what finished before it is already written.

* :class:`SerialPool`: one :class:`Worker` in this process.
* :class:`LocalPool`: a process pool; each process builds its :class:`Worker` once in the pool's
  initializer (bundle, adapters and task data stay loaded for every later point).
* :class:`~merging_core.sweep.ray_executor.RayPool`: Ray actors (optional dependency).

A pool stays up between :meth:`run` calls (a search hands it one batch of trials at a time).
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


class SerialPool:
    """One :class:`Worker` in this process; groups run in order, each point handed back as it
    finishes."""

    def __init__(self, worker: Worker) -> None:
        self.worker, self.workers = worker, 1

    def run(self, tasks: Sequence[GroupTask], on_start: OnStart, on_records: OnRecords) -> None:
        for task in tasks:
            on_start(task)
            self.worker.run_group(task, on_record=lambda record: on_records([record]))

    def close(self) -> None:
        return None

    def __enter__(self) -> SerialPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def threads_per_worker(workers: int, cpu_count: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes sharing ``cpu_count`` cores (>= 1)."""
    return max(1, (cpu_count or os.cpu_count() or 1) // max(1, workers))


class LocalPool:
    """``workers`` resident processes (spawned: safe with torch's threads), each building its
    :class:`Worker` once in the pool's initializer; :meth:`run` may be called many times.

    As with any spawned pool, the processes re-import the main script: use it from the CLI or
    from a script guarded by ``if __name__ == "__main__":``.

    Raises:
        ValueError: ``workers < 1``.
    """

    def __init__(self, source: Source, *, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(source,),
        )

    def run(self, tasks: Sequence[GroupTask], on_start: OnStart, on_records: OnRecords) -> None:
        """Hand out the groups, at most one per worker at a time; records come back per group."""
        queue = list(tasks)[::-1]
        pending: dict[Future, GroupTask] = {}
        try:
            while queue or pending:
                while queue and len(pending) < self.workers:
                    task = queue.pop()
                    pending[self.pool.submit(_run_group, task)] = task
                    on_start(task)
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    pending.pop(future)
                    on_records(future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _init_worker(source: Source) -> None:
    global _WORKER
    _WORKER = Worker(source)


def _run_group(task: GroupTask) -> list[dict[str, Any]]:
    if _WORKER is None:
        raise RuntimeError("pool process has no worker; the initializer did not run")
    return _WORKER.run_group(task)
