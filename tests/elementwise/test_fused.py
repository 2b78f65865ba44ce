"""The fused element-wise engine gives the bytes of the step-by-step one: exact thresholds from a
sampled bracket (= torch.kthvalue), TIES and DARE modules bit-equal to the unfused engine over
several row blocks, tie rules, cancellations and seeded masks."""

import itertools

import pytest
import torch

from merging_core import Adapter, AdapterSet, LoraModule, merge
from merging_core.elementwise import fused, streaming
from merging_core.elementwise.fused import (
    FactorDeltas,
    factor_deltas,
    fused_sum_module,
    fused_thresholds,
    fused_ties_module,
    row_blocks,
)
from merging_core.elementwise.streaming import (
    dropped_tensors,
    linear_delta,
    mask_seeds,
    ties_merge_parts,
    weighted_sum_parts,
)

SHAPES = ((130, 70), (200, 33), (64, 64), (65, 3))  # several row blocks once blocks are small


@pytest.fixture
def small_blocks(monkeypatch):
    """64-row blocks and a 256-entry bracket sample, so small tests take the large-model paths."""
    monkeypatch.setattr(fused, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(fused, "BRACKET_SAMPLES", 256)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _set(tasks: int, seed: int, *, integer: bool = False, rank: int = 5) -> AdapterSet:
    """Random adapters over SHAPES; ``integer`` factors in {-2..2} make ΔW full of exact ties
    (equal magnitudes at the threshold, exact cancellations between tasks)."""
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape):
        if integer:
            return torch.randint(-2, 3, shape, generator=gen).float()
        return torch.randn(shape, generator=gen)

    adapters = [
        Adapter(
            name=f"t{t}",
            modules={
                f"m{j}": LoraModule(B=draw(m, rank), A=draw(rank, n))
                for j, (m, n) in enumerate(SHAPES)
            },  # fmt: skip
        )
        for t in range(tasks)
    ]
    return AdapterSet.from_adapters(adapters)


def _unfused(aset, *, density, sign_method, weights, scaling, drop=0.0, seeds=None):
    names = aset.modules

    def delta(i, t):
        return linear_delta(aset.factors(names[i])[t])

    served = dropped_tensors(delta, seeds, drop) if drop else delta
    return ties_merge_parts(served, num_parts=len(names), num_tasks=len(aset), density=density,
                            sign_method=sign_method, weights=weights, scaling=scaling)  # fmt: skip


def _kth_largest(source: FactorDeltas, task: int, density: float) -> float:
    mags = torch.cat([source.dense(i, task).abs().reshape(-1) for i in range(source.num_parts)])
    k = int(density * mags.numel())
    return float(mags.kthvalue(mags.numel() - k + 1).values)


def test_row_blocks_cover_the_rows_at_aligned_starts(small_blocks):
    for rows in (0, 1, 63, 64, 65, 130, 200, 4096):
        spans = row_blocks(rows, 70)
        assert spans[0][0] == 0 and spans[-1][1] == rows
        assert all(a % fused.ROW_ALIGN == 0 for a, _ in spans)
        assert all(b == c for (_, b), (c, _) in zip(spans, spans[1:], strict=False))
        assert all(b - a >= min(rows, fused.ROW_ALIGN) for a, b in spans)


def test_blocks_are_the_rows_of_the_dense_products_and_masks(small_blocks):
    aset = _set(3, 0)
    seeds = mask_seeds(torch.Generator().manual_seed(1), len(aset.modules), 3)
    for drop in (0.0, 0.4):
        source = factor_deltas(aset, drop_rate=drop, seeds=seeds)
        for i in range(source.num_parts):
            whole = [source.dense(i, t) for t in range(3)]  # drop_and_rescale on the whole tensor
            for a, b, rows in source.blocks(i):
                for t, x in enumerate(rows):
                    assert torch.equal(_bits(x), _bits(whole[t][a:b]))


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("density", [0.01, 0.2, 0.5, 0.9])
def test_thresholds_equal_kthvalue(small_blocks, monkeypatch, integer, density):
    source = factor_deltas(_set(3, 2, integer=integer))
    if not integer:  # a continuous sample brackets the threshold: no fallback pass
        monkeypatch.setattr(fused, "magnitude_threshold", _no_fallback)
    got = fused_thresholds(source, density=density)
    assert got == [_kth_largest(source, t, density) for t in range(3)]


def test_thresholds_fall_back_exactly_when_the_bracket_misses(small_blocks, monkeypatch):
    monkeypatch.setattr(fused, "BRACKET_Z", -3.0)  # an inverted bracket always misses
    source = factor_deltas(_set(2, 3))
    assert fused_thresholds(source, density=0.3) == [_kth_largest(source, t, 0.3) for t in (0, 1)]


def test_thresholds_of_dropped_deltas_and_edge_densities(small_blocks):
    aset = _set(2, 4)
    seeds = mask_seeds(torch.Generator().manual_seed(2), len(aset.modules), 2)
    source = factor_deltas(aset, drop_rate=0.9, seeds=seeds)  # 90 % zeros: bracket from 0
    for density in (0.05, 0.1, 0.5):
        got = fused_thresholds(source, density=density)
        assert got == [_kth_largest(source, t, density) for t in (0, 1)]
    assert fused_thresholds(source, density=1e-6) == [float("inf")] * 2  # k = 0


