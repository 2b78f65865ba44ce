"""A bounded cache the caller owns: direction banks and anchors, keyed by content.

The library keeps no module-level state: the app (per server), a sweep or a CLI run creates one
:class:`AdaptiveCache` and hands it to every ``merge()`` call; without one, banks and anchors are
recomputed (cheap on small bundles, a TARA-B SVD per module on large ones).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

from merging_core.adapters import AdapterSet
from merging_core.adaptive.banks import DirectionBank, adapter_set_key, build_banks
from merging_core.adaptive.objective import adapter_anchor
from merging_core.taskdata import TaskData

T = TypeVar("T")


class AdaptiveCache:
    """LRU caches for banks (``max_banks`` adapter sets × variants × devices) and anchors."""

    def __init__(self, *, max_banks: int = 8, max_anchors: int = 256) -> None:
        self._banks: OrderedDict[Hashable, Any] = OrderedDict()
        self._anchors: OrderedDict[Hashable, Any] = OrderedDict()
        self._limits = {id(self._banks): max_banks, id(self._anchors): max_anchors}

    def banks(
        self, adapter_set: AdapterSet, *, variant: str, device: torch.device
    ) -> dict[str, DirectionBank]:
        key = (adapter_set_key(adapter_set), variant, str(device))
        return self._get(self._banks, key, lambda: build_banks(adapter_set, variant=variant,
                                                               device=device))  # fmt: skip

    def anchor(
        self, adapter_set: AdapterSet, data: TaskData, index: int, *, scale: float | None
    ) -> float:
        adapter = adapter_set.adapters[index]
        key = (
            data.fingerprint(),
            adapter.content_hash(),
            adapter.name,
            None if scale is None else float(scale),
        )
        return self._get(self._anchors, key,
                         lambda: adapter_anchor(adapter_set, data, index, scale=scale))  # fmt: skip

    def _get(self, store: OrderedDict, key: Hashable, make: Callable[[], T]) -> T:
        if key in store:
            store.move_to_end(key)
            return store[key]
        value = store[key] = make()
        while len(store) > self._limits[id(store)]:
            store.popitem(last=False)
        return value


def banks_for(
    cache: AdaptiveCache | None, adapter_set: AdapterSet, *, variant: str, device: torch.device
) -> dict[str, DirectionBank]:
    """Banks from ``cache`` when given, else built now."""
    if cache is None:
        return build_banks(adapter_set, variant=variant, device=device)
    return cache.banks(adapter_set, variant=variant, device=device)


def anchors_for(
    cache: AdaptiveCache | None, adapter_set: AdapterSet, data: TaskData, *, scale: float | None
) -> tuple[float, ...]:
    """Anchors ``z_i`` of every adapter in set order (tara.md §2.4, as coded)."""
    if cache is None:
        return tuple(
            adapter_anchor(adapter_set, data, i, scale=scale) for i in range(len(adapter_set))
        )
    return tuple(cache.anchor(adapter_set, data, i, scale=scale) for i in range(len(adapter_set)))
