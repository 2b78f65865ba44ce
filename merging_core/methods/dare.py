"""DARE (Yu et al., ICML 2024): drop each ΔW entry with probability p, rescale by 1/(1-p), merge.

Space: ΔW, element-wise. Each ΔW_t = B_t A_t ``(d_out, d_in)`` is formed one module at a time, a
Bernoulli keep-mask is drawn for it, and the dropped-and-rescaled deltas are merged with Task
Arithmetic (``variant="linear"``, DARE-TA) or TIES (``variant="ties"``, DARE-TIES). The result
is a dense ``MergedModule`` (lazy, merged when read, on large models: see
``streaming.STREAM_BYTES``); it depends only on ΔW_t, so (B·M, M⁻¹·A) gives the same answer for the
same seed.

Randomness: one seed per (module, task) is drawn from the caller's generator before anything
else, and each mask uses its own generator seeded with it. The masks therefore do not depend on
the order in which modules are visited, and the global TIES trim can re-form the same dropped
deltas in each of its passes. ``drop_rate = 0`` draws nothing and equals TA / TIES exactly.

Cost: DARE-TA, and DARE-TIES with the global (or no) trim, run on the fused engine of
:mod:`merging_core.elementwise.fused` (each module in blocks of rows; the mask of a block is the
next stretch of draws from that (module, task)'s generator, so it is the mask of one draw over
the whole tensor, and the result the same bytes). Drawing the masks (one 32-bit Mersenne
Twister number per entry, serial) is most of DARE's time on LLM-sized modules.

Conventions versus other implementations (methods.md §5): DARE-TIES here is DARE followed by
the full TIES of :mod:`merging_core.methods.ties` (the same shared engine); ``density = 1`` (the
default) skips the trim, as PEFT's and mergekit's ``dare_ties`` and KnOTS's configs do, and
``density = 0.2`` gives MergeLM's variant. The rescale is 1/(1-p) (not mergekit's L1-norm matching).

Reference: https://arxiv.org/abs/2311.03099
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from merging_core.adapters import AdapterSet
from merging_core.elementwise.fused import (
    elementwise_result,
    factor_deltas,
    fused_sum_parts,
    fused_ties_parts,
)
from merging_core.elementwise.steps import SignMethod, check_choice
from merging_core.elementwise.streaming import (
    THRESHOLDS,
    dense_result,
    dropped_tensors,
    linear_delta,
    mask_seeds,
    scaled_progress,
    streamed_ties,
    streams,
    ties_merge_parts,
)
from merging_core.methods.registry import Param, register_method
from merging_core.methods.shared import (
    DROP_RATE,
    SCALING,
    SIGN_METHOD,
    THRESHOLD,
    WEIGHTS,
    adapter_weights,
)
from merging_core.results import MergeResult, Progress

VARIANTS = ("linear", "ties")


@register_method(
    name="dare",
    pretty_name="DARE (drop and rescale)",
    reference_url="https://arxiv.org/abs/2311.03099",
    space="delta",
    params=(
        Param(
            "variant",
            "choice",
            "linear",
            choices=VARIANTS,
            help="Merge the dropped deltas by Task Arithmetic ('linear') or by TIES ('ties').",
        ),
        DROP_RATE,
        Param(
            "density",
            "float",
            1.0,
            low=0.01,
            high=1.0,
            step=0.01,
            help="TIES variant only: kept fraction after dropping (1 = no trim, as PEFT).",
        ),
        replace(
            THRESHOLD, help="TIES variant only: trim over all modules of a task, or per module."
        ),
        replace(SIGN_METHOD, help="TIES variant only: elect the sign of summed values or signs."),
        replace(SCALING, help="λ applied to the merged update."),
        WEIGHTS,
    ),
)
def dare(
    adapter_set: AdapterSet,
    *,
    variant: str = "linear",
    drop_rate: float = 0.9,
    density: float = 1.0,
    threshold: str = "global",
    sign_method: SignMethod = "total",
    scaling: float = 1.0,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """DARE on ΔW (element-wise, dense result, streamed module by module).

    Args:
        adapter_set: the adapters; task order = set order.
        variant: ``"linear"`` (DARE + TA) or ``"ties"`` (DARE + TIES).
        drop_rate: ``p`` in [0, 1). density, threshold, sign_method: TIES options (ties variant).
        scaling: λ. weights: per-adapter ``w_t``.
        generator: source of the drop masks. progress: optional callback.

    Raises:
        ValueError: unknown variant, or an option out of range.
    """
    check_choice("variant", variant, VARIANTS)
    names = adapter_set.modules
    w = adapter_weights(weights, len(adapter_set))
    seeds = mask_seeds(generator, len(names), len(adapter_set))
    source = factor_deltas(adapter_set, drop_rate=drop_rate, seeds=seeds)
    if variant == "linear":
        parts = fused_sum_parts(source, weights=w, scaling=scaling)
        return elementwise_result(adapter_set, parts, None, progress)
    check_choice("threshold", threshold, THRESHOLDS)
    if threshold == "global" or density >= 1.0:
        parts, thresholds = fused_ties_parts(
            source, density=density, sign_method=sign_method, weights=w, scaling=scaling,
            progress=scaled_progress(progress, 0.0, 0.5),
        )  # fmt: skip
        return elementwise_result(
            adapter_set, parts, thresholds, scaled_progress(progress, 0.5, 1.0)
        )

    def delta(i: int, t: int) -> torch.Tensor:
        return linear_delta(adapter_set.factors(names[i])[t])  # (d_out, d_in)

    dropped = dropped_tensors(delta, seeds, drop_rate)  # per-tensor trim: the unfused engine
    if streams(adapter_set):  # lazy modules, merged when read (see streaming.STREAM_BYTES)
        return streamed_ties(
            adapter_set, dropped, density=density, threshold=threshold, sign_method=sign_method,
            weights=w, scaling=scaling, progress=progress,
        )  # fmt: skip
    merged, thresholds = ties_merge_parts(
        dropped,
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