def test_thresholds_refuse_non_finite_entries():
    bad = LoraModule(B=torch.tensor([[float("nan")], [1.0]]), A=torch.ones(1, 3))
    source = FactorDeltas([[bad]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        fused_thresholds(source, density=0.5)


def _no_fallback(*args, **kwargs):
    raise AssertionError("the sampled bracket missed")


CASES = [  # (tasks, density, sign method, λ, weights): every option value at least twice
    (2, 0.05, "total", 1.0, "ones"),
    (2, 0.3, "frequency", -0.7, "mixed"),
    (3, 1.0, "total", -0.7, "mixed"),
    (3, 0.05, "frequency", 1.0, "mixed"),
    (6, 0.3, "total", 1.0, "mixed"),
    (6, 1.0, "frequency", 1.0, "ones"),
    (6, 0.05, "total", -0.7, "ones"),
]


@pytest.mark.parametrize(("tasks", "density", "sign_method", "scaling", "weights"), CASES)
def test_ties_modules_are_the_unfused_bytes(small_blocks, tasks, density, sign_method, scaling,
                                            weights):  # fmt: skip
    aset = _set(tasks, tasks)
    w = [1.0] * tasks if weights == "ones" else [0.8, -0.5, 1.7, 1.1, 2.0, 0.3][:tasks]
    want, thresholds = _unfused(aset, density=density, sign_method=sign_method, weights=w,
                                scaling=scaling)  # fmt: skip
    source = factor_deltas(aset)
    got_thresholds = None if density == 1.0 else fused_thresholds(source, density=density)
    assert got_thresholds == thresholds
    for i in range(source.num_parts):
        got = fused_ties_module(source, i, thresholds=got_thresholds, sign_method=sign_method,
                                weights=w, scaling=scaling)  # fmt: skip
        assert torch.equal(_bits(got), _bits(want[i]))


@pytest.mark.parametrize("sign_method", ["total", "frequency"])
@pytest.mark.parametrize("seed", range(2))
def test_exact_ties_and_cancellations_are_the_unfused_bytes(small_blocks, monkeypatch, seed,
                                                            sign_method):  # fmt: skip
    redone = []
    original = fused._redo_ties
    monkeypatch.setattr(fused, "_redo_ties", lambda *a: redone.append(a[2]) or original(*a))
    for tasks, drop in itertools.product([2, 4], [0.0, 0.5]):
        aset = _set(tasks, seed, integer=True, rank=2)
        seeds = mask_seeds(torch.Generator().manual_seed(seed), len(aset.modules), tasks)
        opts = {"density": 0.3, "sign_method": sign_method, "weights": [1.0] * tasks,
                "scaling": 1.0}  # fmt: skip
        want, thresholds = _unfused(aset, drop=drop, seeds=seeds, **opts)
        source = factor_deltas(aset, drop_rate=drop, seeds=seeds)
        assert fused_thresholds(source, density=0.3) == thresholds
        for i in range(source.num_parts):
            got = fused_ties_module(source, i, thresholds=thresholds, sign_method=sign_method,
                                    weights=opts["weights"], scaling=1.0)  # fmt: skip
            assert torch.equal(_bits(got), _bits(want[i]))
    if sign_method == "total" and seed == 0:  # the seeds were chosen so this path runs
        assert -1.0 in redone or 0.0 in redone


def test_majority_tie_rule_golden():
    # two tasks cancel exactly at entry 0; the module's other signs are mostly negative, so the
    # official rule elects -1 there and the mean of the agreeing task's -2 comes out
    B = torch.ones(1, 1)
    t0 = LoraModule(B=B, A=torch.tensor([[2.0, -1.0, -1.0, 1.0]]))
    t1 = LoraModule(B=B, A=torch.tensor([[-2.0, -3.0, -1.0, 0.5]]))
    source = FactorDeltas([[t0, t1]])
    got = fused_ties_module(source, 0, thresholds=None, sign_method="total", weights=[1.0, 1.0],
                            scaling=1.0)  # fmt: skip
    assert torch.equal(got, torch.tensor([[-2.0, -2.0, -1.0, 0.75]]))


@pytest.mark.parametrize("drop", [0.0, 0.3, 0.9])
def test_dare_sums_are_the_unfused_bytes(small_blocks, drop):
    aset = _set(3, 5)
    w, scaling = [0.5, 1.5, -2.0], 0.4
    seeds = mask_seeds(torch.Generator().manual_seed(3), len(aset.modules), 3)
    names = aset.modules

    def delta(i, t):
        return linear_delta(aset.factors(names[i])[t])

    served = dropped_tensors(delta, seeds, drop) if drop else delta
    want = weighted_sum_parts(served, num_parts=len(names), weights=w, scaling=scaling)
    source = factor_deltas(aset, drop_rate=drop, seeds=seeds)
    for i in range(source.num_parts):
        got = fused_sum_module(source, i, weights=w, scaling=scaling)
        assert torch.equal(_bits(got), _bits(want[i]))


@pytest.mark.parametrize("method", ["ties", "dare"])
def test_streamed_and_stored_results_are_the_same_bytes(small_blocks, monkeypatch, method):
    aset = _set(3, 6)
    opts = {"variant": "ties", "drop_rate": 0.3, "density": 0.4} if method == "dare" else {}
    stored = merge(aset, method, seed=1, **opts)
    monkeypatch.setattr(streaming, "STREAM_BYTES", 0)
    streamed = merge(aset, method, seed=1, **opts)
    assert streamed.diagnostics["streamed"] and stored.diagnostics["trim_thresholds"]
    assert streamed.diagnostics["trim_thresholds"] == stored.diagnostics["trim_thresholds"]
    for name in aset.modules:
        assert torch.equal(_bits(streamed.delta(name)), _bits(stored.delta(name)))
