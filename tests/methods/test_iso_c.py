"""Iso-C and Iso-CTS: golden cases, flat spectra, dense references, official-mode null space."""

import pytest
import torch

from merging_core import Adapter, AdapterSet, merge
from merging_core.methods import get_method
from merging_core.methods.iso_c import split_budget

SQUARE = "blocks.0.attn.q_proj"


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


def _dense_iso_c(deltas: list[torch.Tensor]) -> torch.Tensor:
    """σ̄ U Vᵀ over the non-zero spectrum of the dense float64 sum (the low-rank formula)."""
    U, S, Vh = torch.linalg.svd(sum(dw.double() for dw in deltas), full_matrices=False)
    keep = S > 1e-6 * max(float(torch.linalg.matrix_norm(dw.double())) for dw in deltas)
    return S[keep].mean() * U[:, keep] @ Vh[keep]


def _official_code_iso_cts(deltas: list[torch.Tensor], fraction: float) -> torch.Tensor:
    """The reference code's Iso-CTS steps on dense float32 matrices (task blocks, then common)."""
    T, size = len(deltas), min(deltas[0].shape)
    combined = sum(deltas)
    k = int(size * fraction)
    k = size - round((size - k) / T) * T
    u, s, v = torch.linalg.svd(combined, full_matrices=False)
    per = (size - k) // T
    us, ss, vs = [], [], []
    for dw in deltas:
        w_ts = dw - u[:, :k] @ u[:, :k].T @ dw
        ut, st, vt = torch.linalg.svd(w_ts, full_matrices=False)
        us.append(ut[:, :per])
        ss.append(st[:per])
        vs.append(vt[:per])
    U = torch.cat(us + [u[:, :k]], dim=1)
    V = torch.cat(vs + [v[:k]], dim=0)
    sigma = torch.cat(ss + [s[:k]]).mean()
    pu, _, qu = torch.linalg.svd(U, full_matrices=False)
    pv, _, qv = torch.linalg.svd(V, full_matrices=False)
    return sigma * (pu @ qu) @ (pv @ qv)


# ---------------------------------------------------------------- Iso-C


def test_iso_c_golden_low_rank_and_official(set_from_deltas):
    # Σ ΔW = diag(3, 1, 0): low-rank flattens the two non-zero values to their mean 2; the
    # official dense code averages all three (4/3) and adds the null pair ±e3 e3ᵀ.
    pair = set_from_deltas(
        [{"m": torch.diag(torch.tensor([3.0, 0, 0]))}, {"m": torch.diag(torch.tensor([0, 1.0, 0]))}]
    )
    low = merge(pair, "iso_c", scaling=1.0).delta("m")
    _close(low, torch.diag(torch.tensor([2.0, 2.0, 0.0])), tol=1e-6)
    official = merge(pair, "iso_c", mode="official", scaling=1.0).delta("m")
    _close(official.abs(), torch.diag(torch.tensor([4 / 3, 4 / 3, 4 / 3])), tol=1e-6)


def test_iso_c_spectrum_is_flat_and_matches_dense_formula(tiny_set, deltas_of):
    result = merge(tiny_set, "iso_c", scaling=1.5)
    for name in tiny_set.modules:
        module = result.modules[name]
        assert module.is_factored
        S = torch.linalg.svdvals(module.linear_delta().double())
        rank = min(11, *module.linear_delta().shape)  # ranks 4 + 3 + 4
        torch.testing.assert_close(S[:rank], S[0].expand(rank), rtol=1e-5, atol=0.0)
        assert float(torch.cat([S[rank:], S.new_zeros(1)]).max()) < 1e-5 * float(S[0])
        sigma_bar = result.diagnostics["sigma_bar"][name]
        assert float(S[0]) == pytest.approx(1.5 * sigma_bar, rel=1e-5)
        _close(module.linear_delta(), 1.5 * _dense_iso_c(deltas_of(tiny_set, name)))


def test_iso_c_official_is_full_rank_and_scaled_low_rank_on_the_lora_subspace(tiny_set):
    official = merge(tiny_set, "iso_c", mode="official", scaling=1.0).modules[SQUARE]
    low = merge(tiny_set, "iso_c", scaling=1.0).modules[SQUARE]
    S = torch.linalg.svdvals(official.dense.double())
    torch.testing.assert_close(S, S[0].expand(16), rtol=1e-5, atol=0.0)  # flat, full rank
    U_R = low.factors.B.double() / low.factors.B.double().norm(dim=0)  # orthogonal columns
    V_R = low.factors.A.double().T
    inside = U_R @ U_R.T @ official.dense.double() @ V_R @ V_R.T
    _close(inside, (11 / 16) * low.linear_delta().double(), tol=1e-4)  # σ̄_dense = (R/min) σ̄_R
    outside = 1 - float(inside.norm() ** 2 / official.dense.double().norm() ** 2)
    assert outside == pytest.approx(5 / 16, abs=1e-4)  # energy on invented null directions


def test_iso_c_modes_agree_when_the_sum_is_full_rank(make_set):
    full = make_set(4, ranks=(4,), seed=3)  # R = 16 >= min(m, n) for every module
    low = merge(full, "iso_c")
    official = merge(full, "iso_c", mode="official")
    for name in full.modules:
        _close(low.delta(name), official.delta(name))


