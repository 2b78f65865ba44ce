"""Preference vectors and scalarisations of several task losses into one objective.

Space: task-loss space (``N`` numbers per evaluation); nothing here touches weights.

Smooth Tchebycheff (Lin et al., ICML 2024, https://arxiv.org/abs/2402.19078), as TARA-Merging
runs it (tara.md §2.4)::

    Ψ_α(H; ρ, z) = α · log Σ_i exp(ρ_i (H_i − z_i) / α)

computed stably (max-subtracted log-sum-exp). ``α → 0`` tends to ``max_i ρ_i (H_i − z_i)``
(worst task); ``α → ∞`` gives ``α log N + (1/N) Σ_i ρ_i (H_i − z_i)`` (linear). Variants: the
linear form ``Σ_i ρ_i (H_i − z_i)`` and ``|H_i − z_i|`` inside the exponent (the form the paper
notes quote; the official code is signed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

Scalarisation = Literal["stch", "stch_abs", "linear"]
SCALARISATIONS: tuple[str, ...] = ("stch", "stch_abs", "linear")


def check_simplex(rho: Sequence[float] | torch.Tensor, *, count: int, atol: float = 1e-6) -> None:
    """Raise unless ``rho`` has ``count`` non-negative finite entries summing to 1.

    Raises:
        ValueError: wrong length, negative or non-finite entry, or sum off by more than ``atol``.
    """
    values = [float(v) for v in rho]
    if len(values) != count:
        raise ValueError(f"rho must have {count} entries (one per task), got {len(values)}")
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"rho[{i}] must be finite and >= 0, got {v}")
    if abs(sum(values) - 1.0) > atol:
        raise ValueError(f"rho must sum to 1, got sum {sum(values)}")


def normalise_preference(rho: Sequence[float] | None, *, count: int) -> tuple[float, ...]:
    """Project user weights onto the simplex by dividing by their sum; ``None`` -> uniform ``1/N``.

    Raises:
        ValueError: wrong length, a negative or non-finite weight, or all weights zero.
    """
    if count < 1:
        raise ValueError(f"need at least one task, got count={count}")
    if rho is None:
        return tuple([1.0 / count] * count)
    values = [float(v) for v in rho]
    if len(values) != count:
        raise ValueError(f"rho must have {count} entries (one per task), got {len(values)}")
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"rho[{i}] must be finite and >= 0, got {v}")
    total = sum(values)
    if total <= 0:
        raise ValueError(f"rho must have a positive sum, got {values}")
    return tuple(v / total for v in values)


def stch(
    losses: torch.Tensor,
    rho: torch.Tensor,
    anchors: torch.Tensor,
    *,
    alpha: float,
    absolute: bool = False,
) -> torch.Tensor:
    """Smooth Tchebycheff ``α · log Σ_i exp(ρ_i (H_i − z_i) / α)``, max-subtracted.

    Args:
        losses: ``(N,)`` task losses ``H_i`` (differentiable).
        rho: ``(N,)`` preference on the simplex. anchors: ``(N,)`` reference points ``z_i``.
        alpha: smoothing ``α > 0``.
        absolute: use ``|H_i − z_i|`` instead of the signed gap.

    Returns:
        Scalar tensor.
    """
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    gap = losses - anchors
    if absolute:
        gap = gap.abs()
    terms = rho * gap / alpha  # (N,)
    return alpha * torch.logsumexp(terms, dim=0)


def stch_weights(
    losses: torch.Tensor, rho: torch.Tensor, anchors: torch.Tensor, *, alpha: float
) -> torch.Tensor:
    """``w = softmax_i(ρ_i (H_i − z_i) / α)``: ``∇Ψ = Σ_i w_i ρ_i ∇H_i`` (tara.md §2.4)."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    return torch.softmax(rho * (losses - anchors) / alpha, dim=0)


def linear(losses: torch.Tensor, rho: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Linear scalarisation ``Σ_i ρ_i (H_i − z_i)``."""
    return torch.sum(rho * (losses - anchors))


def scalarise(
    losses: torch.Tensor,
    rho: torch.Tensor,
    anchors: torch.Tensor,
    *,
    kind: str,
    alpha: float,
) -> torch.Tensor:
    """Dispatch to ``stch`` / ``stch_abs`` / ``linear`` by name.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "stch":
        return stch(losses, rho, anchors, alpha=alpha)
    if kind == "stch_abs":
        return stch(losses, rho, anchors, alpha=alpha, absolute=True)
    if kind == "linear":
        return linear(losses, rho, anchors)
    raise ValueError(f"scalarisation must be one of {list(SCALARISATIONS)}, got {kind!r}")


def sample_preferences(
    count: int, *, num_tasks: int, concentration: float = 1.0, generator: torch.Generator
) -> torch.Tensor:
    """``count`` preference vectors from a symmetric Dirichlet, drawn with ``generator``.

    ``Dir(c, …, c)`` is ``Gamma(c, 1)`` draws normalised by their sum; for a whole-number ``c``
    a ``Gamma(c, 1)`` draw is a sum of ``c`` ``Exp(1) = −log U`` draws, so only ``torch.rand``
    with the explicit generator is used (reproducible on every device).

    Returns:
        ``(count, num_tasks)`` float64 rows on the simplex.

    Raises:
        ValueError: non-positive count/num_tasks or a concentration that is not a positive
            whole number.
    """
    if count < 1 or num_tasks < 1:
        raise ValueError(f"count and num_tasks must be >= 1, got {count} and {num_tasks}")
    if concentration <= 0 or float(concentration) != int(concentration):
        raise ValueError(f"concentration must be a positive whole number, got {concentration}")
    k = int(concentration)
    u = torch.rand(count, num_tasks, k, generator=generator, dtype=torch.float64)
    gamma = -torch.log1p(-u).sum(dim=-1)  # sum of k Exp(1) = Gamma(k, 1)
    return gamma / gamma.sum(dim=1, keepdim=True)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere (maximising)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximising every coordinate), in input order.

    Exact duplicates are all kept. ``O(P²)``, fine for sweeps of tens to hundreds of points.
    """
    pts = [tuple(float(v) for v in p) for p in points]
    return [i for i, p in enumerate(pts) if not any(dominates(q, p) for q in pts)]
