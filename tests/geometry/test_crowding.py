"""Pico's crowding diagnostics: overlap hand cases, dense parity, invariance where it must hold."""

from __future__ import annotations

import itertools

import pytest
import torch
from geometry_helpers import dense_erank, random_factors, refactor

from merging_core.geometry import CROWDING_KEYS, crowding_metrics, overlap_matrices

DW_KEYS = (
    "overlap_B_mean",
    "overlap_B_max",
    "overlap_A_mean",
    "overlap_A_max",
    "erank_B_subspace",
    "erank_A_subspace",
)


def _basis(X: torch.Tensor) -> torch.Tensor:
    U, s, _ = torch.linalg.svd(X, full_matrices=False)
    return U[:, s > 1e-9 * s.max()] if float(s.max()) > 0 else U[:, :0]


def dense_overlaps(mats: list[torch.Tensor]) -> torch.Tensor:
    """Paper formula on explicit orthonormal bases: ‖Q_iᵀ Q_j‖² / min(dim_i, dim_j)."""
    Qs = [_basis(M) for M in mats]
    T = len(Qs)
    O = torch.zeros(T, T, dtype=torch.float64)
    for i, j in itertools.product(range(T), range(T)):
        d = min(Qs[i].shape[1], Qs[j].shape[1])
        O[i, j] = 0.0 if d == 0 else float((Qs[i].T @ Qs[j]).pow(2).sum()) / d
    return O


def test_hand_case_half_shared_column_space():
    e = torch.eye(5, dtype=torch.float64)
    B1, B2 = e[:, [0, 1]] * 3.0, e[:, [1, 2]] @ torch.tensor([[1.0, 2.0], [0.5, -1.0]]).double()
    A = torch.eye(2, 4, dtype=torch.float64)
    O_B, O_A = overlap_matrices([B1, B2], [A, A])
    assert O_B.flatten().tolist() == pytest.approx([1.0, 0.5, 0.5, 1.0])
    assert O_A.flatten().tolist() == pytest.approx([1.0] * 4)  # identical row spaces


def test_orthogonal_tasks_do_not_overlap_and_subspace_erank_is_full():
    e = torch.eye(6, dtype=torch.float64)
    Bs = [e[:, :3], e[:, 3:]]
    As = [e[:3], e[3:]]
    out = crowding_metrics(Bs, As)
    assert out["overlap_B_max"] == 0.0 and out["overlap_A_max"] == 0.0
    assert out["erank_B_subspace"] == pytest.approx(6.0)
    assert out["erank_B_stack"] == pytest.approx(6.0)
    assert out["o_max_B"] == pytest.approx(1 / 6)


def test_duplicated_adapters_overlap_fully():
    Bs, As = random_factors(3, 15, 9, [4])
    out = crowding_metrics(Bs * 3, As * 3)
    assert out["overlap_B_mean"] == pytest.approx(1.0) and out["overlap_A_mean"] == pytest.approx(
        1.0
    )
    assert out["erank_B_subspace"] == pytest.approx(4.0)


@pytest.mark.parametrize("ranks", [[3, 3, 3], [2, 4, 1]])
def test_matches_dense_reference(ranks):
    Bs, As = random_factors(11, 20, 14, ranks)
    O_B, O_A = overlap_matrices(Bs, As)
    assert torch.allclose(O_B, dense_overlaps(Bs), atol=1e-9)
    assert torch.allclose(O_A, dense_overlaps([A.T for A in As]), atol=1e-9)
    out = crowding_metrics(Bs, As)
    B_cat, A_stk = torch.cat(Bs, dim=1), torch.cat(As, dim=0)
    assert out["erank_B_stack"] == pytest.approx(dense_erank(B_cat), rel=1e-8)
    assert out["erank_A_stack"] == pytest.approx(dense_erank(A_stk), rel=1e-8)
    s = torch.linalg.svdvals(B_cat)
    assert out["o_max_B"] == pytest.approx(float(s[0] ** 2 / (s**2).sum()), rel=1e-9)
    assert out["stable_rank_A_stack"] == pytest.approx(
        float((torch.linalg.svdvals(A_stk) ** 2).sum() / torch.linalg.matrix_norm(A_stk, 2) ** 2),
        rel=1e-9,
    )
    bases = torch.cat([_basis(B) for B in Bs], dim=1)
    assert out["erank_B_subspace"] == pytest.approx(dense_erank(bases), rel=1e-7)
    off = O_B[~torch.eye(len(ranks), dtype=torch.bool)]
    assert out["overlap_B_mean"] == pytest.approx(float(off.mean()))


def test_overlaps_and_subspace_eranks_are_refactoring_invariant(small_factors):
    Bs, As = small_factors
    B2, A2 = refactor(Bs, As, seed=9)
    before, after = crowding_metrics(Bs, As), crowding_metrics(B2, A2)
    for key in DW_KEYS:
        assert after[key] == pytest.approx(before[key], rel=1e-7), key
    O1, O2 = overlap_matrices(Bs, As), overlap_matrices(B2, A2)
    assert torch.allclose(O1[0], O2[0], atol=1e-9) and torch.allclose(O1[1], O2[1], atol=1e-9)


def test_factor_stacks_follow_their_definition_after_refactoring(small_factors):
    B2, A2 = refactor(*small_factors, seed=9)
    out = crowding_metrics(B2, A2)
    assert out["erank_B_stack"] == pytest.approx(dense_erank(torch.cat(B2, dim=1)), rel=1e-8)
    assert out["erank_B_stack"] != pytest.approx(crowding_metrics(*small_factors)["erank_B_stack"])


def test_zero_task_and_single_task_are_defined():
    Bs, As = random_factors(4, 10, 8, [2, 2])
    Bs[0] = torch.zeros_like(Bs[0])
    O_B, _ = overlap_matrices(Bs, As)
    assert O_B.flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    single = crowding_metrics(Bs[1:], As[1:])
    assert single["overlap_B_mean"] == 0.0 and single["overlap_A_max"] == 0.0
    zeros = crowding_metrics([torch.zeros(5, 1)] * 2, [torch.zeros(1, 3)] * 2)
    assert set(zeros) == set(CROWDING_KEYS)
    assert all(v == 0.0 for v in zeros.values()), zeros
