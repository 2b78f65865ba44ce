"""One queue per server for heavy work (data-driven merges, sweeps): one job at a time, in order.

Every session submits its long runs here instead of running them in its own script thread, so
five users pressing "Run" share the machine one after another (each page says how many runs are
ahead of its own) while light work (data-free merges, page renders) stays in the sessions'
threads and keeps answering. A job is cancelled through its ``should_stop`` flag, which the
library polls between optimisation steps; its progress is read by the page that owns it.

Where the platform can fork (Linux) and nothing has claimed a GPU yet, a job runs in a child
process at the lowest CPU priority: the server's own threads (page renders, sliders) then win
every core they ask for and never wait on the run for Python's interpreter lock, which a
low-priority *thread* holding it would make them do. Progress, streamed items and the result come
back through a pipe; a job whose child dies is reported as failed with its exit code.

The queue is a ``st.cache_resource`` (one per server process); a job holds only its owner's
inputs and result, so sessions never see each other's data.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

Progress = Callable[[float, str], None]
Publish = Callable[[Any], None]
Work = Callable[[Progress, Callable[[], bool], Publish], Any]

WORKER_NICENESS = 10  # added to the worker thread's nice value (lower CPU priority)
CHILD_NICENESS = 19  # a job's child process: the lowest priority there is
PROCESS_ENV = "MERGE_LAB_JOB_PROCESS"  # "0": run every job in the worker thread
PIPE_POLL_S = 0.1
QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
FINISHED = (DONE, STOPPED, FAILED)


class Stopped(Exception):  # noqa: N818 (a signal, not an error)
    """Raised from a progress callback to end a run whose library call cannot stop by itself."""


@dataclass(eq=False)
class Job:
    """One unit of heavy work and what its page needs to show about it.

    Attributes:
        key: what the work computes (the page compares it with the current settings).
        label: plain words for the status line ("TARA-B on 8 adapters").
        status: queued / running / done / stopped / failed.
        fraction, message: the last progress report. started, finished: ``time.monotonic()``.
        result: the work's return value; error: the message of a failure.
        items: what the work published while running (e.g. a sweep's points), in order.
        isolated: run in a child process when the platform allows (see the module docstring).
    """

    key: Any
    label: str
    work: Work
    status: str = QUEUED
    fraction: float = 0.0
    message: str = ""
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str = ""
    stop_in_progress: bool = True
    meta: dict[str, Any] = field(default_factory=dict)  # the submitter's notes (steps, ...)
    items: list[Any] = field(default_factory=list)
    isolated: bool = False
    _cancel: threading.Event = field(default_factory=threading.Event)
    _first: tuple[float, float] | None = None  # (time, fraction) of the first progress report
    _last: tuple[float, float] | None = None  # ... and of the latest one

    def cancel(self) -> None:
        """Ask the job to stop (at its next step, or before it starts)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished_(self) -> bool:
        return self.status in FINISHED

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def rate_and_eta(self, total_steps: int | None) -> tuple[float | None, float | None]:
        """(steps per second, seconds left) measured since the first progress report.

        The first report is the reference point, so set-up work and a slow first step (caches,
        warm-up) do not distort the estimate; None until a later report has arrived.
        """
        if not total_steps or self._first is None or self._last is None:
            return None, None
        (t0, f0), (t1, f1) = self._first, self._last
        if f1 <= f0 or t1 <= t0:
            return None, None
        rate = (f1 - f0) * total_steps / (t1 - t0)
        return rate, (1.0 - f1) * total_steps / rate

    def _report(self, fraction: float, message: str) -> None:
        self.fraction = min(max(float(fraction), 0.0), 1.0)
        self.message = message
        mark = (time.monotonic(), self.fraction)
        if self._first is None:
            self._first = mark
        else:
            self._last = mark
        if self.cancelled and self.stop_in_progress:
            raise Stopped(self.label)


class JobQueue:
    """First in, first out; one worker thread, started on the first submission."""

    def __init__(self) -> None:
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self.current: Job | None = None

    def submit(
        self, key: Any, label: str, work: Work, *, stop_in_progress: bool = True,
        isolated: bool = False,
    ) -> Job:  # fmt: skip
        """Queue ``work(progress, should_stop, publish)``; returns its job at once.

        ``stop_in_progress``: a cancel raises :class:`Stopped` from the progress callback (for work
        that does not poll ``should_stop`` itself; it then ends without a result).
        ``isolated``: run in a low-priority child process where possible; ``work``, what it
        publishes and its result must then be picklable on the way back (inputs are inherited).
        """
        job = Job(key=key, label=label, work=work, stop_in_progress=stop_in_progress,
                  isolated=isolated)  # fmt: skip
        with self._lock:
            self._pending.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="merge-lab-jobs",
                                                daemon=True)  # fmt: skip
                self._worker.start()
            self._lock.notify()
        return job

    def ahead_of(self, job: Job) -> int:
        """How many runs will go before ``job`` (the running one included); 0 once it runs."""
        with self._lock:
            if job.status != QUEUED:
                return 0
            waiting = [j for j in self._pending if not j.cancelled]
            before = waiting.index(job) if job in waiting else 0
            return before + (1 if self.current is not None else 0)

    def _loop(self) -> None:
        _lower_priority()
        while True:
            with self._lock:
                while not self._pending:
                    self._lock.wait()
                job = self._pending.popleft()
                self.current = job
            try:
                _run(job)
            finally:
                with self._lock:
                    self.current = None


