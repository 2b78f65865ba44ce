"""SVD vs CUR (reconstructed): parity with a dense construction, invariance, hand and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from geometry_helpers import random_factors, refactor

from merging_core.geometry import CUR_LABEL, svd_vs_cur


def dense_cur(Bs, As, k: int):
    """The construction on a dense ΔW_TA: SVD, top-k leverage, C and R, scipy's angles."""
    dw = sum(B @ A for B, A in zip(Bs, As, strict=True))
    U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
    Uk, Vk = U[:, :k], Vh[:k].T
    rows = torch.argsort((Uk**2).sum(1), descending=True, stable=True)[:k]
    cols = torch.argsort((Vk**2).sum(1), descending=True, stable=True)[:k]
    C, R = dw[:, cols], dw[rows, :]
    left = np.degrees(np.sort(scipy.linalg.subspace_angles(Uk.numpy(), C.numpy())))
    right = np.degrees(np.sort(scipy.linalg.subspace_angles(Vk.numpy(), R.T.numpy())))
    Qc = torch.linalg.qr(C).Q
    energy = float((Qc.T @ dw).pow(2).sum() / dw.pow(2).sum())
    return (
        cols.tolist(),
        rows.tolist(),
        left,
        right,
        energy,
        float((S[:k] ** 2).sum() / (S**2).sum()),
    )


@pytest.mark.parametrize(("ranks", "k"), [([3, 3, 3], 3), ([2, 4], 4), ([3, 3], 2)])
def test_matches_dense_construction(ranks, k):
    Bs, As = random_factors(21, 16, 13, ranks)
    ours = svd_vs_cur(Bs, As, k=k)
    cols, rows, left, right, energy, svd_energy = dense_cur(Bs, As, k)
    assert list(ours.columns) == cols and list(ours.rows) == rows
    assert np.allclose(ours.left_angles, left, atol=1e-5)
    assert np.allclose(ours.right_angles, right, atol=1e-5)
    mis_l = float(np.mean(np.sin(np.radians(left)) ** 2))
    mis_r = float(np.mean(np.sin(np.radians(right)) ** 2))
    assert ours.misalignment_left == pytest.approx(mis_l, abs=1e-9)
    assert ours.misalignment == pytest.approx(0.5 * (mis_l + mis_r), abs=1e-9)
    assert ours.cur_energy == pytest.approx(energy, rel=1e-8)
    assert ours.svd_energy == pytest.approx(svd_energy, rel=1e-9)
    assert ours.cur_energy <= ours.svd_energy + 1e-12  # Eckart–Young


def test_is_refactoring_invariant(small_factors):
    Bs, As = small_factors
    a, b = svd_vs_cur(Bs, As), svd_vs_cur(*refactor(Bs, As, seed=2))
    assert a.columns == b.columns and a.rows == b.rows
    assert np.allclose(a.left_angles, b.left_angles, atol=1e-5)
    assert b.misalignment == pytest.approx(a.misalignment, abs=1e-8)


def test_default_k_is_the_largest_task_rank(small_factors):
    assert svd_vs_cur(*small_factors).k == 3


def test_k_at_full_rank_recovers_the_svd_subspace():
    # ΔW_TA has rank 2; with k = 2 the two CUR columns span col(ΔW) itself
    Bs, As = random_factors(5, 9, 7, [1, 1])
    out = svd_vs_cur(Bs, As, k=2)
    assert out.misalignment == pytest.approx(0.0, abs=1e-10)
    assert max(out.left_angles) < 1e-4
    assert out.cur_energy == pytest.approx(1.0)


def test_hand_case_localised_update_selects_its_support():
    # ΔW = 5 e_0 e_3ᵀ + 1 e_2 e_1ᵀ: top-1 leverage picks column 3 and row 0 exactly
    B = torch.zeros(4, 2, dtype=torch.float64)
    A = torch.zeros(2, 5, dtype=torch.float64)
    B[0, 0], A[0, 3], B[2, 1], A[1, 1] = 5.0, 1.0, 1.0, 1.0
    out = svd_vs_cur([B], [A], k=1)
    assert out.columns == (3,) and out.rows == (0,)
    assert out.left_angles == pytest.approx((0.0,)) and out.misalignment == pytest.approx(0.0)


def test_zero_module_and_rank_clipping_are_defined():
    zero = svd_vs_cur([torch.zeros(6, 2)], [torch.zeros(2, 4)], k=2)
    assert (zero.k, zero.left_angles, zero.misalignment, zero.cur_energy) == (0, (), 0.0, 0.0)
    Bs, As = random_factors(8, 10, 6, [1])
    clipped = svd_vs_cur(Bs, As, k=5)
    assert clipped.k == 1 and not any(math.isnan(x) for x in clipped.left_angles)


def test_label_and_errors():
    assert "reconstructed" in CUR_LABEL
    with pytest.raises(ValueError, match="k must be"):
        svd_vs_cur(*random_factors(1, 5, 5, [1]), k=0)
