"""TSV-M: golden 2×2 case, orthogonal bases, identities, dense references for both modes."""

import math

import pytest
import torch

from merging_core import Adapter, AdapterSet, merge
from merging_core.methods import get_method
from merging_core.methods.tsv_m import tsv_bases
from merging_core.spectral import polar_factor

SQUARE = "blocks.0.attn.q_proj"


def _polar_dense(X: torch.Tensor) -> torch.Tensor:
    """Polar factor from the definition ``X (XᵀX)^{-1/2}`` (eigendecomposition, float64)."""
    evals, evecs = torch.linalg.eigh(X.T @ X)
    return X @ (evecs * evals.rsqrt()) @ evecs.T


def _dense_tsv(deltas: list[torch.Tensor], ks: list[int]) -> torch.Tensor:
    """TSV-M from the paper's formula on dense float64 ΔW_t, keeping ``ks[t]`` triplets."""
    us, ss, vs = [], [], []
    for dw, k in zip(deltas, ks, strict=True):
        U, S, Vh = torch.linalg.svd(dw.double(), full_matrices=False)
        us.append(U[:, :k])
        ss.append(S[:k])
        vs.append(Vh[:k].T)
    U_o = _polar_dense(torch.cat(us, dim=1))
    V_o = _polar_dense(torch.cat(vs, dim=1))
    return U_o @ torch.diag(torch.cat(ss)) @ V_o.T


def _official_code_tsv(deltas: list[torch.Tensor]) -> torch.Tensor:
    """The reference code's steps: float32 dense SVDs, zero-padded U/S/V, SVD orthogonalisation."""
    T = len(deltas)
    sum_u = sum_s = sum_v = None
    for i, dw in enumerate(deltas):
        u, s, v = torch.linalg.svd(dw, full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        k = int(s.shape[0] * (1 / T))
        sum_u[:, i * k : (i + 1) * k] = u[:, :k]
        sum_s[i * k : (i + 1) * k] = s[:k]
        sum_v[i * k : (i + 1) * k, :] = v[:k, :]
    u_u, _, v_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, _, v_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v))


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


def test_golden_two_tasks_at_45_degrees(set_from_deltas):
    # ΔW_1 = 2 e1 e1ᵀ, ΔW_2 = u e2ᵀ with u at 45°: V_cat = I is already orthogonal; the polar
    # factor of U_cat = [e1, u] turns both columns 22.5° apart symmetrically (to -22.5°, 67.5°).
    u = torch.tensor([1.0, 1.0]) / math.sqrt(2.0)
    dw1 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    dw2 = torch.outer(u, torch.tensor([0.0, 1.0]))
    result = merge(set_from_deltas([{"m": dw1}, {"m": dw2}]), "tsv_m", scaling=1.0)
    c, s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    expected = torch.tensor([[2 * c, s], [-2 * s, c]])  # cos 3π/8 = sin π/8, sin 3π/8 = cos π/8
    _close(result.delta("m"), expected)


def _polar_svd(X: torch.Tensor) -> torch.Tensor:
    P, _, Qh = torch.linalg.svd(X, full_matrices=False)
    return P @ Qh


