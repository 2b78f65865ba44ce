"""TIES-Merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint mean, then λ.

Space: ΔW, element-wise. Each task's ΔW_t = B_t A_t ``(d_out, d_in)`` is formed one module at a
time (no low-rank shortcut exists, methods.md L5) and the result is a dense ``MergedModule``.
Because only ΔW_t is read, the answer is the same for (B·M, M⁻¹·A) as for (B, A).

Steps (:mod:`merging_core.methods.sparsify`):
    1. trim: keep the top ``density`` fraction of each task's magnitudes, either over *all* of
       the task's coordinates (``threshold="global"``, the official notebook) or per module
       (``"per_tensor"``, PEFT and mergekit);
    2. elect: the sign of the summed trimmed values (``"total"``) or of the summed signs;
    3. disjoint mean over the tasks agreeing with the elected sign; 4. multiply by λ.

Memory and cost. The streaming engine :func:`ties_merge_parts` holds the ``T`` tensors of one
module at a time (``T · d_out · d_in`` floats) plus the dense outputs. The global threshold costs
two extra passes per task (an exact radix select, :func:`sparsify.magnitude_threshold`), so every
ΔW_t is formed three times instead of being kept: time traded for ``T×`` less memory.

Conventions versus other implementations:
    * kept count is ``int(density · N)`` (PEFT); the official notebook keeps one more;
    * per-task weights scale the trimmed values after the sign election and do not enter the
      disjoint mean's count (PEFT's ``ties``); the official code has one λ only;
    * with ``sign_method="total"`` an exactly tied elected sign takes the majority of this
      module's elected signs (the official rule, which takes it over the whole model) and is
      dropped if that ties too; such ties need non-zero values that cancel exactly (w and −w);
    * ``"frequency"`` is PEFT's option and uses PEFT's tie rule (a tied count elects +): with an
      even number of tasks tied counts are common, so the rule matters there.

Reference: https://arxiv.org/abs/2306.01708
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.methods.registry import Param, register_method
from merging_core.methods.sparsify import (
    SignMethod,
    check_density,
    disjoint_mean,
    elect_sign,
    magnitude_threshold,
    trim_by_magnitude,
)
from merging_core.methods.task_arithmetic import adapter_weights
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)

TaskTensor = Callable[[int, int], torch.Tensor]  # (part index, task index) -> tensor
THRESHOLDS = ("global", "per_tensor")
SIGN_METHODS = ("total", "frequency")
TIE_RULES = {"total": "majority", "frequency": "positive"}  # official / PEFT, see above

SCALING = Param(
    "scaling",
    "float",
    1.0,
    low=-2.0,
    high=4.0,
    step=0.05,
    help="λ applied to the merged update (the TIES paper searches 0.8–2.5).",
)
WEIGHTS = Param(
    "weights",
    "weights",
    None,
    low=-4.0,
    high=4.0,
    help="Optional per-adapter weights w_t, applied after the sign election (default: all 1).",
)
THRESHOLD = Param(
    "threshold",
    "choice",
    "global",
    choices=THRESHOLDS,
    help="Trim over all of a task's modules at once (official) or module by module (PEFT).",
)
SIGN_METHOD = Param(
    "sign_method",
    "choice",
    "total",
    choices=SIGN_METHODS,
    help="Elect the sign of the summed values (official 'mass') or of the summed signs.",
)


def linear_delta(module: LoraModule) -> torch.Tensor:
    """ΔW in the linear layout: ``(d_out, r) @ (r, d_in) -> (d_out, d_in)``, float32."""
    return module.B.float() @ module.A.float()


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


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
    check_density(density)
    check_choice("threshold", threshold, THRESHOLDS)
    check_choice("sign_method", sign_method, SIGN_METHODS)
    thresholds, merge_phase = None, progress
    if threshold == "global" and density < 1.0:
        # the two threshold passes form every tensor twice, the merge pass once
        thresholds = task_thresholds(
            task_tensor,
            num_parts=num_parts,
            num_tasks=num_tasks,
            density=density,
            progress=scaled_progress(progress, 0.0, 2 / 3),
        )
        merge_phase = scaled_progress(progress, 2 / 3, 1.0)
    merged = []
    for i in range(num_parts):
        trimmed = [
            trim_by_magnitude(
                task_tensor(i, t),
                density=density,
                threshold=None if thresholds is None else thresholds[t],
            )
            for t in range(num_tasks)
        ]  # T tensors of this part only
        sign = elect_sign(trimmed, method=sign_method, tie=TIE_RULES[sign_method])
        merged.append(scaling * disjoint_mean(trimmed, sign, weights=weights))
        report_progress(merge_phase, (i + 1) / num_parts, f"TIES part {i + 1}/{num_parts}")
    return merged, thresholds


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


@register_method(
    name="ties",
    pretty_name="TIES-Merging",
    tags=("deterministic",),  # ignores the seed (the app hides its seed box)
    reference_url="https://arxiv.org/abs/2306.01708",
    space="delta",
    params=(
        Param(
            "density",
            "float",
            0.2,
            low=0.01,
            high=1.0,
            step=0.01,
            help="k: fraction of each task's largest-magnitude entries kept (paper default 0.2).",
        ),
        THRESHOLD,
        SIGN_METHOD,
        SCALING,
        WEIGHTS,
    ),
)
def ties(
    adapter_set: AdapterSet,
    *,
    density: float = 0.2,
    threshold: str = "global",
    sign_method: SignMethod = "total",
    scaling: float = 1.0,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """TIES on ΔW (element-wise, dense result, streamed module by module).

    Args:
        adapter_set: the adapters; task order = set order.
        density: kept fraction per task, (0, 1]. threshold: ``"global"`` | ``"per_tensor"``.
        sign_method: ``"total"`` | ``"frequency"``. scaling: λ. weights: per-adapter ``w_t``.
        generator: unused (TIES is deterministic). progress: optional callback.

    Returns:
        Dense merged ΔW per module; diagnostics ``trim_thresholds`` and ``nonzero_fraction``.
    """
    names = adapter_set.modules
    w = adapter_weights(weights, len(adapter_set))

    def delta(i: int, t: int) -> torch.Tensor:
        return linear_delta(adapter_set.factors(names[i])[t])  # (d_out, d_in)

    merged, thresholds = ties_merge_parts(
        delta,
        num_parts=len(names),
        num_tasks=len(adapter_set),
        density=density,
        threshold=threshold,
        sign_method=sign_method,
        weights=w,
        scaling=scaling,
        progress=progress,
    )
    return dense_result(adapter_set, merged, thresholds)
