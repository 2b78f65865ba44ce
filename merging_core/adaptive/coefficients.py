"""Learnable coefficient parameterisations: ``nn.Module``s whose forward returns ``{path: φ (K,)}``.

* :class:`DirectionCoefficients`: one free signed ``φ`` per direction per module (TARA).
* :class:`TaskCoefficients`: AdaMerging's ``λ`` per task (task-wise) or per (module, task)
  (layer-wise), ``φ = λ[owner]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from merging_core.adaptive.banks import DirectionBank


class DirectionCoefficients(nn.Module):
    """One free signed ``φ`` per direction per module (TARA), init ``init`` or a warm start."""

    def __init__(
        self,
        banks: Mapping[str, DirectionBank],
        *,
        init: float,
        warm: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.paths = list(banks)
        if warm is not None:
            _check_warm_paths(warm, self.paths)
        device = next(iter(banks.values())).A.device
        params = []
        for path, bank in banks.items():
            start = torch.full((bank.size,), float(init), device=device)
            if warm is not None:
                start = _checked_warm(warm[path], bank.size, path).to(device)
            params.append(nn.Parameter(start.clone()))
        self.values = nn.ParameterList(params)

    def forward(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.paths, self.values, strict=True))

    def state(self) -> dict[str, torch.Tensor]:
        """Trained coefficients per module path, detached on CPU (warm-start input)."""
        return {p: v.detach().cpu().clone() for p, v in zip(self.paths, self.values, strict=True)}


class TaskCoefficients(nn.Module):
    """AdaMerging: ``λ`` per task (task-wise) or per (module, task) (layer-wise), ``φ = λ[owner]``.

    ``clamp`` restricts the *used* λ to ``[0, 1]`` at every forward (original AdaMerging).
    """

    def __init__(
        self,
        banks: Mapping[str, DirectionBank],
        *,
        num_tasks: int,
        layerwise: bool,
        init: float,
        clamp: bool,
        warm: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.paths = list(banks)
        self.owners = [bank.owner for bank in banks.values()]
        self.layerwise, self.clamp = layerwise, clamp
        device = self.owners[0].device
        shape = (len(self.paths), num_tasks) if layerwise else (num_tasks,)
        start = torch.full(shape, float(init), device=device)
        if warm is not None:
            if "lambda" not in warm:
                raise ValueError(
                    f"warm start for AdaMerging needs a 'lambda' entry, got {list(warm)[:3]}"
                )
            if tuple(warm["lambda"].shape) != shape:
                raise ValueError(
                    f"warm lambda must have shape {shape}, got {tuple(warm['lambda'].shape)}"
                )
            start = warm["lambda"].to(device=device, dtype=torch.float32)
        self.lam = nn.Parameter(start.clone())

    def used(self) -> torch.Tensor:
        """The λ the forward uses (clamped for the original variant)."""
        return self.lam.clamp(0.0, 1.0) if self.clamp else self.lam

    def forward(self) -> dict[str, torch.Tensor]:
        lam = self.used()
        out = {}
        for m, (path, owner) in enumerate(zip(self.paths, self.owners, strict=True)):
            out[path] = (lam[m] if self.layerwise else lam)[owner]
        return out

    def state(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.lam.detach().cpu().clone()}


def _check_warm_paths(warm: Mapping[str, torch.Tensor], paths: list[str]) -> None:
    missing = [p for p in paths if p not in warm]
    if missing:
        raise ValueError(
            f"warm start has no φ for {len(missing)} module(s), e.g. {missing[0]!r}; it must come "
            "from a run of the same method on the same adapters"
        )


def _checked_warm(value: torch.Tensor, size: int, path: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
    if value.numel() != size:
        raise ValueError(f"warm-start φ for {path!r} has {value.numel()} entries, need {size}")
    return value
