"""Glue every data-driven method shares: device check, run seed, warm start, the run record."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.loop import TrainTrace
from merging_core.results import MergeResult
from merging_core.taskdata import TaskData, require_tasks


def check_inputs(adapter_set: AdapterSet, data: TaskData, device: Any) -> torch.device:
    """Every adapter names a task of ``data``; the run's device is where ``data`` lives.

    Raises:
        KeyError: an adapter without a task. ValueError: ``device`` differs from ``data.device``.
    """
    require_tasks(data, adapter_set.names)
    here = torch.device(data.device)
    if device is not None and torch.device(device).type != here.type:
        raise ValueError(
            f"device {str(device)!r} differs from where the task data lives ({str(here)!r}); "
            "build the task data on that device (bundle.task_data(device))"
        )
    return here


def seed_from(generator: torch.Generator | None) -> int:
    """The run's batch-order seed, drawn from ``merge()``'s seeded generator (0 without one)."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def warm_state(warm_start: Any, method: str) -> dict[str, torch.Tensor] | None:
    """The state to start from: a ``MergeResult`` of ``method`` (its ``state``) or a mapping.

    Raises:
        ValueError: a result of another method, or one without learned state.
    """
    if warm_start is None:
        return None
    if isinstance(warm_start, MergeResult):
        if warm_start.method != method:
            raise ValueError(
                f"warm start comes from {warm_start.method!r}, not {method!r}; start from a run of "
                "the same method"
            )
        if not warm_start.state:
            raise ValueError(f"warm start result of {method!r} carries no learned state")
        warm_start = warm_start.state
    if not isinstance(warm_start, Mapping):
        raise ValueError(
            f"warm_start must be a MergeResult or a state mapping, got {type(warm_start).__name__}"
        )
    return {k: torch.as_tensor(v).detach().cpu().float() for k, v in warm_start.items()}


def state_hash(state: Mapping[str, torch.Tensor] | None) -> str | None:
    """SHA-256 of a learned state (keys sorted, float32 bytes); None for no state."""
    if not state:
        return None
    h = hashlib.sha256()
    for key in sorted(state):
        value = torch.as_tensor(state[key]).detach().cpu().float().contiguous()
        h.update(key.encode())
        h.update(repr(tuple(value.shape)).encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()


def resolve_entropy_scale(data: TaskData, requested: float) -> float:
    """The scale inside the entropies: ``requested``, or (0) the task data's own default."""
    return float(requested) if requested > 0 else float(data.entropy_scale)


def run_record(
    trace: TrainTrace, data: TaskData, device: torch.device, warm: Mapping[str, torch.Tensor] | None
) -> dict[str, Any]:
    """What ``result.run`` holds: progress, timing, device, the data and warm start it used."""
    return {
        "steps_done": trace.steps_done,
        "stopped": trace.stopped,
        "seconds": trace.seconds,
        "device": str(device),
        "losses": list(trace.losses),
        "task_data": {"name": data.name, "fingerprint": data.fingerprint()},
        "warm_start": state_hash(warm),
    }
