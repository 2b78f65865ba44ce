"""The optimisation loop shared by TARA and AdaMerging, and the exact factored result.

Each step draws ``batches_per_step`` batches of ``batch_size`` unlabeled inputs from every task
(cycling shuffled passes drawn with the run's generator), runs the task data's forward with the
current updates ``(B, A_φ)``, and takes one optimiser step on ``objective(H)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from merging_core.adapters import AdapterSet
from merging_core.adaptive.banks import DirectionBank, updates_from
from merging_core.adaptive.objective import BatchStream, batch_entropies
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)
from merging_core.taskdata import TaskData

ShouldStop = Callable[[], bool]
Objective = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings; ``optimizer`` is ``"adamw"`` (TARA, torch default decay) or ``"adam"``.

    ``entropy_scale``: the logit scale inside the entropies (see ``TaskData.logits``).
    ``precision``: ``"float32"`` or ``"bfloat16"`` (the forward runs under autocast; the
    coefficients, their gradients, the entropies and the optimiser stay float32).
    ``threads``: torch intra-op threads while the loop runs (restored after); 0 keeps the
    process's setting (the entry points choose it, see ``merging_core.runtime``). Torch's pool
    is process-wide, so a server running other work beside the loop should keep 0.
    """

    steps: int
    lr: float
    entropy_scale: float | None
    batch_size: int = 16
    batches_per_step: int = 1
    optimizer: str = "adamw"
    precision: str = "float32"
    threads: int = 0


@dataclass
class TrainTrace:
    """What one optimisation produced (history per step)."""

    losses: list[float] = field(default_factory=list)
    entropies: list[list[float]] = field(default_factory=list)
    steps_done: int = 0
    stopped: bool = False
    seconds: float = 0.0


def train_coefficients(
    data: TaskData,
    tasks: Sequence[str],
    banks: Mapping[str, DirectionBank],
    coefficients: nn.Module,
    objective: Objective,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TrainTrace:
    """Minimise ``objective(H)`` over ``coefficients``; ``H (N,)`` = per-task batch entropies.

    ``should_stop()`` is polled before every step; a stopped run keeps what it learned so far.
    """
    if config.steps < 0:
        raise ValueError(f"steps must be >= 0, got {config.steps}")
    if config.threads < 0:
        raise ValueError(f"threads must be >= 0 (0: the process's setting), got {config.threads}")
    before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(data, tasks, banks, coefficients, objective, config=config,
                      generator=generator, progress=progress, should_stop=should_stop)  # fmt: skip
    finally:
        if config.threads:
            torch.set_num_threads(before)


def _train(data, tasks, banks, coefficients, objective, *, config, generator, progress,
           should_stop) -> TrainTrace:  # fmt: skip
    opt = _optimizer(config, coefficients.parameters())
    streams = [BatchStream(data.num_unlabeled(t), config.batch_size, generator) for t in tasks]
    trace, start = TrainTrace(), time.perf_counter()
    for step in range(config.steps):
        if should_stop is not None and should_stop():
            trace.stopped = True
            break
        loss, entropies = _one_step(data, tasks, streams, banks, coefficients, objective, opt,
                                    config)  # fmt: skip
        trace.losses.append(loss)
        trace.entropies.append(entropies)
        trace.steps_done = step + 1
        elapsed = time.perf_counter() - start
        report_progress(progress, (step + 1) / config.steps,
                        _step_message(step + 1, config.steps, elapsed))  # fmt: skip
    trace.seconds = time.perf_counter() - start
    return trace


def _step_message(done: int, total: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    left = (total - done) / rate if rate > 0 else 0.0
    return f"step {done} of {total} · {rate:.1f} steps/s · about {left:.0f} s left"


def _optimizer(config: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if config.lr <= 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    raise ValueError(f"optimizer must be 'adamw' or 'adam', got {config.optimizer!r}")


def _one_step(data, tasks, streams, banks, coefficients, objective, opt, config):
    opt.zero_grad(set_to_none=True)
    total, entropies = 0.0, torch.zeros(len(tasks))
    for _ in range(config.batches_per_step):
        updates = updates_from(banks, coefficients())
        batches = [data.unlabeled(t, s.next()) for t, s in zip(tasks, streams, strict=True)]
        with autocast(data.device, config.precision):
            H = batch_entropies(data, tasks, batches, updates, scale=config.entropy_scale)  # (N,)
        loss = objective(H)
        loss.backward()
        total += float(loss.detach())
        entropies += H.detach().cpu()
    opt.step()
    return total / config.batches_per_step, (entropies / config.batches_per_step).tolist()


PRECISIONS = ("float32", "bfloat16")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward's precision: bfloat16 autocast, or a disabled context for float32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device).type
    return torch.autocast(dev, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def merged_result(
    adapter_set: AdapterSet,
    banks: Mapping[str, DirectionBank],
    phi: Mapping[str, torch.Tensor],
    *,
    diagnostics: Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    run: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Exact factored ``MergeResult`` for coefficients ``φ`` (CPU float32 factors)."""
    modules: dict[str, MergedModule] = {}
    for path, bank in banks.items():
        B, A = bank.merged_factors(phi[path].detach())
        like = adapter_set.factors(path)[0]
        modules[path] = MergedModule.from_factors(like, B.detach().float().cpu(), A.float().cpu())
    return result_from_modules(
        adapter_set, modules, diagnostics=diagnostics, state=state, run=run, extras=extras
    )
