"""Same code path on CUDA: a TARA run there matches the CPU run (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from merging_core.bundles.context import TaskContext
from merging_core.methods.tara import run_tara

from .conftest import MODULES, make_adapters, make_context


def on_cuda(context: TaskContext) -> TaskContext:
    dev = torch.device("cuda")
    return TaskContext(
        encoder=context.encoder.to(dev), task_names=context.task_names,
        heads=tuple(h.to(dev) for h in context.heads), logit_scale=context.logit_scale,
        unlabeled=tuple(u.to(dev) for u in context.unlabeled), device=dev,
    )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["a", "b"])
def test_cuda_run_matches_cpu_run(variant):
    adapters = make_adapters()
    cpu = run_tara(adapters, make_context(), variant=variant, steps=5, lr=0.05, seed=1)
    gpu_ctx = on_cuda(make_context())
    gpu = run_tara(adapters, gpu_ctx, variant=variant, steps=5, lr=0.05, seed=1, device="cuda")
    for path in MODULES:
        torch.testing.assert_close(gpu.phi[path], cpu.phi[path], atol=1e-4, rtol=1e-3)
        assert gpu.result.modules[path].factors.B.device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        run_tara(adapters, make_context(), steps=0, device="cuda")
