"""Directional sensitivity of task losses to merge directions: J, κ(J), h(ρ), ξ(ρ₁, ρ₂).

Space: factors (the direction banks of :mod:`merging_core.adaptive.banks`); nothing dense is formed.
With ``W(φ) = W_0 + Σ_k φ_k S_k`` over all modules' directions (TARA-A rank-1 LoRA pairs or
TARA-B shared-SVD blocks), tara.md §2.6/§5 gives

* ``J_ik = ∂H_i/∂φ_k = ⟨∇_W H_i, S_k⟩_F``: row ``i`` is the gradient of task ``i``'s mean
  prediction entropy (on a fixed unlabeled batch) with respect to ``φ``, by autograd, at a chosen
  point ``φ`` (default 0.4 = Task Arithmetic). ``unit_norm`` divides column ``k`` by
  ``‖S_k‖_F = ‖b_k‖ ‖a_k‖`` (sensitivity per unit-Frobenius step along the direction).
* ``κ(J) = σ_max(J) / σ_min(J)`` over its ``N`` singular values (**reconstructed**: the paper's
  definition was not found; the per-task ratio ``max_k |J_ik| / min_k |J_ik|`` is also given).
* ``h(ρ)``: gradient of the scalarised objective, ``Jᵀ(w ⊙ ρ)`` for STCH with
  ``w = softmax(ρ(H − z)/α)``, ``Jᵀρ`` for linear (**reconstructed**, exact identities).
* ``ξ(ρ₁, ρ₂) = 1 − |cos(h(ρ₁), h(ρ₂))|`` (the paper's misalignment, as quoted by notes).

Which loss the paper used for this analysis (labelled CE or the entropy proxy) is not known; we
use the entropy proxy TARA optimises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.banks import updates_from
from merging_core.adaptive.cache import AdaptiveCache, anchors_for, banks_for
from merging_core.adaptive.coefficients import DirectionCoefficients
from merging_core.adaptive.common import check_inputs, resolve_entropy_scale
from merging_core.adaptive.objective import batch_entropies
from merging_core.preference import normalise_preference
from merging_core.results import Progress, report_progress
from merging_core.taskdata import TaskData


@dataclass(frozen=True)
class Sensitivity:
    """``J`` at one point, with what is needed to weight it by a preference.

    Attributes:
        J: ``(N, K)`` float64, ``J[i, k] = ∂H_i/∂φ_k`` (per unit-norm direction if ``unit_norm``).
        task_names: the N tasks (= adapter names). entropies: ``(N,)`` ``H_i`` at the point.
        anchors: ``z_i``. directions: per column ``(module, index in bank, owner adapter)``.
        variant: ``"a"`` or ``"b"``. unit_norm: columns divided by ``‖S_k‖_F``.
    """

    J: torch.Tensor
    task_names: tuple[str, ...]
    entropies: torch.Tensor
    anchors: tuple[float, ...]
    directions: tuple[tuple[str, int, int], ...]
    variant: str
    unit_norm: bool


def directional_jacobian(
    adapter_set: AdapterSet,
    task_data: TaskData,
    *,
    variant: str = "b",
    phi: Mapping[str, torch.Tensor] | None = None,
    init: float = 0.4,
    unit_norm: bool = False,
    batch_size: int = 64,
    entropy_scale: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
    cache: AdaptiveCache | None = None,
    progress: Progress | None = None,
) -> Sensitivity:
    """``J`` by one backward pass per task on a fixed batch of its unlabeled inputs.

    Args:
        adapter_set: adapters named like the task data's tasks. task_data: a ``TaskData``.
        variant: direction bank, ``"a"`` or ``"b"``. phi: the point (a TARA run's ``state``);
            None = all ``init`` (0.4 = Task Arithmetic). unit_norm: per unit-norm direction.
        batch_size: inputs per task (the first ``batch_size`` of a seeded permutation).
        entropy_scale: scale inside the entropies (0 = the task data's own, as TARA).
        seed: seeds that permutation. device: must match ``task_data.device``.
        cache: banks and anchors reused across calls. progress: after each task.
    """
    dev = check_inputs(adapter_set, task_data, device)
    scale = resolve_entropy_scale(task_data, entropy_scale)
    banks = banks_for(cache, adapter_set, variant=variant, device=dev)
    coeffs = DirectionCoefficients(banks, init=init, warm=phi)
    gen = torch.Generator().manual_seed(int(seed))
    rows, values = [], []
    for n, task in enumerate(adapter_set.names):
        count = task_data.num_unlabeled(task)
        index = torch.randperm(count, generator=gen)[:batch_size]
        updates = updates_from(banks, coeffs())
        batch = [task_data.unlabeled(task, index)]
        H = batch_entropies(task_data, [task], batch, updates, scale=scale)[0]
        grads = torch.autograd.grad(H, list(coeffs.parameters()))
        rows.append(torch.cat([g.detach().double().cpu() for g in grads]))
        values.append(float(H.detach()))
        report_progress(progress, (n + 1) / len(adapter_set), task)
    J = torch.stack(rows)  # (N, K)
    if unit_norm:
        norms = torch.cat([b.direction_norms().double().cpu() for b in banks.values()])
        J = J / norms.clamp_min(1e-12)
    return Sensitivity(
        J=J, task_names=tuple(adapter_set.names),
        entropies=torch.tensor(values, dtype=torch.float64),
        anchors=anchors_for(cache, adapter_set, task_data, scale=scale),
        directions=_directions(banks), variant=variant, unit_norm=unit_norm,
    )  # fmt: skip


def _directions(banks) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        (path, k, int(owner)) for path, bank in banks.items() for k, owner in enumerate(bank.owner)
    )


def condition_number(J: torch.Tensor) -> float:
    """``κ(J) = σ_max / σ_min`` over the ``min(N, K)`` singular values; ``inf`` if rank-deficient.

    Reconstructed definition (tara.md §2.6): the paper's own was not found.
    """
    s = torch.linalg.svdvals(J.double())
    if s.numel() == 0 or float(s[0]) == 0.0:
        return math.inf
    return float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf


def per_task_anisotropy(J: torch.Tensor) -> list[float]:
    """Per task ``max_k |J_ik| / min_k |J_ik|`` (the alternative reading of κ; reconstructed)."""
    a = J.double().abs()
    out = []
    for row in a:
        low = float(row.min())
        out.append(float(row.max()) / low if low > 0 else math.inf)
    return out


def preference_sensitivity(
    sens: Sensitivity, rho: Sequence[float] | None, *, kind: str = "stch", alpha: float = 1.0
) -> torch.Tensor:
    """``h(ρ)``, ``(K,)``: the gradient of the scalarised objective w.r.t. ``φ`` at the point.

    ``stch``: ``Jᵀ(w ⊙ ρ)``, ``w = softmax(ρ(H − z)/α)``; ``stch_abs``: ``Jᵀ(w ⊙ ρ ⊙ sign(H − z))``
    with ``w`` from ``|H − z|``; ``linear``: ``Jᵀρ``.

    Raises:
        ValueError: unknown ``kind``, ``alpha <= 0`` or a bad preference.
    """
    r = torch.tensor(normalise_preference(rho, count=len(sens.task_names)), dtype=torch.float64)
    gap = sens.entropies - torch.tensor(sens.anchors, dtype=torch.float64)
    if kind == "linear":
        weights = r
    elif kind in ("stch", "stch_abs"):
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        g = gap.abs() if kind == "stch_abs" else gap
        weights = torch.softmax(r * g / alpha, dim=0) * r
        weights = weights * torch.sign(gap) if kind == "stch_abs" else weights
    else:
        raise ValueError(f"kind must be 'stch', 'stch_abs' or 'linear', got {kind!r}")
    return sens.J.T @ weights  # (K, N) @ (N,) -> (K,)


def misalignment(h1: torch.Tensor, h2: torch.Tensor) -> float:
    """``ξ = 1 − |cos(h1, h2)|`` in ``[0, 1]``; 0 means the same direction profile.

    Raises:
        ValueError: shapes differ or a vector is zero.
    """
    if h1.shape != h2.shape:
        raise ValueError(f"h vectors must have the same shape, got {h1.shape} and {h2.shape}")
    n1, n2 = float(torch.linalg.vector_norm(h1)), float(torch.linalg.vector_norm(h2))
    if n1 == 0 or n2 == 0:
        raise ValueError("misalignment is undefined for a zero sensitivity vector")
    cos = float(torch.dot(h1.double(), h2.double())) / (n1 * n2)
    return 1.0 - min(abs(cos), 1.0)


def misalignment_matrix(
    sens: Sensitivity, rhos: torch.Tensor, *, kind: str = "stch", alpha: float = 1.0
) -> torch.Tensor:
    """``(P, P)`` matrix of ``ξ(ρ_p, ρ_q)`` for preferences ``rhos`` ``(P, N)``."""
    hs = [preference_sensitivity(sens, r.tolist(), kind=kind, alpha=alpha) for r in rhos]
    P = len(hs)
    out = torch.zeros(P, P, dtype=torch.float64)
    for p in range(P):
        for q in range(p + 1, P):
            out[p, q] = out[q, p] = misalignment(hs[p], hs[q])
    return out


def summarise(
    sens: Sensitivity, rhos: torch.Tensor, *, kind: str = "stch", alpha: float = 1.0, top: int = 5
) -> dict[str, Any]:
    """JSON-able summary: κ(J), per-task anisotropy, ξ statistics, top directions per task."""
    xi = misalignment_matrix(sens, rhos, kind=kind, alpha=alpha)
    upper = xi[torch.triu(torch.ones_like(xi, dtype=torch.bool), diagonal=1)]
    tops = {}
    for i, name in enumerate(sens.task_names):
        idx = torch.argsort(sens.J[i].abs(), descending=True)[:top]
        tops[name] = [
            {"module": sens.directions[k][0], "index": sens.directions[k][1],
             "owner": sens.task_names[sens.directions[k][2]], "J": float(sens.J[i, k])}
            for k in idx.tolist()
        ]  # fmt: skip
    return {
        "variant": sens.variant,
        "unit_norm": sens.unit_norm,
        "num_directions": int(sens.J.shape[1]),
        "kappa": condition_number(sens.J),
        "per_task_anisotropy": dict(zip(sens.task_names, per_task_anisotropy(sens.J), strict=True)),
        "xi_mean": float(upper.mean()) if upper.numel() else 0.0,
        "xi_max": float(upper.max()) if upper.numel() else 0.0,
        "entropies": sens.entropies.tolist(),
        "anchors": list(sens.anchors),
        "top_directions": tops,
        "reconstructed": ["kappa definition", "h(rho) = J^T(w*rho)", "unit-norm scaling"],
    }
