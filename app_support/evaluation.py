"""Per-task evaluation of merges on the sample bundle, cached per session.

Accuracy needs labelled test data, so it exists only when every adapter of the set is a task of
the open bundle; otherwise the functions say why there is nothing to show.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_support import state
from app_support.workset import load_bundle
from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult


def current_bundle() -> Any | None:
    """The open bundle, or None."""
    name = st.session_state.get(state.BUNDLE_NAME, "")
    return load_bundle(name)[0] if name else None


def accuracy_series(
    adapter_set: AdapterSet, result: MergeResult, context: Any
) -> tuple[dict[str, dict[str, float]], str]:
    """{series -> {task -> normalised accuracy}} for the merge and its baselines, or a reason."""
    bundle = current_bundle()
    if context is None or bundle is None or not hasattr(bundle, "evaluate"):
        return {}, "needs the vision8 bundle's labelled test data for these adapters."
    return {}, "evaluation is not wired in this build yet."
