"""Element-wise methods stream on large models: lazy modules equal the stored dense route bit for
bit; the export's randomized SVD of large dense modules is close to the exact one and reports
its own error exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from merging_core import Adapter, AdapterSet, LoraModule, MergedModule, merge
from merging_core.elementwise import streaming
from merging_core.export import export_merge, randomized_spectrum, spectrum, truncation_stats
from merging_core.merge import MergeResult

SHAPES = {"l.0.q": (24, 20, False), "l.0.k": (12, 20, False), "l.1.c": (20, 16, True)}


def _set(seed: int = 0, tasks: int = 3, shapes=SHAPES) -> AdapterSet:
    gen = torch.Generator().manual_seed(seed)
    adapters = []
    for t in range(tasks):
        mods = {
            name: LoraModule(
                B=torch.randn(m, 3, generator=gen),
                A=torch.randn(3, n, generator=gen),
                transposed=tr,
            )
            for name, (m, n, tr) in shapes.items()
        }
        adapters.append(Adapter(name=f"t{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)


CASES = [
    ("ties", {}),
    ("ties", {"threshold": "per_tensor", "sign_method": "frequency", "weights": [1, 0.5, 2]}),
    ("dare", {"drop_rate": 0.5}),
    ("dare", {"variant": "ties", "drop_rate": 0.3, "density": 0.4}),
    ("pico", {"base": "ties"}),
]


@pytest.mark.parametrize(("method", "params"), CASES)
def test_streamed_modules_equal_the_stored_dense_route(method, params, monkeypatch):
    aset = _set()
    stored = merge(aset, method, seed=3, **params)
    monkeypatch.setattr(streaming, "STREAM_BYTES", 0)  # every model is "large" now
    lazy = merge(aset, method, seed=3, **params)
    for name, module in lazy.modules.items():
        assert module.is_lazy and module.dense is None
        assert torch.equal(module.linear_delta(), stored.modules[name].linear_delta())
        assert torch.equal(lazy.delta(name), stored.delta(name))  # base layout too
        assert module.norm() == stored.modules[name].norm()
    thresholds = stored.diagnostics.get("trim_thresholds")
    assert lazy.diagnostics.get("trim_thresholds") == thresholds


def test_streamed_export_writes_the_same_bytes(tmp_path, monkeypatch):
    aset = _set(1, shapes={k: v for k, v in SHAPES.items() if not v[2]})  # one PEFT layout
    stored = merge(aset, "ties")
    monkeypatch.setattr(streaming, "STREAM_BYTES", 0)
    lazy = merge(aset, "ties")
    assert lazy.diagnostics["streamed"] and lazy.diagnostics["nonzero_fraction"] is None
    export_merge(stored, tmp_path / "s", rank=4)
    export_merge(lazy, tmp_path / "l", rank=4)
    a = load_file(str(tmp_path / "s" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "l" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lazy_module_contract():
    like = LoraModule(B=torch.zeros(5, 1), A=torch.zeros(1, 4), transposed=True)
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(5, 4)

    mod = MergedModule.from_compute(like, compute)
    assert mod.linear_shape == (5, 4) and not mod.is_factored
    assert mod.delta().shape == (4, 5) and len(calls) == 1  # computed on demand, not kept
    assert torch.equal(mod.scaled(2.0).linear_delta(), 2 * torch.ones(5, 4))
    with pytest.raises(ValueError, match="exactly one of"):
        MergedModule(dense=torch.ones(2, 2), compute=compute, lazy_shape=(2, 2))
    with pytest.raises(ValueError, match="lazy_shape"):
        MergedModule(compute=compute)


def _known_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, sigma.numel(), generator=gen, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, sigma.numel(), generator=gen, dtype=torch.float64)).Q
    return ((U * sigma) @ V.T).float()


def test_randomized_spectrum_matches_a_known_spectrum():
    sigma = torch.cat([torch.logspace(1, -1, 30), 0.01 * torch.ones(270)]).double()
    W = _known_spectrum(700, 600, sigma)
    spec = randomized_spectrum(W, width=26)
    assert not spec.resolved
    torch.testing.assert_close(spec.S[:16], sigma[:16], rtol=2e-3, atol=0)
    _, retained, error = truncation_stats(spec.S, 16, residual=spec.residual)
    optimal = float((sigma[16:] ** 2).sum() / (sigma**2).sum()) ** 0.5
    assert optimal * (1 - 1e-5) <= error < optimal * 1.01  # near Eckart–Young (W is float32)
    U, V = spec.top(16)
    W16 = (U * spec.S[:16].float()) @ V.T
    measured = float((W - W16).double().norm() / W.double().norm())
    assert measured == pytest.approx(error, rel=1e-4)  # the reported error is the real one
    again = randomized_spectrum(W, width=26)
    assert torch.equal(again.S, spec.S)  # seeded: exports are reproducible


def test_large_dense_modules_export_through_the_randomized_route(tmp_path):
    sigma = torch.cat([torch.logspace(1, 0, 8), 0.05 * torch.ones(592)]).double()
    W = _known_spectrum(640, 600, sigma, seed=2)
    like = LoraModule(B=torch.zeros(640, 1), A=torch.zeros(1, 600))
    merged = MergedModule.from_compute(like, lambda: W)
    assert not spectrum(merged, rank=8).resolved
    result = MergeResult("task_arithmetic", {}, ("a",), {"x": merged})
    report = export_merge(result, tmp_path / "out", rank=8)
    row = report.modules[0]
    assert row.rank == 8 and row.exact_rank == 600  # unseen tail above noise: full rank
    t = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    approx = t["base_model.model.x.lora_B.weight"] @ t["base_model.model.x.lora_A.weight"]
    measured = float((approx - W).double().norm() / W.double().norm())
    assert measured == pytest.approx(row.rel_error, rel=1e-4)
    optimal = float((sigma[8:] ** 2).sum() / (sigma**2).sum()) ** 0.5
    assert optimal * (1 - 1e-4) <= row.rel_error < optimal * 1.01
