"""The Adapters page's bundle picker: a shipped bundle (vision8, nli6) or a bundle folder made
with ``merge-lab bundle init``; switching resets the selection to the new bundle's adapters."""

from __future__ import annotations

import streamlit as st

from app_support import state
from app_support.library import feature_attr
from app_support.workset import load_bundle, select

FOLDER = "a bundle folder…"
PICK_KEY = "adapters.bundle_pick"
FOLDER_KEY = "adapters.bundle_folder"


def shipped() -> list[str]:
    """Shipped bundle names (empty when the bundles package is unavailable)."""
    names = feature_attr("bundles", "shipped_bundles")
    return list(names()) if names is not None else []


def choose(name: str) -> None:
    """Make ``name`` (a shipped name or a folder) the app's bundle; the selection follows it."""
    if name and name != st.session_state.get(state.BUNDLE_NAME):
        st.session_state[state.BUNDLE_NAME] = name
        st.session_state[state.USE_BUNDLE] = True
        select(None)


def bundle_panel() -> None:
    """Picker + on/off toggle for the current bundle, with the reason when it cannot load."""
    current = st.session_state[state.BUNDLE_NAME]
    options = [*shipped(), FOLDER]
    index = options.index(current) if current in options else len(options) - 1
    left, right = st.columns([1, 2])
    pick = left.selectbox(
        "Bundle", options, index=index, key=PICK_KEY,
        help="Shipped sample bundles, or a folder made by `merge-lab bundle init` (your "
             "transformers classifier, adapters and data).",
    )  # fmt: skip
    if pick == FOLDER:
        folder = right.text_input("Bundle folder (holds manifest.json)", key=FOLDER_KEY,
                                  value="" if current in options else current).strip()  # fmt: skip
        choose(folder)
    else:
        choose(pick)
    name = st.session_state[state.BUNDLE_NAME]
    bundle, reason = load_bundle(name) if name else (None, "no bundle selected")
    if bundle is None:
        st.info(
            f"Bundle **{name or '(none)'}** is not available: {reason}. "
            "You can still load your own adapters below; weight-only pages work without it."
        )
        return
    st.toggle(f"Use the **{name}** sample bundle ({len(bundle.task_names)} tasks)",
              key=state.USE_BUNDLE)  # fmt: skip