def test_iso_c_single_adapter_keeps_its_subspace_with_mean_spectrum(single_set):
    one = merge(single_set, "iso_c", scaling=1.0)
    for name in single_set.modules:
        dw = single_set.adapters[0].delta(name).double()
        U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
        _close(one.delta(name), S[:4].mean() * U[:, :4] @ Vh[:4])


def test_iso_c_cancelling_pair_gives_zero(single_set, set_from_deltas):
    dw = single_set.adapters[0].delta(SQUARE)
    pair = set_from_deltas([{"m": dw}, {"m": -dw}])
    for method in ("iso_c", "iso_cts"):
        result = merge(pair, method)
        assert result.modules["m"].norm() == 0.0
        assert result.modules["m"].factors.rank == 0


@pytest.mark.parametrize("method", ["iso_c", "iso_cts"])
def test_acts_on_delta_w_order_and_factorisation(tiny_set, reparam, method):
    params = {"common_fraction": 0.5} if method == "iso_cts" else {}
    base = merge(tiny_set, method, **params)
    permuted = merge(tiny_set.subset([1, 2, 0]), method, **params)
    remixed = merge(reparam(tiny_set), method, **params)
    for name in tiny_set.modules:
        _close(permuted.delta(name), base.delta(name))
        _close(remixed.delta(name), base.delta(name))


# ---------------------------------------------------------------- Iso-CTS


def test_split_budget_follows_the_reference_rounding():
    assert split_budget(768, 8, 0.8) == (616, 19)  # k = 614 → task total round(19.25)·8 = 152
    assert split_budget(11, 3, 0.8) == (8, 1)
    assert split_budget(4, 2, 1.0) == (4, 0)
    assert split_budget(3, 2, 0.0) == (1, 1)  # round(1.5) = 2 would leave k < 0: capped
    with pytest.raises(ValueError, match="common_fraction"):
        split_budget(4, 2, 1.5)


def test_iso_cts_golden_drops_empty_task_slot(set_from_deltas):
    # Σ ΔW = diag(6, 5, 2, 1), κ = 0.5: common {e1, e2}; task 1's residual diag(0,0,2,1) gives
    # e3 (σ 2), task 2's residual is zero and adds nothing: σ̄ = (6 + 5 + 2)/3 on {e1, e2, e3}.
    pair = set_from_deltas(
        [
            {"m": torch.diag(torch.tensor([6.0, 0, 2, 1]))},
            {"m": torch.diag(torch.tensor([0, 5.0, 0, 0]))},
        ]
    )
    cts = merge(pair, "iso_cts", common_fraction=0.5, scaling=1.0).delta("m")
    _close(cts, (13 / 3) * torch.diag(torch.tensor([1.0, 1, 1, 0])), tol=1e-6)
    iso = merge(pair, "iso_c", scaling=1.0).delta("m")
    _close(iso, 3.5 * torch.eye(4), tol=1e-6)


def test_iso_cts_matches_reference_code_when_the_sum_is_full_rank(make_set, deltas_of):
    full = make_set(4, ranks=(4,), seed=3)
    low = merge(full, "iso_cts", scaling=1.0)
    official = merge(full, "iso_cts", mode="official", scaling=1.0)
    for name in full.modules:
        expected = _official_code_iso_cts(deltas_of(full, name), 0.8)
        assert low.modules[name].is_factored and not official.modules[name].is_factored
        _close(low.modules[name].linear_delta(), expected)
        _close(official.modules[name].linear_delta(), expected)


def test_iso_cts_is_flat_on_orthonormal_bases_and_kappa_one_is_iso_c(tiny_set):
    cts = merge(tiny_set, "iso_cts", common_fraction=0.5, scaling=1.0)
    for name in tiny_set.modules:
        f = cts.modules[name].factors
        sigma = cts.diagnostics["sigma_bar"][name]
        _close(f.B.double().T @ f.B.double(), sigma**2 * torch.eye(f.rank, dtype=torch.float64))
        _close(f.A.double() @ f.A.double().T, torch.eye(f.rank, dtype=torch.float64))
    iso = merge(tiny_set, "iso_c", scaling=1.0)
    at_one = merge(tiny_set, "iso_cts", common_fraction=1.0, scaling=1.0)
    for name in tiny_set.modules:
        _close(at_one.delta(name), iso.delta(name))


def test_iso_cts_identical_adapters_share_one_task_direction(single_set):
    # κ = 0.5 on R' = 4: common = top-2 of 2ΔW; both residuals give the same third direction.
    # The low-rank partial polar step counts it once and invents nothing: rank 3, σ̄ flat.
    first = single_set.adapters[0]
    twin = AdapterSet.from_adapters([first, Adapter(name="copy", modules=first.modules)])
    result = merge(twin, "iso_cts", common_fraction=0.5, scaling=1.0)
    dw = first.delta(SQUARE).double()
    U, S, Vh = torch.linalg.svd(dw, full_matrices=False)
    sigma = float(2 * S[0] + 2 * S[1] + 2 * S[2]) / 4
    _close(result.delta(SQUARE), sigma * U[:, :3] @ Vh[:3])


def test_spec_and_errors(tiny_set):
    assert get_method("iso_cts").defaults() == {
        "mode": "low_rank",
        "common_fraction": 0.8,
        "scaling": 1.0,
    }
    assert get_method("iso_c").param("mode").choices == ("low_rank", "official")
    with pytest.raises(ValueError, match="common_fraction"):
        merge(tiny_set, "iso_cts", common_fraction=1.2)
    with pytest.raises(ValueError, match="mode"):
        merge(tiny_set, "iso_c", mode="dense")
