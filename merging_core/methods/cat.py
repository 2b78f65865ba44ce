"""CAT: exact concatenation of LoRA factors (LoRA Soups' CAT; PEFT ``combination_type="cat"``).

Space: factors (exact). The merged update is ``Σ_t w_t B_t A_t``, stored as one LoRA of rank
``R = Σ r_t`` whose factors are the inputs stacked side by side:

    PEFT layout (``weight_on="A"``): B = [B_1 … B_T]          (d_out, R)
                                     A = [w_1 A_1; …; w_T A_T]  (R, d_in)
    TA layout (``weight_on="B"``):   B = [w_1 B_1 … w_T B_T]  (d_out, R)
                                     A = [A_1; …; A_T]          (R, d_in)

In ΔW this is Task Arithmetic with weights ``w_t`` and λ = 1: ``methods.task_arithmetic``
gives the same ΔW. The two differ only in which factor carries the weight (TA folds ``λ w_t`` into
B; PEFT's ``cat`` folds ``w_t s_t`` into A), which matters to anything that reads A or B alone,
for example a later factor-wise merge. No SVD and no truncation: nothing is lost, and the rank
grows with every adapter (export truncates if asked).

LoRA Soups *trains* the per-layer weights on a little task data; this data-free version takes the
weights as given (one per adapter, the same for every module).

References:
    LoRA Soups (Prabhakar et al., COLING 2025): https://arxiv.org/abs/2410.13025
    PEFT ``add_weighted_adapter``: https://huggingface.co/docs/peft/main/en/package_reference/lora
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet
from merging_core.elementwise.steps import check_choice
from merging_core.methods.registry import Param, register_method
from merging_core.methods.shared import adapter_weights
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    result_from_modules,
)

WEIGHT_ON = ("A", "B")


def concatenate_factors(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    weight_on: str = "A",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``B_t (d_out, r_t)`` side by side and ``A_t (r_t, d_in)`` on top of each other.

    Returns:
        ``B (d_out, R)`` and ``A (R, d_in)`` with ``B @ A = Σ_t w_t B_t A_t``; ``w_t`` scales
        the ``A_t`` block (``weight_on="A"``) or the ``B_t`` block (``"B"``).
    """
    check_choice("weight_on", weight_on, WEIGHT_ON)
    on_a = weight_on == "A"
    B = torch.cat([B.float() * (1.0 if on_a else w) for B, w in zip(Bs, weights, strict=True)], 1)
    A = torch.cat([A.float() * (w if on_a else 1.0) for A, w in zip(As, weights, strict=True)], 0)
    return B, A  # (d_out, R), (R, d_in)


@register_method(
    name="cat",
    pretty_name="CAT (exact concatenation)",
    tags=("deterministic",),  # ignores the seed (the app hides its seed box)
    reference_url="https://arxiv.org/abs/2410.13025",
    space="factors",
    params=(
        Param(
            "weights",
            "weights",
            None,
            low=-4.0,
            high=4.0,
            help="Per-adapter weights w_t (default: all 1).",
        ),
        Param(
            "weight_on",
            "choice",
            "A",
            choices=WEIGHT_ON,
            help="Which factor carries w_t: 'A' as PEFT's cat, 'B' as Task Arithmetic.",
        ),
    ),
)
def cat(
    adapter_set: AdapterSet,
    *,
    weights: Sequence[float] | None = None,
    weight_on: str = "A",
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Σ_t w_t B_t A_t as exact stacked factors of rank Σ r_t (no SVD, nothing lost).

    Args:
        adapter_set: the adapters; task order = block order.
        weights: per-adapter ``w_t`` (all 1 when None). weight_on: ``"A"`` or ``"B"``.
        generator: unused (deterministic). progress: optional callback.
    """
    w = adapter_weights(weights, len(adapter_set))
    modules: dict[str, MergedModule] = {}
    for name, mods in each_module(adapter_set, progress):
        B, A = concatenate_factors([m.B for m in mods], [m.A for m in mods], w, weight_on=weight_on)
        modules[name] = MergedModule.from_factors(mods[0], B, A)
    return result_from_modules(adapter_set, modules)
