"""The one way in: ``merge(adapters, method, ...) -> MergeResult`` for every registered method.

Data-free methods (TA, TIES, TSV-M, ...) read only the adapters; data-driven ones (TARA,
AdaMerging) also learn from a task-data source (:class:`merging_core.taskdata.TaskData`) and
return their learned state in ``result.state``, which the next call takes as ``warm_start``.
Result types live in :mod:`merging_core.results` (re-exported here for callers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import merging_core.methods  # noqa: F401  (registers every method)
from merging_core.adapters import AdapterSet
from merging_core.methods.registry import run_method
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    report_progress,
    result_from_modules,
)

__all__ = [
    "MergeResult",
    "MergedModule",
    "Progress",
    "each_module",
    "merge",
    "report_progress",
    "result_from_modules",
]


def merge(
    adapter_set: AdapterSet,
    method: str,
    *,
    task_data: Any = None,
    warm_start: MergeResult | Any = None,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    cache: Any = None,
    **params: Any,
) -> MergeResult:
    """Merge ``adapter_set`` with the registered ``method``.

    Args:
        adapter_set: aligned adapters (task order = set order).
        method: a registered id (see :func:`merging_core.methods.available_methods`).
        task_data: unlabeled task data for data-driven methods (a bundle's ``task_data()``);
            ignored by data-free methods.
        warm_start: a previous ``MergeResult`` of the same method and adapters (or its
            ``state``) to start from; data-driven methods only.
        should_stop: polled between optimisation steps; a stopped run returns what it has,
            with ``result.run["stopped"]`` set.
        progress: optional ``callback(fraction, message)``.
        device: where a data-driven method runs (must match where ``task_data`` lives).
        seed: seeds the ``torch.Generator`` handed to stochastic methods.
        cache: an :class:`merging_core.adaptive.cache.AdaptiveCache` the caller owns (direction
            banks and anchors reused across calls); None recomputes them.
        **params: method parameters; validated against the method's spec.

    Raises:
        KeyError: unknown method. ValueError: bad parameters, or a data-driven method without
            ``task_data``.
    """
    return run_method(
        adapter_set, method, seed=seed, params=params, progress=progress, task_data=task_data,
        warm_start=warm_start, should_stop=should_stop, device=device, cache=cache,
    )  # fmt: skip
