"""The status panel of a queued data-driven run: waiting / progress, speed, time left, Stop.

The panel is a fragment that redraws itself every ``POLL_S`` seconds while the job is unfinished
and asks for a full rerun once it ends, so the page shows the result. Pure text helpers are
separate so they can be tested without Streamlit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import streamlit as st

from app_support.jobs import FINISHED, QUEUED, Job, server_queue

POLL_S = 0.5
STOP_KEY = "merge.stop"


def duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


STEP = re.compile(r"(step|point) (\d+) of (\d+)")


def steps_of(job: Job) -> tuple[int, int] | None:
    """(done, total) steps or points from the job's last progress message, if it names them."""
    match = STEP.search(job.message)
    return (int(match.group(2)), int(match.group(3))) if match else None


def unit_of(job: Job) -> str:
    """``"step"`` or ``"point"``: what the job's progress messages count."""
    match = STEP.search(job.message)
    return match.group(1) if match else "step"


def describe(job: Job, ahead: int) -> str:
    """One line in plain words for the job's state."""
    if job.status == QUEUED:
        runs = "run" if ahead == 1 else "runs"
        return (f"Waiting for {ahead} {runs} ahead of yours (the server runs one at a time)."
                if ahead else "Starting…")  # fmt: skip
    counted = steps_of(job)
    if counted is None:
        return f"{job.label}: preparing (anchors and merge directions)…"
    done, total = counted
    unit = unit_of(job)
    rate, left = job.rate_and_eta(total)
    if rate is None:
        speed = "measuring its speed…"
    elif unit == "step":
        speed = f"{rate:.2f} steps/s · about {duration(left)} left"
    else:  # the fraction counts work, not points: only the time left is meaningful
        speed = f"about {duration(left)} left"
    return f"{job.label}: {unit} {done} of {total} · {speed}"


def status_panel(
    job: Job, *, stop_key: str = STOP_KEY, draw: Callable[[], None] | None = None
) -> None:
    """Progress of ``job`` with a Stop button; reruns the app when the job has finished.

    ``draw``: called on every redraw below the status line (e.g. a chart of streamed points).
    """

    @st.fragment(run_every=POLL_S)
    def panel() -> None:
        if st.session_state.get(stop_key):
            job.cancel()
        if job.status in FINISHED:
            st.rerun()
        ahead = server_queue().ahead_of(job)
        text = describe(job, ahead)
        if job.cancelled:
            text = "Stopping at the end of the current step…"
        st.progress(job.fraction, text=text)
        st.button("Stop", key=stop_key, disabled=job.cancelled,
                  help="End the run now; what it has computed so far is kept.")  # fmt: skip
        if draw is not None:
            draw()

    panel()
