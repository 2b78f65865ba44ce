"""KnOTS: exact aligned blocks, KnOTS-TA = TA, KnOTS-TIES vs a dense reference, DARE variant."""

import pytest
import torch

from merging_core import Adapter, AdapterSet, merge
from merging_core.methods.knots import aligned_blocks, knots


def _dense_knots_ties(adapter_set, deltas_of, *, density, scaling, weights, floor=1e-5):
    """KnOTS-TIES from the formulas with dense float64 SVDs (methods.md §8).

    Per module: SVD of ``[ΔW_1 | … | ΔW_T]``, keep ``S > floor``, ``Z_t = diag(S) V_tᵀ``. Per task,
    all modules' ``Z_t`` form one vector; keep its ``int(density·d)`` largest magnitudes; elect
    the sign of the sum (ties -> sign of the summed signs); mean over agreeing non-zeros, times λ;
    ``ΔW = U Z``.
    """
    T, bases, blocks = len(adapter_set), [], []
    for name in adapter_set.modules:
        dws = [dw.double() for dw in deltas_of(adapter_set, name)]
        U, S, Vh = torch.linalg.svd(torch.cat(dws, dim=1), full_matrices=False)  # (m, T·n)
        keep = S > floor
        U, S, Vh = U[:, keep], S[keep], Vh[keep]
        n = dws[0].shape[1]
        bases.append(U)
        blocks.append([S[:, None] * Vh[:, t * n : (t + 1) * n] for t in range(T)])
    shapes = [b[0].shape for b in blocks]
    taus = torch.stack([torch.cat([b[t].reshape(-1) for b in blocks]) for t in range(T)])
    d, k = taus.shape[1], int(density * taus.shape[1])
    kth = taus.abs().kthvalue(d - k + 1, dim=1, keepdim=True).values
    trimmed = taus * (taus.abs() >= kth)
    gamma = trimmed.sum(0).sign()
    gamma[gamma == 0] = gamma.sum().sign()
    agree = (trimmed.sign() == gamma) & (trimmed != 0)
    w = torch.tensor(weights, dtype=taus.dtype)[:, None]
    merged = scaling * (trimmed * w * agree).sum(0) / agree.sum(0).clamp(min=1)
    parts = merged.split([s.numel() for s in shapes])
    return [(U @ p.reshape(s)).float() for U, p, s in zip(bases, parts, shapes, strict=True)]


def _close(a, b, tol=1e-5):
    for name in a.modules:
        torch.testing.assert_close(a.delta(name), b.delta(name), rtol=tol, atol=tol)


class TestAlignedBlocks:
    def test_shared_basis_rebuilds_every_task_exactly(self, tiny_set, deltas_of):
        for name in tiny_set.modules:
            U, Z = aligned_blocks(tiny_set.factors(name))
            eye = torch.eye(U.shape[1])
            torch.testing.assert_close(U.T @ U, eye, atol=1e-5, rtol=0)
            for dw, z in zip(deltas_of(tiny_set, name), Z, strict=True):
                torch.testing.assert_close(U @ z, dw, atol=1e-4, rtol=1e-5)
                torch.testing.assert_close(z, U.T @ dw, atol=1e-4, rtol=1e-5)

    def test_floor_drops_null_components(self, single_set):
        U, Z = aligned_blocks(single_set.factors(single_set.modules[0]))
        assert U.shape[1] == 4 and Z[0].shape == (4, 16)  # rank 4 of the single (16, 16) ΔW
        U, _ = aligned_blocks(single_set.factors(single_set.modules[0]), singular_value_floor=1e9)
        assert U.shape[1] == 0

    def test_rejects_negative_floor(self, single_set):
        with pytest.raises(ValueError, match="singular_value_floor must be >= 0, got -1"):
            aligned_blocks(single_set.factors(single_set.modules[0]), singular_value_floor=-1)


@pytest.mark.parametrize("floor", [1e-5, 0.0])
def test_knots_ta_equals_task_arithmetic(tiny_set, floor):
    w = [0.5, -1.0, 2.0]
    a = merge(tiny_set, "knots", variant="ta", scaling=0.7, weights=w, singular_value_floor=floor)
    _close(a, merge(tiny_set, "task_arithmetic", scaling=0.7, weights=w), tol=2e-5)


@pytest.mark.parametrize("variant", ["ta", "ties"])
def test_single_adapter_at_weight_one_comes_back(single_set, variant):
    res = merge(single_set, "knots", variant=variant, density=1.0, scaling=1.0)
    for name in single_set.modules:
        torch.testing.assert_close(
            res.delta(name), single_set.adapters[0].delta(name), rtol=1e-5, atol=2e-5
        )


@pytest.mark.parametrize("density", [0.1, 0.2, 0.6])
def test_knots_ties_matches_dense_reference(tiny_set, deltas_of, density):
    w = [1.0, 0.5, 2.0]
    res = merge(tiny_set, "knots", variant="ties", density=density, scaling=0.6, weights=w)
    want = _dense_knots_ties(tiny_set, deltas_of, density=density, scaling=0.6, weights=w)
    for name, dw in zip(tiny_set.modules, want, strict=True):
        torch.testing.assert_close(res.modules[name].linear_delta(), dw, rtol=1e-4, atol=1e-4)


