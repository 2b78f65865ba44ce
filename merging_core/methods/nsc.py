"""NSC-Merging (Lee, Jeong & Yoon, CVPR 2026): label-free weights from null-space compression.

Space: ΔW, computed in factor space; needs a bundle's unlabeled data. The merge is layer-wise
Task Arithmetic, ``ΔW_l = Σ_t λ_{l,t} B_t A_t`` (one coefficient per LoRA module and adapter,
unconstrained), run through the shared coefficient-weighted forward
(:mod:`merging_core.directional`), so the result is exact stacked factors of rank ``Σ r_t``.

The coefficients are learned without labels or logits. During fine-tuning a LoRA's input factor
``A_t`` ``(r, d_in)`` "compresses its null space": the task's inputs ``x`` to the layer move into
the row space of ``A_t``. NSC measures, for task ``t``'s unlabeled inputs fed through the *merged*
model, the share of each layer input that ``A_t`` cannot see,

    ν_t,l = mean over tokens of sqrt(1 − ‖P_t x‖² / ‖x‖²),   ‖P_t x‖² = yᵀ (A_t A_tᵀ + εI)⁻¹ y,
    y = A_t x,   ε = 1e-8,

and minimises ``L = (1/T) Σ_t mean_l ν_t,l`` over the λ with AdamW. ``A_t`` is the task's own
(unscaled) input factor, fixed; only the inputs ``x`` change with λ, so a module's own λ never
receives a gradient from its own term, only from later loss modules.

Defaults read from the official code (``src/merge.py``, ``src/models/kernel_projection.py``,
``src/models/merging_utils/LoraWrapper.py``): linear coefficients initialised to ``λ/T`` with
``λ = --lamda`` (default 1.0; 2.4 in the released LLaVA script), AdamW lr 1e-3 (3e-4 in that
script), 500 steps, batches of 16 per task, the ratio as above. Differences:

* the official hooks are hard-coded to ``v_proj`` in blocks 24–31 of LLaVA's 32 (the last
  quarter); here ``loss_modules="last_quarter"`` (default) takes the last quarter of the
  adapters' modules in their order, ``"all"`` every module;
* the official slices the merged ``lora_A`` output by a fixed rank 16 and a table of task names;
  here each adapter's own ``A_t`` and rank are used;
* ``1 − ratio`` is clamped at 1e-12 inside the square root (the official has no guard and turns
  NaN if rounding pushes the ratio above 1); the loss is summed over tasks then averaged, the
  official back-propagates each task's share separately (the same gradient);
* the coefficients are one tensor, so AdamW's decoupled weight decay (0.01) also shrinks those
  that get no gradient (modules after the last loss module); the official keeps one parameter
  per layer and skips those without a gradient.

Reference: https://arxiv.org/abs/2603.26317 (code: github.com/wonyoung01/nsc_merging)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from merging_core.adapters import AdapterSet
from merging_core.directional import (
    BatchStream,
    DirectionBank,
    TaskCoefficients,
    WeightedLoraHooks,
    build_banks,
    frozen_eval,
    merged_result,
    task_indices,
)
from merging_core.factors import CORE_DTYPE
from merging_core.merge import MergeResult, Progress, report_progress
from merging_core.methods.registry import Param, register_method

EPS = 1e-8
LOSS_MODULES = ("last_quarter", "all")
Projector = tuple[torch.Tensor, torch.Tensor]  # (A (r, d_in), (A Aᵀ + εI)⁻¹ (r, r))


def null_space_ratio(x: torch.Tensor, A: torch.Tensor, gram_inv: torch.Tensor) -> torch.Tensor:
    """Mean ``sqrt(1 − ‖P_A x‖²/‖x‖²)`` over all rows of ``x`` ``(..., d_in)``; a scalar.

    Args:
        A: ``(r, d_in)`` a task's input factor. gram_inv: ``(A Aᵀ + εI)⁻¹`` ``(r, r)``.
    """
    x = x.reshape(-1, x.shape[-1])  # (N, d_in)
    y = x @ A.T.to(x.dtype)  # (N, r)
    inside = ((y @ gram_inv.to(x.dtype)) * y).sum(dim=-1)  # (N,)
    total = (x * x).sum(dim=-1) + EPS
    return torch.sqrt((1.0 - inside / total).clamp_min(1e-12)).mean()


def projectors(adapter_set: AdapterSet, module: str, device: torch.device) -> list[Projector]:
    """Per adapter ``(A_t, (A_t A_tᵀ + εI)⁻¹)`` of ``module`` (inverse in float64)."""
    out = []
    for m in adapter_set.factors(module):
        A = m.A.to(CORE_DTYPE)
        gram = A @ A.T + EPS * torch.eye(A.shape[0], dtype=CORE_DTYPE)  # (r, r)
        out.append((m.A.float().to(device), torch.linalg.inv(gram).float().to(device)))
    return out


def loss_module_paths(modules: Sequence[str], choice: str) -> list[str]:
    """The modules whose inputs enter the loss: the last quarter (at least one) or all."""
    if choice not in LOSS_MODULES:
        raise ValueError(f"loss_modules must be one of {list(LOSS_MODULES)}, got {choice!r}")
    if choice == "all":
        return list(modules)
    return list(modules)[-max(1, math.ceil(len(modules) / 4)) :]


class InputCapture:
    """Records the input of each watched submodule on every forward (a context manager)."""

    def __init__(self, encoder: nn.Module, paths: Sequence[str]) -> None:
        self.encoder, self.paths = encoder, list(paths)
        self.inputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> InputCapture:
        for path in self.paths:
            layer = self.encoder.get_submodule(path)
            self._handles.append(layer.register_forward_pre_hook(self._hook(path)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, path: str):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self.inputs[path] = inputs[0]

        return hook


def nsc_loss(
    capture: InputCapture, proj: Mapping[str, list[Projector]], adapter: int
) -> torch.Tensor:
    """Mean null-space ratio over the watched modules for one adapter's task."""
    terms = [null_space_ratio(capture.inputs[p], *proj[p][adapter]) for p in capture.paths]
    return torch.stack(terms).mean()


