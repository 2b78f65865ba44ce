"""Pico: calibrated B against the paper's formula, golden case, γ, identities, base methods."""

import pytest
import torch

from merging_core import Adapter, AdapterSet, LoraModule, merge
from merging_core.methods import available_methods, get_method
from merging_core.methods.pico import calibrate_b, calibrated_set

HAS_TIES = "ties" in {m.name for m in available_methods()}
needs_ties = pytest.mark.skipif(not HAS_TIES, reason="the ties method is not registered yet")


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4) -> None:
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


def _set(per_task: list[tuple[torch.Tensor, torch.Tensor]]) -> AdapterSet:
    """One module ``"m"`` per adapter with the given ``(B, A)``."""
    return AdapterSet.from_adapters(
        [
            Adapter(name=f"t{t}", modules={"m": LoraModule(B=B, A=A)})
            for t, (B, A) in enumerate(per_task)
        ]
    )


def _paper_calibration(Bs: list[torch.Tensor]) -> list[torch.Tensor]:
    """methods.md §1 literally: dense S = I_m + U diag(α − 1) Uᵀ, then S B_t (float64)."""
    B_all = torch.cat([B.double() for B in Bs], dim=1)
    U, sigma, _ = torch.linalg.svd(B_all, full_matrices=False)
    share = sigma**2 / (sigma**2).sum()
    alpha = 1.0 / (1.0 + (len(Bs) - 1) * share)
    S = torch.eye(B_all.shape[0], dtype=torch.float64) + U @ torch.diag(alpha - 1) @ U.T
    return [S @ B.double() for B in Bs]


def _paper_pico_ta(adapter_set: AdapterSet, module: str) -> torch.Tensor:
    """Calibrate, sum (TA), rescale to the mean original norm: the paper's Pico-TA."""
    mods = adapter_set.factors(module)
    calibrated = _paper_calibration([m.B for m in mods])
    merged = sum(B @ m.A.double() for B, m in zip(calibrated, mods, strict=True))
    target = sum(float((m.B.double() @ m.A.double()).norm()) for m in mods) / len(mods)
    return merged * (target / merged.norm())


def _orthogonal_remix(adapter_set: AdapterSet, seed: int = 4) -> AdapterSet:
    """Same ΔW_t with factors ``(B Q, Qᵀ A)`` for random orthogonal ``Q``."""
    gen = torch.Generator().manual_seed(seed)
    adapters = []
    for a in adapter_set:
        mods = {}
        for name, m in a.modules.items():
            Q, _ = torch.linalg.qr(torch.randn(m.rank, m.rank, generator=gen, dtype=torch.float64))
            mods[name] = m.with_factors((m.B.double() @ Q).float(), (Q.T @ m.A.double()).float())
        adapters.append(Adapter(name=a.name, modules=mods))
    return AdapterSet.from_adapters(adapters)


def test_golden_two_orthogonal_rank_one_tasks():
    # B_all = diag(2, 1): shares 4/5, 1/5 → α = 5/9, 5/6; TA of the calibrated pair is
    # diag(10/9, 5/6) with norm 25/18; γ = 1.5 / (25/18) = 27/25 → diag(1.2, 0.9).
    e1, e2 = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    pair = _set([(2 * e1, e1.T), (e2, e2.T)])
    result = merge(pair, "pico")
    _close(result.delta("m"), torch.diag(torch.tensor([1.2, 0.9])), tol=1e-6)
    assert result.diagnostics["gamma"]["m"] == pytest.approx(27 / 25, rel=1e-6)


def test_calibrated_b_matches_the_formula(tiny_set):
    for name in tiny_set.modules:
        Bs = [m.B for m in tiny_set.factors(name)]
        for ours, paper in zip(calibrate_b(Bs), _paper_calibration(Bs), strict=True):
            assert ours.dtype == torch.float32 and ours.shape == paper.shape
            _close(ours, paper, tol=1e-5)
    calibrated = calibrated_set(tiny_set)
    for a, c in zip(tiny_set, calibrated, strict=True):
        for name in tiny_set.modules:
            assert torch.equal(c.modules[name].A, a.modules[name].A)  # A is untouched


