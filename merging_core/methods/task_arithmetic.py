"""Task Arithmetic (Ilharco et al., ICLR 2023): ΔW = λ Σ_t w_t ΔW_t.

Space: factors. The weighted sum of LoRA updates is exactly the LoRA update with stacked
factors ``B = [λ w_1 B_1 … λ w_T B_T]`` ``(m, R)`` and ``A = [A_1; …; A_T]`` ``(R, n)``, so the
result is exact at rank ``R = Σ r_t`` (export truncates it by SVD if asked).

Reference: https://arxiv.org/abs/2212.04089
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet
from merging_core.factors import stack_factors
from merging_core.methods.registry import Param, register_method
from merging_core.methods.shared import adapter_weights
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    result_from_modules,
)


@register_method(
    name="task_arithmetic",
    pretty_name="Task Arithmetic",
    tags=("deterministic",),  # ignores the seed (the app hides its seed box)
    reference_url="https://arxiv.org/abs/2212.04089",
    space="factors",
    params=(
        Param(
            "scaling",
            "float",
            0.4,
            low=-2.0,
            high=4.0,
            step=0.05,
            help="λ: global scale of the summed task updates (0.3–0.5 is typical for 8 tasks).",
        ),
        Param(
            "weights",
            "weights",
            None,
            low=-4.0,
            high=4.0,
            help="Optional per-adapter weights w_t (default: all 1).",
        ),
    ),
)
def task_arithmetic(
    adapter_set: AdapterSet,
    *,
    scaling: float = 0.4,
    weights: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """λ · Σ_t w_t B_t A_t, exact in factor space (stacked factors, rank Σ r_t)."""
    w = [scaling * x for x in adapter_weights(weights, len(adapter_set))]
    modules: dict[str, MergedModule] = {}
    for name, mods in each_module(adapter_set, progress):
        B, A = stack_factors([m.B for m in mods], [m.A for m in mods], w)  # (m, R), (R, n)
        modules[name] = MergedModule.from_factors(mods[0], B, A)
    return result_from_modules(adapter_set, modules)
