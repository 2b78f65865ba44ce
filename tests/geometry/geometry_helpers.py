"""Helpers for the geometry tests: random factors, refactorings, dense references."""

from __future__ import annotations

import math

import torch

from merging_core.adapters import Adapter, AdapterSet, LoraModule


def random_factors(
    seed: int, m: int, n: int, ranks: list[int], *, dtype: torch.dtype = torch.float64
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-task ``B_t (m, r_t)`` and ``A_t (r_t, n)`` with a shared B component (crowding)."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(m, max(ranks), generator=gen, dtype=dtype)
    Bs, As = [], []
    for r in ranks:
        mix = torch.randn(max(ranks), r, generator=gen, dtype=dtype)
        Bs.append(shared @ mix + torch.randn(m, r, generator=gen, dtype=dtype))
        As.append(torch.randn(r, n, generator=gen, dtype=dtype))
    return Bs, As


def refactor(
    Bs: list[torch.Tensor], As: list[torch.Tensor], seed: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(B M, M⁻¹ A)`` per task with a random, well-conditioned, non-orthogonal ``M``."""
    gen = torch.Generator().manual_seed(seed)
    out_b, out_a = [], []
    for B, A in zip(Bs, As, strict=True):
        r = B.shape[1]
        M = torch.eye(r, dtype=B.dtype) * 2.0 + 0.5 * torch.randn(
            r, r, generator=gen, dtype=B.dtype
        )
        M = M * torch.linspace(0.3, 3.0, r, dtype=B.dtype)  # unequal column scales
        out_b.append(B @ M)
        out_a.append(torch.linalg.solve(M, A))
    return out_b, out_a


def dense_sigma(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(M.to(torch.float64))


def dense_erank(M: torch.Tensor) -> float:
    """Independent reference: Roy & Vetterli erank from a dense SVD (σ ≤ 1e-9 σ_max dropped)."""
    s = dense_sigma(M)
    if s.numel() == 0 or float(s.max()) == 0.0:
        return 0.0
    s = s[s > 1e-9 * s.max()]
    p = s / s.sum()
    return math.exp(float(-(p * p.log()).sum()))


def adapter_set_from(
    Bs_per_module: dict[str, list[torch.Tensor]], As_per_module: dict[str, list[torch.Tensor]]
) -> AdapterSet:
    """An AdapterSet whose task t holds module factors ``Bs_per_module[name][t]``."""
    T = len(next(iter(Bs_per_module.values())))
    adapters = []
    for t in range(T):
        mods = {
            name: LoraModule(B=Bs_per_module[name][t], A=As_per_module[name][t])
            for name in Bs_per_module
        }
        adapters.append(Adapter(name=f"task{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)
