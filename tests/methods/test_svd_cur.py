"""SVD + CUR (our reconstruction): golden case, reductions to TA, dense reference, seeding."""

import math

import pytest
import torch

import merging_core.methods.svd_cur as svd_cur_module
from merging_core import Adapter, AdapterSet, merge
from merging_core.methods import get_method
from merging_core.methods.svd_cur import cur_factors, fraction_of, svd_cur_factors


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


def _count(rank: int, fraction: float) -> int:
    return max(1, math.floor(fraction * rank + 0.5)) if fraction > 0 and rank > 0 else 0


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    return torch.sort(torch.argsort(-scores, stable=True)[:count]).values


def _dense_svd_cur(deltas, *, shared_fraction, cur_fraction, beta, scaling):
    """methods.md §2 on dense float64 matrices, deterministic top-leverage selection."""
    deltas = [dw.double() for dw in deltas]
    floor = 1e-6 * max(float(torch.linalg.matrix_norm(dw)) for dw in deltas)
    U, S, Vh = torch.linalg.svd(sum(deltas), full_matrices=False)
    k = _count(int((S > floor).sum()), shared_fraction)
    Uk = U[:, :k]
    out = Uk @ torch.diag(S[:k]) @ Vh[:k]
    for dw in deltas:
        E = dw - Uk @ Uk.T @ dw
        Ue, Se, Vhe = torch.linalg.svd(E, full_matrices=False)
        c = _count(int((Se > floor).sum()), cur_fraction)
        if c == 0:
            continue
        cols = _top((Vhe[:c] ** 2).sum(0) / c, c)
        rows = _top((Ue[:, :c] ** 2).sum(1) / c, c)
        C, R = E[:, cols], E[rows, :]
        out = out + beta * C @ torch.linalg.pinv(C) @ E @ torch.linalg.pinv(R) @ R
    return scaling * out


def test_golden_shared_top_direction_plus_localised_residual(set_from_deltas):
    # Σ ΔW = diag(7, 2, 1) → shared (k_s = 1) = 7 e1e1ᵀ. Task 1's residual diag(0, 2, 1) has
    # rank 2; with one column and one row (both index 1 by leverage) CUR keeps 2 e2e2ᵀ and drops
    # the weaker entry. Task 2 has no residual.
    pair = set_from_deltas(
        [{"m": torch.diag(torch.tensor([3.0, 2, 1]))}, {"m": torch.diag(torch.tensor([4.0, 0, 0]))}]
    )
    params = {"shared_fraction": 1 / 3, "cur_fraction": 0.5}
    result = merge(pair, "svd_cur", scaling=1.0, beta=1.0, **params)
    _close(result.delta("m"), torch.diag(torch.tensor([7.0, 2.0, 0.0])), tol=1e-6)
    assert result.diagnostics["components"]["m"] == {"shared": 1, "cur": 1}
    half = merge(pair, "svd_cur", scaling=2.0, beta=0.5, **params)
    _close(half.delta("m"), torch.diag(torch.tensor([14.0, 2.0, 0.0])), tol=1e-6)


def test_cur_core_is_exact_at_full_rank_and_columns_are_actual_columns():
    gen = torch.Generator().manual_seed(2)
    B, A = torch.randn(9, 3, generator=gen), torch.randn(3, 7, generator=gen)
    E = B.double() @ A.double()
    CU, R = cur_factors(B, A, 3)
    _close(CU @ R, E, tol=1e-8)
    rows = [i for i in range(9) if any(torch.allclose(R[j], E[i]) for j in range(3))]
    assert len(rows) == 3  # R holds three genuine rows of E


@pytest.mark.parametrize(
    "params",
    [
        {"shared_fraction": 1.0},  # everything shared: E_t = 0
        {"shared_fraction": 0.0, "cur_fraction": 1.0},  # exact CUR of each whole ΔW_t
        {"shared_fraction": 0.4, "cur_fraction": 1.0},  # shared + exact residuals
    ],
)
def test_reduces_to_task_arithmetic(tiny_set, params):
    result = merge(tiny_set, "svd_cur", scaling=0.3, beta=1.0, **params)
    ta = merge(tiny_set, "task_arithmetic", scaling=0.3)
    for name in tiny_set.modules:
        _close(result.delta(name), ta.delta(name))


