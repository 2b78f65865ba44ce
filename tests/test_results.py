"""One rank rule: the Merge summary's rank is the rank an exact export writes."""

from __future__ import annotations

import torch

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.export import merge_diagnostics
from merging_core.merge import merge


def test_summary_rank_equals_export_exact_rank():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(12, 3, generator=g)
    A = torch.randn(3, 10, generator=g)
    same = Adapter("a", {"m": LoraModule(B=B, A=A)})
    neg = Adapter("b", {"m": LoraModule(B=-B, A=A)})  # cancels a exactly
    B2, A2 = torch.randn(12, 2, generator=g), torch.randn(2, 10, generator=g)
    other = Adapter("c", {"m": LoraModule(B=B2, A=A2)})
    twin = Adapter("d", {"m": LoraModule(B=2 * B, A=A)})
    for adapters, expected in (([same, neg], 0), ([same, other], 5), ([same, twin], 3)):
        result = merge(AdapterSet.from_adapters(adapters), "task_arithmetic", scaling=1.0)
        summary = {row["module"]: row["rank"] for row in result.module_summary()}
        exported = {row["module"]: row["exact_rank"] for row in merge_diagnostics(result)}
        assert summary == exported == {"m": expected}
