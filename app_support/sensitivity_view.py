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
    J = _numpy(sens.J)[:, keep]
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


ANISOTROPY_PERCENTILES = (5.0, 95.0)
ANISOTROPY_HELP = (
    "Per task i: the 95th percentile of |J_ik| over the directions k divided by their 5th "
    "percentile. A robust version of max/min (which a single near-zero direction sends to "
    "1e8–1e10): how many times more the task reacts to its strong directions than to its weak "
    "ones. 1 = every direction matters alike."
)
TOP_J = 40  # directions in the "most sensitive directions" heatmap


def robust_anisotropy(
    J: Any, percentiles: tuple[float, float] = ANISOTROPY_PERCENTILES
) -> list[float]:
    """Per task, ``P_high(|J_i·|) / P_low(|J_i·|)`` over directions (see ``ANISOTROPY_HELP``).

    Returns ``inf`` for a task whose low percentile is zero.
    """
    a = np.abs(_numpy(J))
    low, high = np.percentile(a, percentiles, axis=1)  # (N,) each
    return [float(h / lo) if lo > 0 else float("inf") for lo, h in zip(low, high, strict=True)]


def layer_magnitude(sens: Any) -> tuple[np.ndarray, list[str]]:
    """``(tasks, layers)``: root-mean-square of J over each layer's directions, and the layers."""
    J = _numpy(sens.J)
    layers = layers_of(sens)
    owner = np.array([layers.index(layer_key(d[0])) for d in sens.directions])
    out = np.zeros((J.shape[0], len(layers)))
    for j in range(len(layers)):
        out[:, j] = np.sqrt(np.mean(J[:, owner == j] ** 2, axis=1))
    return out, layers


def strongest(sens: Any, layer: str = ALL_LAYERS, top: int = TOP_J) -> tuple[np.ndarray, list[str]]:
    """The ``top`` columns of J (in ``layer``) with the largest max_i |J_ik|, strongest first."""
    J, labels = j_slice(sens, layer)
    order = np.argsort(-np.abs(J).max(axis=0))[:top]
    return J[:, order], [labels[k] for k in order]


def _numpy(J: Any) -> np.ndarray:
    return J.detach().cpu().double().numpy() if hasattr(J, "detach") else np.asarray(J, float)


def tilted(count: int, favourite: int, share: float = 0.6) -> list[float]:
    """A preference putting ``share`` on task ``favourite`` and the rest evenly on the others."""
    if count == 1:
        return [1.0]
    rest = (1.0 - share) / (count - 1)
    return [share if i == favourite else rest for i in range(count)]