def test_knots_dare_at_zero_rate_equals_knots_ties_exactly(tiny_set):
    a = merge(tiny_set, "knots", variant="dare", drop_rate=0.0, density=0.3)
    b = merge(tiny_set, "knots", variant="ties", density=0.3)
    for name in tiny_set.modules:
        assert torch.equal(a.delta(name), b.delta(name))


def test_knots_dare_is_seeded(tiny_set):
    a = merge(tiny_set, "knots", variant="dare", drop_rate=0.5, density=1.0, seed=1)
    b = merge(tiny_set, "knots", variant="dare", drop_rate=0.5, density=1.0, seed=1)
    c = merge(tiny_set, "knots", variant="dare", drop_rate=0.5, density=1.0, seed=2)
    name = tiny_set.modules[0]
    assert torch.equal(a.delta(name), b.delta(name))
    assert not torch.equal(a.delta(name), c.delta(name))


@pytest.mark.parametrize("variant", ["ta", "ties", "dare"])
def test_exact_factors_within_rank_bound(tiny_set, variant):
    res = merge(tiny_set, "knots", variant=variant)
    for name in tiny_set.modules:
        mod = res.modules[name]
        assert mod.is_factored
        assert mod.factors.rank <= min(4 + 3 + 4, min(mod.factors.d_out, 12 * 3))
        assert mod.factors.rank == res.diagnostics["shared_rank"][name]
        assert mod.rank_bound() <= mod.factors.rank  # the numerical rank, as an export writes


def test_w_and_minus_w_cancel_with_ta(pair_set, twin_of, negate):
    # Only the TA rule: TIES elects a sign from Z_1 + Z_2, which the factor route leaves at
    # rounding noise (≈1e-16) rather than exactly 0, so KnOTS-TIES keeps one side at random.
    res = merge(negate(twin_of(pair_set), 1), "knots", variant="ta", scaling=1.0)
    for name in pair_set.modules:
        dw = res.delta(name)
        torch.testing.assert_close(dw, torch.zeros_like(dw), atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", ["ta", "ties"])
def test_adapter_order_does_not_matter(tiny_set, variant):
    a = merge(tiny_set, "knots", variant=variant, weights=[1.0, 2.0, 3.0])
    b = merge(tiny_set.subset([2, 0, 1]), "knots", variant=variant, weights=[3.0, 1.0, 2.0])
    _close(a, b, tol=1e-4)


@pytest.mark.parametrize("variant", ["ties", "dare"])
def test_same_answer_for_reparametrized_factors(tiny_set, reparam, variant):
    a = merge(tiny_set, "knots", variant=variant, drop_rate=0.3, seed=4)
    b = merge(reparam(tiny_set), "knots", variant=variant, drop_rate=0.3, seed=4)
    _close(a, b, tol=1e-4)


def test_progress_reaches_one(tiny_set):
    seen = []
    knots(tiny_set, progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in seen)
    assert seen == sorted(seen) and len(seen) > 3  # threshold passes report too


def test_bad_variant_names_the_value(tiny_set):
    with pytest.raises(ValueError, match="variant must be one of .*got 'iso'"):
        knots(tiny_set, variant="iso")


@pytest.mark.parametrize("variant", ["ta", "ties", "dare"])
def test_all_untrained_adapters_give_zero(tiny_set, variant):
    zero = AdapterSet.from_adapters(
        [
            Adapter(
                a.name,
                {n: m.with_factors(torch.zeros_like(m.B), m.A) for n, m in a.modules.items()},
            )
            for a in tiny_set
        ]
    )
    res = merge(zero, "knots", variant=variant)
    for name in zero.modules:
        assert res.modules[name].factors.rank == 0  # every shared component is below the floor
        assert torch.count_nonzero(res.delta(name)) == 0


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("method", "opts"),
    [
        ("ties", {"density": 0.3}),
        ("dare", {"variant": "ties", "drop_rate": 0.5, "density": 0.5}),
        ("knots", {"variant": "dare", "drop_rate": 0.3}),
    ],
)
def test_cuda_factors_give_the_cpu_answer(tiny_set, method, opts):
    """Element-wise steps run where the factors live; masks come from the same CPU seeds."""
    cuda = AdapterSet.from_adapters(
        [
            Adapter(
                a.name, {n: m.with_factors(m.B.cuda(), m.A.cuda()) for n, m in a.modules.items()}
            )
            for a in tiny_set
        ]
    )
    want, got = merge(tiny_set, method, seed=2, **opts), merge(cuda, method, seed=2, **opts)
    for name in tiny_set.modules:
        torch.testing.assert_close(got.delta(name).cpu(), want.delta(name), rtol=1e-4, atol=1e-4)