def run_nsc(
    adapter_set: AdapterSet,
    context: Any,
    *,
    scaling: float = 1.0,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 16,
    loss_modules: str = "last_quarter",
    seed: int = 0,
    progress: Progress | None = None,
) -> MergeResult:
    """Learn NSC's layer-wise coefficients on ``context``'s unlabeled inputs.

    Returns:
        Exact factors ``Σ_t λ_{l,t} B_t A_t`` per module; diagnostics ``lambda`` (modules ×
        tasks), ``loss_first`` / ``loss_last`` (before the first and last steps) and the watched
        modules.
    """
    if steps < 0 or lr <= 0 or batch_size < 1:
        raise ValueError(
            f"need steps >= 0, lr > 0, batch_size >= 1; got {steps}, {lr}, {batch_size}"
        )
    tasks, dev, T = task_indices(adapter_set, context), context.device, len(adapter_set)
    banks: dict[str, DirectionBank] = {
        p: b.to(dev) for p, b in build_banks(adapter_set, variant="a").items()
    }
    coeffs = TaskCoefficients(banks, num_tasks=T, layerwise=True, init=scaling / T, clamp=False)
    watched = loss_module_paths(adapter_set.modules, loss_modules)
    proj = {p: projectors(adapter_set, p, dev) for p in watched}
    gen = torch.Generator().manual_seed(int(seed))
    streams = [BatchStream(context.unlabeled[t].shape[0], batch_size, gen) for t in tasks]
    opt = torch.optim.AdamW(coeffs.parameters(), lr=lr)
    losses: list[float] = []
    with (
        frozen_eval(context.encoder),
        WeightedLoraHooks(context.encoder, banks) as hooks,
        InputCapture(context.encoder, watched) as capture,
    ):
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            hooks.set(coeffs())
            total = torch.zeros((), device=dev)
            for i, (t, stream) in enumerate(zip(tasks, streams, strict=True)):
                context.encoder(context.unlabeled[t][stream.next()].to(dev))
                total = total + nsc_loss(capture, proj, i) / T
            if total.requires_grad:
                total.backward()
            opt.step()
            losses.append(float(total.detach()))
            report_progress(progress, (step + 1) / steps, f"NSC step {step + 1}/{steps}")
    diagnostics = {
        "lambda": coeffs.lam.detach().cpu().tolist(),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_modules": watched,
    }
    return merged_result(adapter_set, banks, coeffs(), diagnostics=diagnostics)


@register_method(
    name="nsc",
    pretty_name="NSC-Merging (null-space compression)",
    reference_url="https://arxiv.org/abs/2603.26317",
    space="factors",
    needs_data=True,
    tags=("data-driven",),
    params=(
        Param(
            "scaling",
            "float",
            1.0,
            low=0.0,
            high=10.0,
            step=0.1,
            help="λ: every coefficient starts at λ/T (official default 1.0; 2.4 in its LLaVA run).",
        ),
        Param("steps", "int", 500, low=0, high=5000, step=10, help="AdamW steps (official 500)."),
        Param("lr", "float", 1e-3, low=1e-5, high=1.0, log=True, help="Learning rate (1e-3)."),
        Param("batch_size", "int", 16, low=1, high=512, help="Unlabeled inputs per task per step."),
        Param(
            "loss_modules",
            "choice",
            "last_quarter",
            choices=LOSS_MODULES,
            help="Layers whose inputs enter the loss: the last quarter of the adapters' modules "
            "(as the official last 8 of 32 blocks) or all of them.",
        ),
    ),
)
def nsc(
    adapter_set: AdapterSet,
    *,
    context: Any,
    scaling: float = 1.0,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 16,
    loss_modules: str = "last_quarter",
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """NSC-Merging: layer-wise λ learned by compressing inputs into each task's A row space."""
    seed = 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return run_nsc(
        adapter_set,
        context,
        scaling=scaling,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        loss_modules=loss_modules,
        seed=seed,
        progress=progress,
    )
