"""A resident sweep worker: loads the bundle (or adapters) once, then runs points on demand.

The same class backs every executor: the serial loop holds one in the driver, the local
executor one per pool process (built by the pool's initializer), the Ray executor one per actor.
A worker runs a *group* of points in order; within a group a point whose recipe names a
warm-start parent starts from that parent's learned state (kept in memory, or handed in when
the parent finished in an earlier run).
"""

from __future__ import annotations

import os
import platform
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.cache import AdaptiveCache


@dataclass(frozen=True)
class Source:
    """What a worker loads: a bundle (name or folder) or adapter folders, a task subset, a device.

    ``threads`` bounds torch's intra-op pool in the worker process (None: leave it alone).
    """

    bundle: str | None = None
    adapters: tuple[str, ...] = ()
    tasks: tuple[str, ...] | None = None
    device: str = "auto"
    threads: int | None = None

    @classmethod
    def from_spec(cls, spec: Any, *, threads: int | None = None) -> Source:
        return cls(spec.bundle, tuple(spec.adapters), spec.tasks, spec.device, threads)


@dataclass(frozen=True)
class GroupTask:
    """A group of planned points to run in order, the saved states of parents finished earlier,
    and where exports go (None: no export; else ``(folder, rank or None)``)."""

    points: tuple[Any, ...]
    states: Mapping[str, Mapping[str, torch.Tensor]]
    export: tuple[str, int | None] | None = None


