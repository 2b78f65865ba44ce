"""Task data over a frozen encoder with cosine (CLIP-style zero-shot) heads.

``features = encoder(x)``; ``logits(task, f) = logit_scale · normalize(f) @ head_taskᵀ``; an entropy
objective at scale ``s`` sees ``s · cos`` (the official TARA code uses ``s = 1``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from merging_core.lowrank_forward import patched
from merging_core.taskdata import LowRankUpdate, task_position


@dataclass
class CosineTaskData:
    """A :class:`merging_core.taskdata.TaskData` over any frozen encoder with cosine heads
    (vision8; the tests' toy encoders): tensor inputs in, ``(N, d)`` features out.

    ``logits(task, f) = logit_scale · normalize(f) @ head_taskᵀ``; with ``scale=s`` the entropy
    objectives see ``s · cos`` instead (the official TARA code uses ``s = 1``).
    """

    name: str
    task_names: tuple[str, ...]
    device: torch.device
    encoder: nn.Module
    heads: dict[str, torch.Tensor]
    logit_scale: float
    entropy_scale: float
    inputs: dict[str, torch.Tensor]
    _fingerprint: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """BLAKE2 of task names, logit scale, encoder weights, heads and unlabeled inputs."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(repr(("cosine-heads", self.task_names, float(self.logit_scale))).encode())
            tensors = [*self.encoder.state_dict().values(), *self.heads.values(),
                       *self.inputs.values()]  # fmt: skip
            for t in tensors:
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def num_unlabeled(self, task: str) -> int:
        return int(self.inputs[self.task_names[task_position(self, task)]].shape[0])

    def unlabeled(self, task: str, index: torch.Tensor) -> torch.Tensor:
        return self.inputs[self.task_names[task_position(self, task)]][index.to(self.device)]

    def features(
        self,
        batches: Sequence[torch.Tensor],
        updates: Mapping[str, LowRankUpdate] | None = None,
        capture: MutableMapping[str, list[torch.Tensor]] | None = None,
    ) -> list[torch.Tensor]:
        x = torch.cat([b.to(self.device) for b in batches])
        with patched(self.encoder, updates or {}, capture=capture):
            feats = self.encoder(x)
        return list(feats.split([b.shape[0] for b in batches]))

    def logits(
        self, task: str, features: torch.Tensor, *, scale: float | None = None
    ) -> torch.Tensor:
        head = self.heads[self.task_names[task_position(self, task)]]
        cos = torch.nn.functional.normalize(features, dim=-1) @ head.to(features.device).T
        return (self.logit_scale if scale is None else float(scale)) * cos
