"""TIES-Merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint mean, then λ.

Space: ΔW, element-wise. Each task's ΔW_t = B_t A_t ``(d_out, d_in)`` is formed one module at a
time (no low-rank shortcut exists, methods.md L5) and the result is a dense ``MergedModule``.
Because only ΔW_t is read, the answer is the same for (B·M, M⁻¹·A) as for (B, A).

Steps (:mod:`merging_core.elementwise.steps`):
    1. trim: keep the top ``density`` fraction of each task's magnitudes, either over *all* of
       the task's coordinates (``threshold="global"``, the official notebook) or per module
       (``"per_tensor"``, PEFT and mergekit);
    2. elect: the sign of the summed trimmed values (``"total"``) or of the summed signs;
    3. disjoint mean over the tasks agreeing with the elected sign; 4. multiply by λ.

Memory and cost. The global trim (the default) runs on the fused engine of
:mod:`merging_core.elementwise.fused`: each module is merged in blocks of rows, each task's block of
ΔW_t formed once (float32, ``B_t[rows] @ A_t``), trimmed in place and folded into running sums, so a
module costs its output plus a few MiB of buffers. The exact per-task thresholds take one extra pass
(:func:`fused.fused_thresholds`: a sampled bracket, then the exact order statistic among the entries
inside it), so every ΔW_t is formed twice. When the dense outputs of the whole model exceed
:data:`streaming.STREAM_BYTES` (LLM adapters) the result's modules are lazy, each merged when read —
by the export, which truncates and releases it — so peak memory is a few modules, not the model. The
per-tensor trim (exactly ``int(density · numel)`` per module, ``topk`` order on ties) keeps the
unfused engine :func:`streaming.ties_merge_parts`. Both give the same bytes as the step-by-step
functions (tests compare them).

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

from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet
from merging_core.elementwise.fused import elementwise_result, factor_deltas, fused_ties_parts
from merging_core.elementwise.steps import SignMethod, check_choice
from merging_core.elementwise.streaming import (
    THRESHOLDS,
    dense_result,
    linear_delta,
    scaled_progress,
    streamed_ties,
    streams,
    ties_merge_parts,
)
from merging_core.methods.registry import register_method
from merging_core.methods.shared import (
    DENSITY,
    SCALING,
    SIGN_METHOD,
    THRESHOLD,
    WEIGHTS,
    adapter_weights,
)
from merging_core.results import MergeResult, Progress


@register_method(
    name="ties",
    pretty_name="TIES-Merging",
    tags=("deterministic", "tradeoff-baseline"),  # deterministic: the app hides the seed
    reference_url="https://arxiv.org/abs/2306.01708",
    space="delta",
    params=(
        DENSITY,
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
    """TIES on ΔW (element-wise, dense result, streamed module by module; lazy when large).

    Args:
        adapter_set: the adapters; task order = set order.
        density: kept fraction per task, (0, 1]. threshold: ``"global"`` | ``"per_tensor"``.
        sign_method: ``"total"`` | ``"frequency"``. scaling: λ. weights: per-adapter ``w_t``.
        generator: unused (TIES is deterministic). progress: optional callback.

    Returns:
        Dense merged ΔW per module (computed on demand when the model exceeds
        ``streaming.STREAM_BYTES``); diagnostics ``trim_thresholds`` and ``nonzero_fraction``.
    """
    names = adapter_set.modules
    w = adapter_weights(weights, len(adapter_set))
    check_choice("threshold", threshold, THRESHOLDS)
    if threshold == "global" or density >= 1.0:
        parts, thresholds = fused_ties_parts(
            factor_deltas(adapter_set), density=density, sign_method=sign_method, weights=w,
            scaling=scaling, progress=scaled_progress(progress, 0.0, 0.5),
        )  # fmt: skip
        return elementwise_result(
            adapter_set, parts, thresholds, scaled_progress(progress, 0.5, 1.0)
        )

    def delta(i: int, t: int) -> torch.Tensor:
        return linear_delta(adapter_set.factors(names[i])[t])  # (d_out, d_in)

    if streams(adapter_set):
        return streamed_ties(
            adapter_set, delta, density=density, threshold=threshold, sign_method=sign_method,
            weights=w, scaling=scaling, progress=progress,
        )  # fmt: skip
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
