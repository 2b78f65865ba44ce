"""Optional pieces of ``merging_core``: import them if present, else say plainly what is missing.

The library grows feature by feature; a page whose feature has not landed shows an ``st.info``
("this needs …") instead of failing. Only a *missing module* counts as "not there yet": any other
import error is a real bug and is raised.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import streamlit as st

FEATURES = {
    "io": ("merging_core.io", "the adapter loader (merging_core.io)"),
    "bundles": ("merging_core.bundles", "the sample bundles (merging_core.bundles)"),
    "geometry": ("merging_core.geometry", "the geometry analyses (merging_core.geometry)"),
    "sensitivity": (
        "merging_core.sensitivity",
        "the sensitivity analysis (merging_core.sensitivity)",
    ),
    "tradeoff": ("merging_core.tradeoff", "trade-off sweeps (merging_core.tradeoff)"),
    "tara": ("merging_core.methods.tara", "TARA (merging_core.methods.tara)"),
    "export": ("merging_core.export", "the PEFT exporter (merging_core.export)"),
    "preference": ("merging_core.preference", "preference vectors (merging_core.preference)"),
}


def feature(name: str) -> ModuleType | None:
    """The module behind feature ``name``, or None when it has not been written yet.

    Raises:
        KeyError: unknown feature name.
    """
    module_name, _ = FEATURES[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            return None
        raise


def feature_attr(name: str, attr: str) -> Any | None:
    """``feature(name).attr`` or None when the module or the attribute is not there yet."""
    module = feature(name)
    return getattr(module, attr, None) if module is not None else None


def needs(name: str, detail: str = "") -> None:
    """Show the "this needs X" placeholder for a feature that has not landed."""
    _, label = FEATURES[name]
    st.info(f"This needs {label}, which is not available in this build yet. {detail}".strip())


def device_label() -> str:
    """Where merges run: the CUDA device's name when there is one, else "CPU"."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA · {torch.cuda.get_device_name(0)}"
    return "CPU"
