"""Pico: pre-merge interference calibration in output space (Tang & Yang, arXiv 2604.16826).

Space: factors (B). Per module, the scale-folded output factors are stacked,
``B_all = [B_1 … B_T]`` ``(m, R)``, with thin SVD ``U diag(σ) Vᵀ``. Each direction's sharing score
is its energy fraction ``s_j = σ_j² / Σ_k σ_k²`` and its calibration factor
``α_j = 1 / (1 + (T − 1) s_j)`` ∈ [1/T, 1]. The calibration operator
``S = I_m + U diag(α − 1) Uᵀ`` shrinks the crowded shared directions of B (A is untouched):
``B̃_t = S B_t``. We never form the ``m × m`` matrix S nor the SVD: the same map is
``[B̃_1 … B̃_T] = E · B_all (E I + (T − 1) B_allᵀ B_all)⁻¹`` with ``E = ‖B_all‖_F²``
(see :func:`calibrate_b`).

The calibrated adapters are merged with a base method M (Task Arithmetic, TIES or TSV-M, through
:func:`merging_core.merge.merge`), and the result is rescaled per module so that its Frobenius
norm equals the mean norm of the *original* updates:

    γ = ((1/T) Σ_t ‖B_t A_t‖_F) / ‖ΔW_calib‖_F,     ΔW_Pico = γ · ΔW_calib.

Any global scale inside M cancels under γ, so Pico has no scale knob. This is the paper's version
(calibrate → merge → γ), not the reference repository's folder mode, which rescales each adapter
on its own. Because the sharing scores come from B's spectrum, Pico depends on how ΔW is split
into factors: it is invariant under ``(B Q, Qᵀ A)`` for orthogonal ``Q``, not for general ``M``.
With T = 1 every ``α_j = 1`` and Pico returns the adapter unchanged (for TA and TSV-M).

Reference: https://arxiv.org/abs/2604.16826 (code: yixuantt/Pico, ``PICO.calibrate_layer`` and
``PICO.compensate_energy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.factors import CORE_DTYPE, frobenius_norm
from merging_core.methods.registry import Param, register_method, run_method
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    each_module,
    report_progress,
    result_from_modules,
)

BASE_METHODS = ("task_arithmetic", "ties", "tsv_m")


def calibrate_b(Bs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Pico's calibrated output factors ``B̃_t = S B_t`` for one module, without an SVD.

    With ``B_all = U Σ Vᵀ``, ``G = B_allᵀ B_all = V Σ² Vᵀ`` and ``E = tr G = Σ σ_j²``, the
    paper's ``S B_all = U diag(α) Σ Vᵀ`` with ``α_j = E / (E + (T−1) σ_j²)`` is the matrix function

        S B_all = E · B_all (E I + (T − 1) G)⁻¹          (R × R solve, SPD, condition ≤ T)

    so the calibration costs one ``(m, R)`` Gram and one small solve instead of an SVD of the
    ``m × R`` stack, and directions with ``σ_j = 0`` need no special case.

    Args:
        Bs: per task ``(m, r_t)``, LoRA scale folded in.

    Returns:
        Per task ``(m, r_t)`` in each input's dtype.
    """
    if len(Bs) == 0:
        raise ValueError("calibrate_b needs at least one B factor, got none")
    B_all = torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1)  # (m, R)
    gram = B_all.T @ B_all  # (R, R)
    energy = float(torch.trace(gram))
    if energy == 0.0:
        return [B.clone() for B in Bs]
    system = energy * torch.eye(gram.shape[0], dtype=CORE_DTYPE) + (len(Bs) - 1) * gram
    # B_all · E (E I + (T−1) G)⁻¹ = E · (solve(system, B_allᵀ))ᵀ since the system is symmetric
    calibrated = energy * torch.linalg.solve(system, B_all.T).T  # (m, R)
    widths = [B.shape[1] for B in Bs]
    return [c.to(B.dtype) for c, B in zip(calibrated.split(widths, dim=1), Bs, strict=True)]


def calibrated_set(adapter_set: AdapterSet) -> AdapterSet:
    """The adapters with every common module's B calibrated (other modules are left out)."""
    new_modules: list[dict[str, LoraModule]] = [{} for _ in adapter_set.adapters]
    for name in adapter_set.modules:
        mods = adapter_set.factors(name)
        for t, (mod, B) in enumerate(zip(mods, calibrate_b([m.B for m in mods]), strict=True)):
            new_modules[t][name] = mod.with_factors(B, mod.A)
    adapters = [
        Adapter(name=a.name, modules=mods, config=a.config)
        for a, mods in zip(adapter_set.adapters, new_modules, strict=True)
    ]
    return AdapterSet.from_adapters(adapters)


def energy_gamma(originals: Sequence[LoraModule], merged: MergedModule) -> float:
    """γ = mean_t ‖ΔW_t‖_F / ‖ΔW_merged‖_F (1 when the merge is exactly zero)."""
    target = sum(frobenius_norm(m.B, m.A) for m in originals) / len(originals)
    norm = merged.norm()
    return target / norm if norm > 0.0 else 1.0


def _base_params(base: str, ties_density: float) -> dict[str, Any]:
    if base == "task_arithmetic":
        return {"scaling": 1.0}
    if base == "ties":
        return {"density": ties_density}
    return {}


@register_method(
    name="pico",
    pretty_name="Pico (B-space calibration)",
    reference_url="https://arxiv.org/abs/2604.16826",
    space="factors",
    tags=("tradeoff-baseline",),
    params=(
        Param(
            "base",
            "choice",
            "task_arithmetic",
            choices=BASE_METHODS,
            help="The merge applied to the calibrated adapters (with its default parameters).",
        ),
        Param(
            "ties_density",
            "float",
            0.2,
            low=0.01,
            high=1.0,
            step=0.01,
            help="TIES trim density when base is ties (the paper does not state its value).",
        ),
        Param(
            "restore_norm",
            "bool",
            True,
            help="Rescale to the mean source norm by γ (the paper's method; off = ablation).",
        ),
    ),
)
def pico(
    adapter_set: AdapterSet,
    *,
    base: str = "task_arithmetic",
    ties_density: float = 0.2,
    restore_norm: bool = True,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Calibrate B in output space, merge with ``base``, rescale by γ (Pico); acts on factors."""
    if base not in BASE_METHODS:
        raise ValueError(f"base must be one of {list(BASE_METHODS)}, got {base!r}")
    report_progress(progress, 0.0, "calibrating B factors")
    calibrated = calibrated_set(adapter_set)
    seed = 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    merged = run_method(calibrated, base, seed=seed, params=_base_params(base, ties_density))
    modules: dict[str, MergedModule] = {}
    gammas: dict[str, float] = {}
    for name, mods in each_module(adapter_set, progress):
        gamma = energy_gamma(mods, merged.modules[name])
        gammas[name] = gamma if restore_norm else 1.0
        modules[name] = merged.modules[name].scaled(gammas[name])  # lazy stays lazy
    diagnostics = {"base": base, "gamma": gammas, "base_diagnostics": dict(merged.diagnostics)}
    return result_from_modules(adapter_set, modules, diagnostics=diagnostics)