class Worker:
    """Loads its :class:`Source` once; :meth:`run_group` merges and scores points."""

    def __init__(self, source: Source):
        if source.threads is not None:
            torch.set_num_threads(int(source.threads))
        self.source = source
        self.bundle = _load_bundle(source.bundle) if source.bundle else None
        self.adapters = _adapters(self.bundle, source)
        self.tasks = tuple(self.adapters.names)
        self.device = _device(source.device)
        self._task_data = None
        self._identity: dict[str, Any] | None = None
        self.cache = AdaptiveCache()  # direction banks and anchors, reused by every point

    def identity(self) -> dict[str, Any]:
        """What identifies the inputs in every point's recipe (the bundle's name and content
        fingerprint, or each adapter's weights hash)."""
        if self._identity is None:
            if self.bundle is not None:
                self._identity = {"bundle": self.bundle.name,
                                  "fingerprint": self.bundle.fingerprint()}  # fmt: skip
            else:
                self._identity = {
                    "adapters": [{"name": a.name, "sha256": a.sha256} for a in self.adapters]
                }
        return dict(self._identity)

    def task_data(self) -> Any:
        """The bundle's task data on this worker's device (built once)."""
        if self.bundle is None:
            raise ValueError("a data-driven method needs a bundle; the spec names adapters only")
        if self._task_data is None:
            self._task_data = self.bundle.task_data(device=self.device)
        return self._task_data

    def run_group(
        self, task: GroupTask, on_record: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run the group's points in order; a failure is recorded and the group goes on.

        Args:
            on_record: called with each record as soon as its point is done (in-process use).

        Returns:
            One record per point; a successful data-driven point carries its learned state
            under ``"_state"`` (CPU tensors) for the driver to save.
        """
        states = {k: dict(v) for k, v in task.states.items()}
        records = []
        for point in task.points:
            record = self.run_point(point, states, task.export)
            if record["status"] == "done" and record.get("_state") is not None:
                states[point.key] = record["_state"]
            records.append(record)
            if on_record is not None:
                on_record(record)
        return records

    def run_point(
        self, point: Any, states: Mapping[str, Any], export: tuple[str, int | None] | None
    ) -> dict[str, Any]:
        """Merge, score and optionally export one point; exceptions become a failed record."""
        started = time.time()
        base = {
            "key": point.key,
            "recipe": dict(point.recipe),
            "worker": _where(self.device),
            "source": {"bundle": self.source.bundle, "adapters": list(self.source.adapters)},
        }
        try:
            if point.parent is not None and point.parent not in states:
                raise RuntimeError(f"warm-start parent {point.parent} has no finished state")
            warm = states.get(point.parent) if point.parent else None
            record = self._merge_and_score(point, warm, export)
        except Exception as err:  # noqa: BLE001 - the sweep records the error and goes on
            return {
                **base,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(limit=6),
                "finished": _now(started),
            }
        return {**base, "status": "done", **record, "finished": _now(started)}

    def _merge_and_score(self, point: Any, warm: Any, export: Any) -> dict[str, Any]:
        from merging_core.merge import merge
        from merging_core.methods import get_method

        recipe = point.recipe
        info = get_method(recipe["method"])
        t0 = time.perf_counter()
        if info.needs_data:
            result = merge(
                self.adapters,
                info.name,
                task_data=self.task_data(),
                warm_start=warm,
                device=self.device,
                seed=recipe["seed"],
                **recipe["params"],
            )
        else:
            result = merge(self.adapters, info.name, seed=recipe["seed"], **recipe["params"])
        t1 = time.perf_counter()
        scores = self.evaluate(result, recipe["splits"])
        t2 = time.perf_counter()
        out: dict[str, Any] = {
            "scores": scores,
            "timings": {"merge_s": t1 - t0, "eval_s": t2 - t1},
            "run": _jsonable(result.run),
            "_state": _cpu_state(result) if info.needs_data else None,
        }
        if export is not None:
            out["export"] = self._export(result, point.key, export)
        return out

    def rebuild(self, recipe: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> Any:
        """The merge of a finished point, again: a data-free recipe is merged anew; a data-driven
        one starts from its saved learned ``state`` and stops before the first step.

        Raises:
            ValueError: a data-driven recipe without its state.
        """
        from merging_core.merge import merge
        from merging_core.methods import get_method

        info = get_method(recipe["method"])
        if not info.needs_data:
            return merge(self.adapters, info.name, seed=recipe["seed"], **recipe["params"])
        if state is None:
            raise ValueError(f"a {info.name!r} run can only be rebuilt from its saved state")
        return merge(
            self.adapters, info.name, task_data=self.task_data(), warm_start=dict(state),
            should_stop=lambda: True, device=self.device, seed=recipe["seed"], cache=self.cache,
            **recipe["params"],
        )  # fmt: skip

    def evaluate(self, result: Any, splits: Sequence[str]) -> dict[str, Any]:
        """Per split, the bundle's per-task scores of ``result`` (empty without a bundle)."""
        if self.bundle is None:
            return {}
        return {s: self.bundle.evaluate(result, tasks=list(self.tasks), split=s) for s in splits}

    def _export(self, result: Any, key: str, export: tuple[str, int | None]) -> str:
        from merging_core.export import export_merge

        folder, rank = export
        target = Path(folder) / "exports" / key
        export_merge(result, target, rank=rank, overwrite=True)
        return str(Path("exports") / key)


def _load_bundle(name_or_folder: str) -> Any:
    from merging_core.bundles import load_bundle

    return load_bundle(name_or_folder)


def _adapters(bundle: Any, source: Source) -> AdapterSet:
    from merging_core import io

    if bundle is not None:
        adapters = bundle.adapter_set()
    else:
        adapters = AdapterSet.from_adapters(io.load_adapters(source.adapters))
    if source.tasks is None:
        return adapters
    names = list(adapters.names)
    unknown = [t for t in source.tasks if t not in names]
    if unknown:
        raise ValueError(f"sweep tasks {unknown} are not among the adapters {names}")
    return adapters.subset([names.index(t) for t in source.tasks])


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("sweep device is cuda, but this worker has no CUDA device")
    return device


def _cpu_state(result: Any) -> dict[str, torch.Tensor] | None:
    state = result.state
    if not state:
        return None
    return {str(k): torch.as_tensor(v).detach().cpu() for k, v in state.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _where(device: str) -> dict[str, Any]:
    return {"host": platform.node(), "pid": os.getpid(), "device": device}


def _now(started: float) -> dict[str, float]:
    return {"wall_s": time.time() - started, "at": time.time()}
