"""What data-driven merges (TARA, AdaMerging) and evaluation need from a bundle.

A bundle = a frozen base encoder + per-task zero-shot heads + per-task unlabeled validation inputs
(+ labelled test sets for reporting). Adapter module paths (as ``Adapter.modules`` names them) are
paths of ``nn.Linear`` submodules of ``encoder`` (``encoder.get_submodule(path)``), and each task is
named like the adapter fine-tuned on it, so a merge over any subset of adapters finds its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class TaskContext:
    """Everything a data-driven merge may touch; labels of ``unlabeled`` are never included.

    Attributes:
        encoder: the frozen base model: ``encoder(x) -> (N, d_embed)`` features.
        task_names: task names; ``task_names[i]`` is also the name of the adapter for task i.
        heads: per task ``(num_classes_i, d_embed)`` frozen classifier rows (zero-shot text
            embeddings, L2-normalised); ``logits = logit_scale · normalize(features) @ headᵀ``.
        logit_scale: temperature of the heads (CLIP style).
        unlabeled: per task ``(N_val, C, H, W)`` validation inputs, labels withheld.
        device: where the encoder lives.
    """

    encoder: nn.Module
    task_names: tuple[str, ...]
    heads: tuple[torch.Tensor, ...]
    logit_scale: float
    unlabeled: tuple[torch.Tensor, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def task_index(self, name: str) -> int:
        """Index of the task named ``name`` (= the adapter's name)."""
        try:
            return self.task_names.index(name)
        except ValueError:
            raise KeyError(
                f"bundle has no task named {name!r}; its tasks are {list(self.task_names)}"
            ) from None

    def logits(self, task: int, features: torch.Tensor) -> torch.Tensor:
        """``(N, d_embed) -> (N, num_classes_task)`` with the frozen zero-shot head of ``task``."""
        feats = torch.nn.functional.normalize(features, dim=-1)
        return self.logit_scale * feats @ self.heads[task].to(feats.device).T
