"""Same code path on CUDA: a TARA run there matches the CPU run (skipped without a GPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from merging_core.merge import merge

from .conftest import MODULES, make_adapters, make_context, never_step


def on_cuda(data):
    dev = torch.device("cuda")
    return dataclasses.replace(
        data, device=dev, encoder=data.encoder.to(dev),
        heads={k: h.to(dev) for k, h in data.heads.items()},
        inputs={k: x.to(dev) for k, x in data.inputs.items()},
    )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["a", "b"])
def test_cuda_run_matches_cpu_run(variant):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    adapters = make_adapters()
    kw = dict(steps=5, lr=0.05, seed=1)
    cpu = merge(adapters, f"tara_{variant}", task_data=make_context(), **kw)
    gpu = merge(adapters, f"tara_{variant}", task_data=on_cuda(make_context()), device="cuda", **kw)
    for path in MODULES:
        torch.testing.assert_close(gpu.state[path], cpu.state[path], atol=1e-4, rtol=1e-3)
        assert gpu.modules[path].factors.B.device.type == "cpu"
    assert gpu.run["device"].startswith("cuda")
    with pytest.raises(ValueError, match="device"):
        merge(adapters, "tara_b", task_data=make_context(), should_stop=never_step, device="cuda")