def test_single_adapter_comes_back_with_exact_cur(single_set):
    result = merge(single_set, "svd_cur", shared_fraction=0.5, cur_fraction=1.0, scaling=1.0)
    for name in single_set.modules:
        _close(result.delta(name), single_set.adapters[0].delta(name))


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.25, 0.34), (0.0, 0.5)])
def test_matches_dense_reference(tiny_set, deltas_of, fractions):
    shared, cur = fractions
    result = merge(tiny_set, "svd_cur", shared_fraction=shared, cur_fraction=cur, beta=0.7)
    for name in tiny_set.modules:
        expected = _dense_svd_cur(
            deltas_of(tiny_set, name),
            shared_fraction=shared,
            cur_fraction=cur,
            beta=0.7,
            scaling=0.4,
        )
        assert result.modules[name].is_factored
        _close(result.modules[name].linear_delta(), expected)


def test_task_parts_lie_outside_the_shared_column_space(tiny_set):
    mods = tiny_set.factors("blocks.0.mlp.fc_in")
    Bs, As = [m.B for m in mods], [m.A for m in mods]
    B1, A1, counts = svd_cur_factors(Bs, As, shared_fraction=0.5, beta=1.0)
    B0, A0, _ = svd_cur_factors(Bs, As, shared_fraction=0.5, beta=0.0)
    shared = B0 @ A0
    U, _, _ = torch.linalg.svd(shared, full_matrices=False)
    Uk = U[:, : counts["shared"]]
    specific = B1 @ A1 - shared
    assert float(specific.norm()) > 0.1
    assert float((Uk.T @ specific).norm()) < 1e-8 * float(specific.norm())


def test_acts_on_delta_w_order_and_factorisation(tiny_set, reparam):
    base = merge(tiny_set, "svd_cur")
    permuted = merge(tiny_set.subset([1, 0, 2]), "svd_cur")
    remixed = merge(reparam(tiny_set), "svd_cur")
    for name in tiny_set.modules:
        _close(permuted.delta(name), base.delta(name))
        _close(remixed.delta(name), base.delta(name))


def test_sampled_selection_is_seeded(tiny_set):
    first = merge(tiny_set, "svd_cur", selection="sampled", seed=3)
    again = merge(tiny_set, "svd_cur", selection="sampled", seed=3)
    others = [merge(tiny_set, "svd_cur", selection="sampled", seed=s) for s in range(4, 8)]
    for name in tiny_set.modules:
        assert torch.equal(first.delta(name), again.delta(name))
    assert any(
        not torch.allclose(first.delta(n), o.delta(n)) for o in others for n in tiny_set.modules
    )


def test_fraction_rounding_and_spec(tiny_set):
    assert [fraction_of(4, f) for f in (0.0, 0.1, 0.5, 0.625, 1.0)] == [0, 1, 2, 3, 4]
    assert fraction_of(0, 0.5) == 0
    with pytest.raises(ValueError, match="fraction"):
        fraction_of(4, 1.5)
    info = get_method("svd_cur")
    assert info.reconstructed and info.space == "factors"
    assert "unverified" in info.pretty_name and "reconstruction" in svd_cur_module.__doc__
    with pytest.raises(ValueError, match="selection"):
        merge(tiny_set, "svd_cur", selection="random")


def _twin(adapter_set):
    """The set's first adapter twice (named t0 and t1)."""
    first = adapter_set.adapters[0]
    return AdapterSet.from_adapters([first, Adapter(name="t1", modules=dict(first.modules))])


def test_cancelling_pair_gives_zero(single_set, negate):
    pair = negate(_twin(single_set), 1)  # w and −w: no shared part, CUR parts cancel
    result = merge(pair, "svd_cur")
    for name in pair.modules:
        scale = float(single_set.adapters[0].delta(name).norm())
        assert result.modules[name].norm() < 1e-6 * scale