def test_polar_factor_matches_definition():
    X = torch.randn(9, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    P = polar_factor(X)
    _close(P, _polar_dense(X), tol=1e-10)
    _close(P, _polar_svd(X), tol=1e-10)
    _close(P.T @ P, torch.eye(4, dtype=torch.float64), tol=1e-12)


def test_polar_factor_of_nearly_dependent_columns_is_still_orthonormal():
    X = torch.randn(9, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    X[:, 2] = X[:, 1] + 1e-7 * X[:, 0]  # κ(X) ≈ 1e7: the Gram route would lose all accuracy
    P = polar_factor(X)
    _close(P.T @ P, torch.eye(3, dtype=torch.float64), tol=1e-10)
    _close(P, _polar_svd(X), tol=1e-8)


@pytest.mark.parametrize("mode", ["low_rank", "official"])
def test_bases_are_orthonormal_and_sized_by_the_budget(tiny_set, mode):
    for name in tiny_set.modules:
        mods = tiny_set.factors(name)
        U, s, V = tsv_bases([m.B for m in mods], [m.A for m in mods], mode=mode)
        k = min(mods[0].d_out, mods[0].d_in) // len(mods)
        expected = sum(min(m.rank, k) for m in mods) if mode == "low_rank" else k * len(mods)
        assert U.shape[1] == V.shape[1] == s.numel() == expected
        eye = torch.eye(expected, dtype=torch.float64)
        _close(U.T @ U, eye, tol=1e-10)
        _close(V.T @ V, eye, tol=1e-10)


@pytest.mark.parametrize("mode", ["low_rank", "official"])
def test_single_adapter_comes_back(single_set, mode):
    result = merge(single_set, "tsv_m", mode=mode, scaling=1.0)
    for name in single_set.modules:
        _close(result.delta(name), single_set.adapters[0].delta(name), tol=1e-4)


def test_low_rank_matches_dense_formula(tiny_set, deltas_of):
    result = merge(tiny_set, "tsv_m", scaling=0.7)
    for name in tiny_set.modules:
        mods = tiny_set.factors(name)
        k = min(mods[0].d_out, mods[0].d_in) // len(mods)
        expected = 0.7 * _dense_tsv(deltas_of(tiny_set, name), [min(m.rank, k) for m in mods])
        assert result.modules[name].is_factored
        _close(result.modules[name].linear_delta(), expected, tol=1e-4)


def test_official_matches_reference_code_steps(tiny_set, deltas_of):
    # k = min(m, n)/3 = 5 or 4 exceeds some ranks: null directions enter the polar step.
    result = merge(tiny_set, "tsv_m", mode="official", scaling=1.0)
    for name in tiny_set.modules:
        expected = _official_code_tsv(deltas_of(tiny_set, name))
        assert not result.modules[name].is_factored
        _close(result.modules[name].linear_delta(), expected, tol=1e-4)


def test_official_differs_from_low_rank_when_k_exceeds_the_rank(pair_set):
    # T=2 on a 16×16 module: official k = 8 > r = 4, the documented gotcha (methods.md §6).
    official = merge(pair_set, "tsv_m", mode="official").delta(SQUARE)
    low_rank = merge(pair_set, "tsv_m", mode="low_rank").delta(SQUARE)
    assert float((official - low_rank).norm() / low_rank.norm()) > 0.05
    assert torch.linalg.matrix_rank(low_rank.double(), rtol=1e-6) <= 8


def test_identical_adapters_merge_to_the_adapter_without_invented_directions(single_set, reparam):
    # U_cat = [U, ±U] is rank-deficient: the low-rank mode's partial polar factor gives
    # ½(U S Vᵀ + U S Vᵀ) = ΔW, where a full polar factor would add N S Mᵀ for arbitrary N, M.
    first = single_set.adapters[0]
    twin = AdapterSet.from_adapters(
        [first, Adapter(name="copy", modules=reparam(single_set).adapters[0].modules)]
    )
    result = merge(twin, "tsv_m", scaling=1.0)
    for name in twin.modules:
        _close(result.delta(name), first.delta(name))


def test_modes_agree_when_k_is_within_every_rank(make_set):
    # T=5: k = 16/5 = 3 or 12/5 = 2, never above the ranks 4/3/4, so no null directions.
    five = make_set(5, ranks=(4, 3, 4), seed=11)
    official = merge(five, "tsv_m", mode="official")
    low_rank = merge(five, "tsv_m", mode="low_rank")
    for name in five.modules:
        _close(low_rank.delta(name), official.delta(name), tol=1e-4)


def test_acts_on_delta_w_order_and_factorisation(tiny_set, reparam):
    base = merge(tiny_set, "tsv_m")
    permuted = merge(tiny_set.subset([2, 0, 1]), "tsv_m")
    remixed = merge(reparam(tiny_set), "tsv_m")
    for name in tiny_set.modules:
        _close(permuted.delta(name), base.delta(name), tol=1e-4)
        _close(remixed.delta(name), base.delta(name), tol=1e-4)


def test_scaling_is_linear_and_transposed_layout_kept(tiny_set):
    one = merge(tiny_set, "tsv_m", scaling=1.0)
    neg = merge(tiny_set, "tsv_m", scaling=-0.5)
    for name in tiny_set.modules:
        _close(neg.delta(name), -0.5 * one.delta(name), tol=1e-5)
        assert one.delta(name).shape == tiny_set.adapters[0].delta(name).shape


def test_spec_and_errors(tiny_set):
    info = get_method("tsv_m")
    assert info.param("mode").choices == ("low_rank", "official")
    assert info.defaults() == {"mode": "low_rank", "scaling": 1.0}
    with pytest.raises(ValueError, match="mode"):
        merge(tiny_set, "tsv_m", mode="dense")
    with pytest.raises(ValueError, match="scaling"):
        merge(tiny_set, "tsv_m", scaling=5.0)
