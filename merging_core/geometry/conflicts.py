"""Sign-conflict rate of a module's task updates (the TIES notion, Yadav et al., NeurIPS 2023).

Space: ΔW, **element-wise**. A coordinate ``(i, j)`` is *in conflict* when at least one task's
``ΔW_t[i, j]`` is positive and another's is negative. The rate is the fraction of conflicting
coordinates among the *active* ones (at least one task nonzero there); 0 when nothing is active.
With ``density < 1`` each task is first trimmed to its top-``density`` fraction of magnitudes per
module (TIES' trim, per tensor as PEFT and mergekit do; ties at the threshold are kept).

There is no factor-space shortcut for signs of entries, so this forms each dense
``ΔW_t = B_t A_t`` ``(m, n)`` — one task at a time, one module at a time — and keeps only boolean
masks between tasks (memory ``O(m n)`` per module). It is the expensive, optional part of
:func:`merging_core.geometry.analyse_geometry`.
Reference: https://arxiv.org/abs/2306.01708
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.geometry._gram import check_pairs


def _signs(dw: torch.Tensor, density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks of kept positive and kept negative entries (top-``density`` of ``|dw|``)."""
    if density >= 1.0:
        return dw > 0, dw < 0
    mag = dw.abs()
    keep = max(1, int(round(density * mag.numel())))
    kept = mag >= torch.kthvalue(mag.flatten(), mag.numel() - keep + 1).values
    return kept & (dw > 0), kept & (dw < 0)


def sign_conflict_rate(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], *, density: float = 1.0
) -> float:
    """Fraction of active coordinates whose task updates disagree in sign.

    Args:
        Bs: per task ``(m, r_t)`` (scale folded). As: per task ``(r_t, n)``.
        density: fraction of each task's largest-magnitude entries kept before counting,
            in ``(0, 1]`` (1 = no trim; TIES' default is 0.2).

    Returns:
        A rate in ``[0, 1]``; 0 for a single task or an all-zero module.

    Raises:
        ValueError: misaligned factors or ``density`` outside ``(0, 1]``.
    """
    return sign_conflict_rates(Bs, As, densities=(density,))[0]


def sign_conflict_rates(
    Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor], *, densities: Sequence[float]
) -> tuple[float, ...]:
    """:func:`sign_conflict_rate` for several densities from one pass over the dense updates."""
    check_pairs(Bs, As)
    for d in densities:
        if not 0.0 < d <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {d}")
    pos = [None] * len(densities)
    neg = [None] * len(densities)
    for B, A in zip(Bs, As, strict=True):
        dw = B.float() @ A.float()  # (m, r) @ (r, n) -> (m, n), one task at a time
        for i, d in enumerate(densities):
            p, q = _signs(dw, d)
            pos[i] = p if pos[i] is None else pos[i] | p
            neg[i] = q if neg[i] is None else neg[i] | q
        del dw
    rates = []
    for p, q in zip(pos, neg, strict=True):
        active = int((p | q).sum())
        rates.append(0.0 if active == 0 else int((p & q).sum()) / active)
    return tuple(rates)
