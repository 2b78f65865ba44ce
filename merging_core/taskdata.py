"""The task-data interface every data-driven merge and view sees (a leaf module: imports torch only).

A *task-data source* is a frozen base model plus, per task, unlabeled inputs and a head. Methods
(TARA, AdaMerging), sensitivity and the trade-off sweeps use nothing else, so any model family
works once it implements :class:`TaskData` (vision8's tiny ViT with cosine zero-shot heads, a
transformers sequence classifier with trained linear heads, a test fake).

Shapes:
    * ``updates``: module path -> ``(B, A)`` with ``B: (d_out, R)``, ``A: (R, d_in)`` in the
      linear layout; while a forward runs, each targeted module's output gains ``B (A x)``
      (``ΔW = B·A``). The tensors may require grad; gradients flow into them.
    * ``features(...)``: one ``(n_b, d_feat)`` tensor per batch, the inputs of the heads.
    * ``capture`` (optional): module path -> list. Each forward of that module during the call
      appends its input ``x`` ``(N, ..., d_in)`` to the list: the batches' rows stacked in
      batch order (``N = Σ_b n_b``; rows ``offset_b … offset_b + n_b − 1`` are batch ``b``), the
      middle dimensions whatever the model has there (``(N, tokens, d_in)`` for transformers;
      text batches right-padded to the longest, pad positions included). The tensors are not
      detached, so a loss on them back-propagates into ``updates``.
    * ``logits(task, features)``: ``(n, C_task)``, that task's head on those features.

Tasks are named like the adapters fine-tuned on them, so a merge over any subset of adapters finds
its tasks by name.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

LowRankUpdate = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class TaskData(Protocol):
    """What data-driven merges may touch; labels are never part of it.

    Attributes:
        name: the source's name (a bundle name), recorded in recipes.
        task_names: tasks in order; ``task_names[i]`` names an adapter too.
        device: where the base model lives (the forward runs there).
        entropy_scale: the default logit scale of entropy objectives for this source (see
            :meth:`logits`).
    """

    name: str
    task_names: tuple[str, ...]
    device: torch.device
    entropy_scale: float

    def fingerprint(self) -> str:
        """Content hash of everything a merge reads (base weights, heads, unlabeled inputs)."""
        ...

    def num_unlabeled(self, task: str) -> int:
        """How many unlabeled inputs ``task`` has."""
        ...

    def unlabeled(self, task: str, index: torch.Tensor) -> Any:
        """The model inputs of rows ``index`` ``(n,)`` of ``task``'s unlabeled split."""
        ...

    def features(
        self,
        batches: Sequence[Any],
        updates: Mapping[str, LowRankUpdate] | None = None,
        capture: MutableMapping[str, list[torch.Tensor]] | None = None,
    ) -> list[torch.Tensor]:
        """Head-input features of each batch under base + ``updates`` (one forward pass).

        The updates are applied for the duration of this call only; the base model is never
        left modified, so nothing else can see (or double-apply) them. ``capture`` (see the
        module docstring) receives the inputs of the named modules during this forward;
        implementations pass it to :func:`merging_core.lowrank_forward.patched`.
        """
        ...

    def logits(
        self, task: str, features: torch.Tensor, *, scale: float | None = None
    ) -> torch.Tensor:
        """``(n, d_feat) -> (n, C_task)`` with ``task``'s head.

        ``scale=None``: the head's own logits (what evaluation uses). ``scale=s``: the logits an
        entropy objective sees, ``s`` times the head's un-scaled logits (cosines for zero-shot
        heads, the raw linear logits for trained heads).
        """
        ...


def task_position(data: TaskData, task: str) -> int:
    """Index of ``task`` in ``data.task_names``; ``KeyError`` naming the known tasks."""
    try:
        return data.task_names.index(task)
    except ValueError:
        raise KeyError(
            f"task data {data.name!r} has no task {task!r}; its tasks are {list(data.task_names)}"
        ) from None


def require_tasks(data: TaskData, names: Sequence[str]) -> None:
    """Every adapter name must be a task of ``data`` (``KeyError`` names the first that is not)."""
    for name in names:
        task_position(data, name)
