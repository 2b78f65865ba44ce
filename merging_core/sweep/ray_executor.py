"""The Ray executor: resident actors, one per GPU (or per ``cpus_per_worker`` cores), each holding
the bundle, adapters and task data for the whole sweep.

A group of points (a warm-start chain along a preference line) goes to one actor, which runs it
in order, so neighbours warm-start each other without moving states between machines. Records
come back to the driver, which alone writes the sweep folder. ``address`` joins an existing
cluster (``"auto"`` or ``"host:port"``); without it a local Ray instance is started for the sweep
and shut down after it. Exports (``export:`` in the spec) are written by the actors, so on a
multi-node cluster the sweep folder must be on a shared filesystem; point files and states are
always written by the driver. Ray is optional: ``pip install 'merging-core[ray]'``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from merging_core.sweep.executors import OnRecords, OnStart
from merging_core.sweep.worker import GroupTask, Source, Worker


class _ActorWorker:
    """What each Ray actor holds: one resident :class:`Worker`."""

    def __init__(self, source: Source) -> None:
        from merging_core import runtime

        runtime.configure()
        self.worker = Worker(source)

    def run_group(self, task: GroupTask) -> list[dict[str, Any]]:
        return self.worker.run_group(task)


def import_ray() -> Any:
    """``ray``, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the ray executor needs Ray; install it with pip install 'merging-core[ray]'"
        ) from None
    return ray


def actor_plan(
    resources: dict[str, float], device: str, workers: int, cpus_per_worker: int | None
) -> tuple[int, int, int]:
    """``(actors, CPUs per actor, GPUs per actor)`` for the cluster's resources.

    With GPUs (and a device that is not ``cpu``): one actor per GPU unless ``workers`` says
    otherwise. Without: ``workers`` actors, or as many as the CPUs allow.

    Raises:
        ValueError: the cluster has no CPU (or no GPU for ``device="cuda"``).
    """
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "cuda" and gpus < 1:
        raise ValueError("sweep device is cuda, but the Ray cluster has no GPU")
    if cpus < 1:
        raise ValueError(f"the Ray cluster reports no CPU (resources {resources})")
    if gpus >= 1 and device != "cpu":
        actors = workers if workers >= 1 else gpus
        return actors, cpus_per_worker or max(1, cpus // actors), 1
    per = cpus_per_worker or max(1, cpus // max(1, workers))
    return (workers if workers >= 1 else max(1, cpus // per)), per, 0


class RayPool:
    """Resident Ray actors (see the module docstring); :meth:`run` may be called many times.

    Raises:
        ImportError: Ray is not installed. ValueError: the cluster lacks what ``source`` needs.
    """

    def __init__(
        self,
        source: Source,
        *,
        workers: int,
        address: str | None = None,
        cpus_per_worker: int | None = None,
    ) -> None:
        self.ray = ray = import_ray()
        self.started_here = not ray.is_initialized()
        if self.started_here:
            _init(ray, address, workers, cpus_per_worker)
        try:
            actors, cpus, gpus = actor_plan(
                ray.cluster_resources(), source.device, workers, cpus_per_worker
            )
            remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ActorWorker)
            actor_source = replace(source, threads=cpus, device="cuda" if gpus else "cpu")
            self.actors = [remote.remote(actor_source) for _ in range(actors)]
        except BaseException:
            self._shutdown()
            raise
        self.workers = len(self.actors)

    def run(self, tasks: list[GroupTask], on_start: OnStart, on_records: OnRecords) -> None:
        """Hand each idle actor the next group; collect groups as they finish."""
        ray, queue, idle = self.ray, list(tasks)[::-1], list(self.actors)
        pending: dict[Any, Any] = {}
        try:
            while queue or pending:
                while queue and idle:
                    task, actor = queue.pop(), idle.pop()
                    pending[actor.run_group.remote(task)] = actor
                    on_start(task)
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    idle.append(pending.pop(ref))
                    on_records(ray.get(ref))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self._shutdown()

    def _shutdown(self) -> None:
        if self.started_here:
            self.ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _init(ray: Any, address: str | None, workers: int, cpus_per_worker: int | None) -> None:
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": "ERROR",
    }
    if address:
        ray.init(address=address, **options)
    elif workers >= 1:
        ray.init(num_cpus=workers * (cpus_per_worker or 1), **options)
    else:
        ray.init(**options)  # a local instance over every core and GPU of this machine
