"""Entropies through a task-data source: batches, per-task mean entropies, anchors ``z_i``.

Space: factors (updates are ``(B, A_φ)`` pairs applied inside the task data's forward).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.banks import DirectionBank, build_banks
from merging_core.taskdata import LowRankUpdate, TaskData


class BatchStream:
    """Endless shuffled batches of indices into ``n`` items (a new permutation per pass)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        if n < 1:
            raise ValueError(f"a task needs at least one unlabeled input, got {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._order = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self._order.numel() < min(self.batch_size, self.n):
            perm = torch.randperm(self.n, generator=self.generator)
            self._order = torch.cat([self._order, perm])
        size = min(self.batch_size, self.n)
        batch, self._order = self._order[:size], self._order[size:]
        return batch


def mean_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of ``softmax(logits)`` over the batch, ``(N, C) -> ()`` (nats)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


def batch_entropies(
    data: TaskData,
    tasks: Sequence[str],
    batches: Sequence[object],
    updates: Mapping[str, LowRankUpdate] | None,
    *,
    scale: float | None,
) -> torch.Tensor:
    """``(N,)`` mean entropies of each task's batch under base + ``updates``, one forward."""
    features = data.features(batches, updates)
    return torch.stack(
        [mean_entropy(data.logits(t, f, scale=scale)) for t, f in zip(tasks, features, strict=True)]
    )


def entropy_over_split(
    data: TaskData,
    task: str,
    updates: Mapping[str, LowRankUpdate] | None,
    *,
    scale: float | None,
    chunk: int = 256,
) -> float:
    """Mean entropy of ``task`` over its whole unlabeled split, in chunks, without grad."""
    n = data.num_unlabeled(task)
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, chunk):
            index = torch.arange(start, min(start + chunk, n))
            H = batch_entropies(data, [task], [data.unlabeled(task, index)], updates, scale=scale)
            total += float(H[0]) * index.numel()
    return total / max(n, 1)


def adapter_anchor(
    adapter_set: AdapterSet, data: TaskData, index: int, *, scale: float | None
) -> float:
    """``z_i``: mean entropy of base + adapter ``index`` alone on its task's unlabeled split."""
    single = adapter_set.subset([index])
    banks = build_banks(single, variant="a", device=data.device)
    updates = {p: (b.B, b.A) for p, b in banks.items()}
    return entropy_over_split(data, single.names[0], updates, scale=scale)


def phi_constant(banks: Mapping[str, DirectionBank], value: float) -> dict[str, torch.Tensor]:
    """``φ = value`` for every direction of every bank (``0.4`` = Task Arithmetic at 0.4)."""
    return {p: torch.full((b.size,), float(value), device=b.A.device) for p, b in banks.items()}