def _lower_priority() -> None:
    """Make the worker thread yield the CPU to the sessions' threads (Linux: threads are tasks).

    Page renders and data-free sliders then win the CPU (and the interpreter lock, which a
    runnable thread gets back sooner) while a long run goes on; the run only slows when the
    machine has no idle core. Where per-thread priorities do not exist this does nothing.
    """
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
        except OSError:  # not permitted here: keep the default priority
            return


def _run(job: Job) -> None:
    if job.cancelled:
        job.status, job.finished = STOPPED, time.monotonic()
        return
    job.status, job.started = RUNNING, time.monotonic()
    try:
        if job.isolated and can_isolate():
            job.result = _run_in_child(job)
        else:
            job.result = job.work(job._report, lambda: job.cancelled, job.items.append)
        job.status = STOPPED if job.cancelled else DONE
    except Stopped:
        job.status = STOPPED
    except Exception as err:  # noqa: BLE001 (shown to the job's owner, who decides)
        job.status, job.error = FAILED, f"{type(err).__name__}: {err}"
    finally:
        job.finished = time.monotonic()


class ChildFailed(RuntimeError):
    """The job's child process raised (message: its error) or died (message: its exit code)."""


def can_isolate() -> bool:
    """True where jobs may run in a forked child: Linux-like fork, not disabled, no CUDA yet.

    A process that has initialised CUDA cannot use it again in a forked child, so once the server
    has touched a GPU its jobs run in the worker thread (a GPU run competes little for the CPU).
    """
    if os.environ.get(PROCESS_ENV, "1") == "0":
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    import torch

    return not torch.cuda.is_initialized()


def _run_in_child(job: Job) -> Any:
    """Run ``job.work`` in a forked child; relay progress, items and stop; return its result."""
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(job.work, writer, stop), daemon=True,
                        name=f"merge-lab-job {job.label}")  # fmt: skip
    child.start()
    writer.close()
    try:
        while True:
            if job.cancelled:
                stop.set()
            if not reader.poll(PIPE_POLL_S):
                if not child.is_alive() and not reader.poll(0):
                    raise ChildFailed(f"the run's process ended (exit code {child.exitcode})")
                continue
            try:
                kind, payload = pickle.loads(reader.recv_bytes())
            except EOFError:
                child.join()
                raise ChildFailed(f"the run's process ended (exit code {child.exitcode})") from None
            if kind == "progress":
                job._report(*payload)  # raises Stopped for work that cannot stop by itself
            elif kind == "item":
                job.items.append(payload)
            elif kind == "result":
                return payload
            else:
                raise ChildFailed(payload)
    finally:
        reader.close()
        if child.is_alive():
            stop.set()
            child.join(timeout=5.0)
            if child.is_alive():
                child.terminate()
        child.join()


def _child_main(work: Work, conn: Any, stop: Any) -> None:
    """The child's whole life: lowest priority, run, send the outcome, exit."""
    if hasattr(os, "nice"):
        try:
            os.nice(CHILD_NICENESS)
        except OSError:
            pass

    def send(kind: str, payload: Any) -> None:
        # plain pickle: tensors travel by value (multiprocessing's own pickler would hand them over
        # as shared memory, which is gone once this process has exited)
        conn.send_bytes(pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL))

    try:
        try:
            result = work(lambda f, m: send("progress", (f, m)), stop.is_set,
                          lambda item: send("item", item))  # fmt: skip
        except BaseException as err:  # noqa: BLE001 (reported to the parent, which decides)
            send("error", f"{type(err).__name__}: {err}")
            return
        try:
            send("result", result)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            send("error", f"could not send the run's result back: {type(err).__name__}: {err}")
    finally:
        conn.close()


@st.cache_resource(show_spinner=False)
def server_queue() -> JobQueue:
    """The one heavy-work queue of this server process (shared by every session)."""
    return JobQueue()