def test_calibration_shrinks_each_direction_between_one_over_t_and_one(tiny_set):
    Bs = [m.B.double() for m in tiny_set.factors("blocks.0.attn.q_proj")]
    U, sigma, _ = torch.linalg.svd(torch.cat(Bs, dim=1), full_matrices=False)
    calibrated = torch.cat([B.double() for B in calibrate_b(Bs)], dim=1)
    ratio = torch.linalg.norm(U.T @ calibrated, dim=1) / sigma  # per-direction α_j
    assert float(ratio.min()) >= 1 / 3 - 1e-9 and float(ratio.max()) <= 1 + 1e-9
    assert torch.all(ratio[:-1] <= ratio[1:] + 1e-9)  # stronger directions shrink more


def test_pico_ta_matches_dense_paper_reference(tiny_set):
    result = merge(tiny_set, "pico")
    for name in tiny_set.modules:
        assert result.modules[name].is_factored
        _close(result.modules[name].linear_delta(), _paper_pico_ta(tiny_set, name))


@pytest.mark.parametrize("base", ["task_arithmetic", "tsv_m"])
def test_single_adapter_comes_back(single_set, base):
    result = merge(single_set, "pico", base=base)
    for name in single_set.modules:
        _close(result.delta(name), single_set.adapters[0].delta(name))


@pytest.mark.parametrize(
    "base", ["task_arithmetic", "tsv_m", pytest.param("ties", marks=needs_ties)]
)
def test_gamma_restores_the_mean_source_norm(tiny_set, base):
    result = merge(tiny_set, "pico", base=base)
    for name in tiny_set.modules:
        mean = sum(float(a.delta(name).norm()) for a in tiny_set) / len(tiny_set)
        assert result.modules[name].norm() == pytest.approx(mean, rel=1e-4)


@pytest.mark.parametrize("base", ["tsv_m", pytest.param("ties", marks=needs_ties)])
def test_other_bases_merge_the_calibrated_adapters(tiny_set, base):
    result = merge(tiny_set, "pico", base=base)
    params = {"density": 0.2} if base == "ties" else {}
    plain = merge(calibrated_set(tiny_set), base, **params)
    for name in tiny_set.modules:
        ours, theirs = result.delta(name), plain.delta(name)
        _close(ours, result.diagnostics["gamma"][name] * theirs)


def test_without_restore_norm_is_task_arithmetic_of_calibrated(tiny_set):
    result = merge(tiny_set, "pico", restore_norm=False)
    plain = merge(calibrated_set(tiny_set), "task_arithmetic", scaling=1.0)
    for name in tiny_set.modules:
        _close(result.delta(name), plain.delta(name))


def test_order_and_orthogonal_factorisation_invariance(tiny_set):
    base = merge(tiny_set, "pico")
    permuted = merge(tiny_set.subset([2, 1, 0]), "pico")
    rotated = merge(_orthogonal_remix(tiny_set), "pico")
    for name in tiny_set.modules:
        _close(permuted.delta(name), base.delta(name))
        _close(rotated.delta(name), base.delta(name))


def test_acts_on_the_factors_not_on_delta_w(tiny_set, reparam):
    # The sharing scores come from B's spectrum, so a non-orthogonal re-split of ΔW changes them.
    base = merge(tiny_set, "pico").delta("blocks.0.attn.q_proj")
    remixed = merge(reparam(tiny_set), "pico").delta("blocks.0.attn.q_proj")
    assert float((base - remixed).norm() / base.norm()) > 1e-3
    assert get_method("pico").space == "factors"


def test_cancelling_pair_gives_zero(single_set, negate):
    first = single_set.adapters[0]
    pair = negate(AdapterSet.from_adapters([first, Adapter(name="t1", modules=first.modules)]), 1)
    result = merge(pair, "pico")  # calibrated B's stay opposite, so the TA sum is zero
    for name in pair.modules:
        assert result.modules[name].norm() < 1e-6 * float(first.delta(name).norm())


def test_spec_and_errors(tiny_set):
    info = get_method("pico")
    assert info.param("base").choices == ("task_arithmetic", "ties", "tsv_m")
    assert info.defaults()["base"] == "task_arithmetic" and info.defaults()["restore_norm"]
    with pytest.raises(ValueError, match="base"):
        merge(tiny_set, "pico", base="knots")
    with pytest.raises(ValueError, match="at least one"):
        calibrate_b([])
