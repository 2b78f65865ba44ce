"""Sign-conflict rate (TIES notion): hand-computed cases and a dense reference with trimming."""

from __future__ import annotations

import pytest
import torch
from geometry_helpers import random_factors

from merging_core.geometry import sign_conflict_rate, sign_conflict_rates


def _as_factors(dws: list[torch.Tensor]):
    """``ΔW = ΔW @ I``: B = ΔW (m, n), A = I (n, n)."""
    n = dws[0].shape[1]
    return [dw.double() for dw in dws], [torch.eye(n, dtype=torch.float64)] * len(dws)


def test_hand_case_two_of_three_active_entries_conflict():
    d1 = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    d2 = torch.tensor([[1.0, 1.0], [-3.0, 0.0]])
    # (0,0) agree, (0,1) and (1,0) conflict, (1,1) inactive -> 2/3
    assert sign_conflict_rate(*_as_factors([d1, d2])) == pytest.approx(2 / 3)


def test_hand_case_trim_removes_small_conflicts():
    d1 = torch.tensor([[4.0, -0.1], [3.0, 0.2]])
    d2 = torch.tensor([[5.0, 0.1], [-0.3, 6.0]])
    # density 0.5 keeps {4, 3} of task 1 and {5, 6} of task 2: no conflict left
    rates = sign_conflict_rates(*_as_factors([d1, d2]), densities=(1.0, 0.5))
    assert rates[0] == pytest.approx(2 / 4) and rates[1] == 0.0  # (0,1), (1,0) untrimmed


def dense_reference(Bs, As, density: float) -> float:
    dws = torch.stack([B @ A for B, A in zip(Bs, As, strict=True)])  # (T, m, n)
    kept = torch.zeros_like(dws, dtype=torch.bool)
    for t, dw in enumerate(dws):
        flat = dw.abs().flatten()
        keep = max(1, int(round(density * flat.numel())))
        threshold = flat.sort(descending=True).values[keep - 1]
        kept[t] = dw.abs() >= threshold
    pos, neg = ((dws > 0) & kept).any(0), ((dws < 0) & kept).any(0)
    return float((pos & neg).sum()) / float((pos | neg).sum())


@pytest.mark.parametrize("density", [1.0, 0.2, 0.05])
def test_matches_dense_reference(density):
    Bs, As = random_factors(3, 20, 15, [2, 3, 2])
    assert sign_conflict_rate(Bs, As, density=density) == pytest.approx(
        dense_reference(Bs, As, density)
    )


def test_edge_cases_are_defined():
    Bs, As = random_factors(3, 6, 5, [2])
    assert sign_conflict_rate(Bs, As) == 0.0  # one task cannot conflict
    assert sign_conflict_rate(Bs * 2, As * 2) == 0.0  # duplicates agree everywhere
    neg = sign_conflict_rate([Bs[0], -Bs[0]], As * 2)
    assert neg == 1.0  # negation conflicts on every active entry
    zero = [torch.zeros(4, 1)] * 2, [torch.zeros(1, 3)] * 2
    assert sign_conflict_rate(*zero) == 0.0
    with pytest.raises(ValueError, match="density"):
        sign_conflict_rate(Bs, As, density=0.0)
