"""Sensitivity page helpers: the cached Jacobian J and the slices its charts show.

J comes from :func:`merging_core.sensitivity.directional_jacobian` (one backward pass per task on
the bundle's unlabeled data), computed once per adapter set and options in this session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app_support.library import feature
from app_support.session_cache import progress_bar, remember
from merging_core.adapters import AdapterSet, layer_key

ALL_LAYERS = "all layers"
TOP_DIRECTIONS = 30
VARIANTS = {"b": "B: shared SVD directions", "a": "A: per-rank LoRA directions"}
KINDS = ("stch", "stch_abs", "linear")


def jacobian(
    adapter_set: AdapterSet, set_key: str, context: Any, *, variant: str, unit_norm: bool
) -> Any:
    """The Sensitivity (J, entropies, anchors, directions) at Task Arithmetic's point, cached."""
    sensitivity = feature("sensitivity")
    report, done = progress_bar("Computing J, one task at a time:")
    try:
        return remember(
            "sensitivity",
            (set_key, variant, unit_norm),
            lambda: sensitivity.directional_jacobian(
                adapter_set, context, variant=variant, unit_norm=unit_norm, progress=report
            ),
            size=8,
        )
    finally:
        done()


def direction_label(direction: tuple[str, int, int], task_names: Sequence[str]) -> str:
    """``"blocks.3.attn.q #5 (task)"``: module, index in its bank, owning adapter."""
    module, index, owner = direction
    return f"{module} #{index} ({task_names[owner]})"


def layers_of(sens: Any) -> list[str]:
    """Layers that have directions, in order of first appearance."""
    return list(dict.fromkeys(layer_key(d[0]) for d in sens.directions))


def j_slice(sens: Any, layer: str) -> tuple[np.ndarray, list[str]]:
    """``(N, K')`` columns of J in ``layer`` (all when ``ALL_LAYERS``) and their labels."""
    keep = [
        k for k, d in enumerate(sens.directions) if layer == ALL_LAYERS or layer_key(d[0]) == layer
    ]
    J = sens.J.detach().cpu().numpy()[:, keep]
    labels = [direction_label(sens.directions[k], sens.task_names) for k in keep]
    return J, labels


def top_profiles(
    sens: Any, h1: Any, h2: Any, *, top: int = TOP_DIRECTIONS
) -> dict[str, dict[str, float]]:
    """h(ρ₁), h(ρ₂) normalised to unit length on the ``top`` directions where either is largest."""
    a = h1.detach().cpu().double().numpy()
    b = h2.detach().cpu().double().numpy()
    a = a / (np.linalg.norm(a) or 1.0)
    b = b / (np.linalg.norm(b) or 1.0)
    order = np.argsort(-(np.abs(a) + np.abs(b)))[:top]
    labels = [direction_label(sens.directions[k], sens.task_names) for k in order]
    return {
        "h(ρ₁) / ‖h(ρ₁)‖": dict(zip(labels, a[order].tolist(), strict=True)),
        "h(ρ₂) / ‖h(ρ₂)‖": dict(zip(labels, b[order].tolist(), strict=True)),
    }
