"""Streaming engines: element-wise merges over tensors served one part (module) at a time.

Space: ΔW, or any task tensor. A ``TaskTensor`` serves ``(part, task) -> tensor`` on demand, so
only one part's ``T`` tensors are held at once: TIES (:func:`ties_merge_parts`, with exact global
thresholds from two streaming passes), a weighted sum, reproducible DARE masks (one seed per
part and task). Used on dense ΔW (TIES, DARE), on KnOTS blocks and on Core Space cores; the
fused engine (:mod:`merging_core.elementwise.fused`) gives the same bytes for LoRA ΔW. Above
:data:`STREAM_BYTES` a result's modules are lazy, each merged when it is read.

References:
    TIES-Merging: https://arxiv.org/abs/2306.01708
    DARE: https://arxiv.org/abs/2311.03099
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.elementwise.steps import (
    SIGN_METHODS,
    TIE_RULES,
    SignMethod,
    check_choice,
    check_density,
    disjoint_mean,
    drop_and_rescale,
    elect_sign,
    magnitude_threshold,
    trim_by_magnitude,
)
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)

TaskTensor = Callable[[int, int], torch.Tensor]  # (part index, task index) -> tensor
THRESHOLDS = ("global", "per_tensor")


def linear_delta(module: LoraModule) -> torch.Tensor:
    """ΔW in the linear layout: ``(d_out, r) @ (r, d_in) -> (d_out, d_in)``, float32."""
    return module.B.float() @ module.A.float()


def scaled_progress(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A callback that maps a phase's ``[0, 1]`` onto ``[start, end]`` of ``progress``."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)


def task_thresholds(
    task_tensor: TaskTensor,
    *,
    num_parts: int,
    num_tasks: int,
    density: float,
    progress: Progress | None = None,
) -> list[float]:
    """Per task, the exact global trim threshold over all of its parts (two streaming passes)."""

    def chunks(t: int) -> Callable[[], Any]:
        return lambda: (task_tensor(i, t) for i in range(num_parts))

    thresholds = []
    for t in range(num_tasks):
        thresholds.append(magnitude_threshold(chunks(t), density=density))
        report_progress(progress, (t + 1) / num_tasks, f"trim threshold of task {t + 1}")
    return thresholds


def global_thresholds(
    task_tensor: TaskTensor,
    *,
    num_parts: int,
    num_tasks: int,
    density: float,
    threshold: str = "global",
    sign_method: SignMethod = "total",
    progress: Progress | None = None,
) -> list[float] | None:
    """Check the options; the per-task global thresholds, or None (per-tensor trim or
    ``density = 1``). The two threshold passes form every tensor twice."""
    check_density(density)
    check_choice("threshold", threshold, THRESHOLDS)
    check_choice("sign_method", sign_method, SIGN_METHODS)
    if threshold != "global" or density >= 1.0:
        return None
    return task_thresholds(
        task_tensor, num_parts=num_parts, num_tasks=num_tasks, density=density, progress=progress
    )


def ties_merge_parts(
    task_tensor: TaskTensor,
    *,
    num_parts: int,
    num_tasks: int,
    density: float,
    threshold: str = "global",
    sign_method: SignMethod = "total",
    weights: Sequence[float] | None = None,
    scaling: float = 1.0,
    progress: Progress | None = None,
) -> tuple[list[torch.Tensor], list[float] | None]:
    """TIES over tensors served one part at a time (modules of ΔW, or KnOTS blocks).

    Args:
        task_tensor: ``(part, task) -> tensor``; deterministic (global trims call it 3 times).
        num_parts: number of parts (modules). num_tasks: ``T``.
        density: kept fraction per task, (0, 1]. threshold: ``"global"`` or ``"per_tensor"``.
        sign_method: ``"total"`` or ``"frequency"``. weights: ``T`` weights or None.
        scaling: λ. progress: optional ``callback(fraction, message)``.

    Returns:
        The merged tensor of every part (each shaped like its inputs), and the per-task global
        thresholds (None for per-tensor trims or when density is 1, which trims nothing).
    """
    thresholds = global_thresholds(
        task_tensor, num_parts=num_parts, num_tasks=num_tasks, density=density,
        threshold=threshold, sign_method=sign_method,
        progress=scaled_progress(progress, 0.0, 2 / 3),
    )  # fmt: skip
    merge_phase = progress if thresholds is None else scaled_progress(progress, 2 / 3, 1.0)
    parts = ties_part_functions(
        task_tensor, num_parts=num_parts, num_tasks=num_tasks, density=density,
        thresholds=thresholds, sign_method=sign_method, weights=weights, scaling=scaling,
    )  # fmt: skip
    merged = []
    for i, part in enumerate(parts):
        merged.append(part())
        report_progress(merge_phase, (i + 1) / num_parts, f"TIES part {i + 1}/{num_parts}")
    return merged, thresholds


def ties_part_functions(
    task_tensor: TaskTensor,
    *,
    num_parts: int,
    num_tasks: int,
    density: float,
    thresholds: list[float] | None,
    sign_method: SignMethod = "total",
    weights: Sequence[float] | None = None,
    scaling: float = 1.0,
) -> list[Callable[[], torch.Tensor]]:
    """One deterministic ``() -> merged tensor`` per part (trim, elect, disjoint mean, λ).

    The streaming form of the merge pass of :func:`ties_merge_parts`: calling part ``i`` holds
    only that part's ``T`` task tensors. ``thresholds`` are the global ones (None: per tensor).
    """

    def part(i: int) -> Callable[[], torch.Tensor]:
        def merged() -> torch.Tensor:
            trimmed = [
                trim_by_magnitude(
                    task_tensor(i, t),
                    density=density,
                    threshold=None if thresholds is None else thresholds[t],
                )
                for t in range(num_tasks)
            ]  # T tensors of this part only
            sign = elect_sign(trimmed, method=sign_method, tie=TIE_RULES[sign_method])
            return scaling * disjoint_mean(trimmed, sign, weights=weights)

        return merged

    return [part(i) for i in range(num_parts)]


STREAM_BYTES = 1 << 28
"""Dense float32 bytes of all merged modules above which element-wise results are streamed
(lazy modules computed on demand, e.g. by the export; 256 MiB, an 8B model's attention is ~5 GiB).
Below it they are computed and stored, as small models' evaluation reads them many times."""


def streams(adapter_set: AdapterSet) -> bool:
    """True when the dense merged modules of ``adapter_set`` would exceed :data:`STREAM_BYTES`."""
    dense = sum(
        4 * f.d_out * f.d_in for f in (adapter_set.factors(n)[0] for n in adapter_set.modules)
    )
    return dense > STREAM_BYTES


def streamed_ties(
    adapter_set: AdapterSet,
    delta: TaskTensor,
    *,
    density: float,
    threshold: str,
    sign_method: SignMethod,
    weights: Sequence[float],
    scaling: float,
    progress: Progress | None,
) -> MergeResult:
    """TIES with the merge pass deferred: thresholds now, each module when it is read."""
    shape = {"num_parts": len(adapter_set.modules), "num_tasks": len(adapter_set)}
    thresholds = global_thresholds(
        delta, density=density, threshold=threshold, sign_method=sign_method, progress=progress,
        **shape,
    )  # fmt: skip
    parts = ties_part_functions(
        delta, density=density, thresholds=thresholds, sign_method=sign_method, weights=weights,
        scaling=scaling, **shape,
    )  # fmt: skip
    report_progress(progress, 1.0, "TIES thresholds ready; modules merge when read")
    return lazy_result(adapter_set, parts, thresholds)


def lazy_result(
    adapter_set: AdapterSet,
    parts: Sequence[Callable[[], torch.Tensor]],
    thresholds: list[float] | None,
) -> MergeResult:
    """Wrap per-module merge functions as lazy dense modules (``nonzero_fraction`` is None:
    counting it would compute every module once more)."""
    modules = {
        name: MergedModule.from_compute(adapter_set.factors(name)[0], fn)
        for name, fn in zip(adapter_set.modules, parts, strict=True)
    }
    diagnostics = {"nonzero_fraction": None, "trim_thresholds": thresholds, "streamed": True}
    return result_from_modules(adapter_set, modules, diagnostics=diagnostics)


def dense_result(
    adapter_set: AdapterSet,
    merged: Sequence[torch.Tensor],
    thresholds: list[float] | None,
) -> MergeResult:
    """Wrap per-module dense ΔW (linear layout, module order) as a ``MergeResult``."""
    modules = {
        name: MergedModule.from_dense(adapter_set.factors(name)[0], dw)
        for name, dw in zip(adapter_set.modules, merged, strict=True)
    }
    nonzero = sum(int(torch.count_nonzero(dw)) for dw in merged)
    diagnostics = {
        "nonzero_fraction": nonzero / max(sum(dw.numel() for dw in merged), 1),
        "trim_thresholds": thresholds,
    }
    return result_from_modules(adapter_set, modules, diagnostics=diagnostics)


def mask_seeds(
    generator: torch.Generator | None, num_parts: int, num_tasks: int
) -> list[list[int]]:
    """One seed per (part, task), ``num_parts × num_tasks``, drawn from ``generator``."""
    seeds = torch.randint(0, 2**62, (num_parts, num_tasks), generator=generator)
    return seeds.tolist()


def dropped_tensors(
    task_tensor: TaskTensor, seeds: list[list[int]], drop_rate: float
) -> TaskTensor:
    """Wrap ``task_tensor`` so each (part, task) tensor is dropped-and-rescaled reproducibly."""

    def dropped(i: int, t: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seeds[i][t])
        return drop_and_rescale(task_tensor(i, t), drop_rate=drop_rate, generator=gen)

    return dropped


def weighted_sum_parts(
    task_tensor: TaskTensor,
    *,
    num_parts: int,
    weights: Sequence[float],
    scaling: float,
    progress: Progress | None = None,
) -> list[torch.Tensor]:
    """``λ Σ_t w_t τ_t`` for every part (Task Arithmetic on served tensors)."""
    merged = []
    for i in range(num_parts):
        total = sum(w * task_tensor(i, t) for t, w in enumerate(weights))
        merged.append(scaling * total)
        report_progress(progress, (i + 1) / num_parts, f"summing part {i + 1}/{num_parts}")
    return merged


def weighted_sum_functions(
    task_tensor: TaskTensor, *, num_parts: int, weights: Sequence[float], scaling: float
) -> list[Callable[[], torch.Tensor]]:
    """The streaming form of :func:`weighted_sum_parts`: one ``() -> λ Σ_t w_t τ_t`` per part."""

    def part(i: int) -> Callable[[], torch.Tensor]:
        def merged() -> torch.Tensor:
            total = sum(w * task_tensor(i, t) for t, w in enumerate(weights))
            return scaling * total

        return merged

    return [part(i) for i in range(num_parts)]
