"""The working set of adapters: the sample bundle's plus the user's, cached per session.

Heavy objects (the bundle, loaded adapters, aligned sets) live in
``st.cache_resource(scope="session")`` keyed by content hashes, so a rerun never reloads them and
two sessions never share mutable state. Loading errors come back as messages for ``st.error``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from app_support import state
from app_support.library import feature_attr
from merging_core.adapters import Adapter, AdapterSet

LOAD_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, NotADirectoryError, OSError)


@st.cache_resource(scope="session", show_spinner="Loading the sample bundle…")
def load_bundle(name: str) -> tuple[Any | None, str]:
    """The bundle ``name`` and "" on success, else None and a plain-words reason."""
    loader = feature_attr("bundles", "load_bundle")
    if loader is None:
        return None, "the sample bundles are not built yet (merging_core.bundles.load_bundle)"
    try:
        return loader(name), ""
    except KeyError as err:  # not shipped in this checkout
        detail = err.args[0] if err.args else name
        return None, f"it is not built in this checkout ({detail})"
    except LOAD_ERRORS as err:
        return None, f"it could not be opened: {err}"


def bundle_adapters() -> list[Adapter]:
    """The current bundle's adapters when it is enabled and loads, else []."""
    name = st.session_state.get(state.BUNDLE_NAME, "")
    if not name or not st.session_state.get(state.USE_BUNDLE, True):
        return []
    bundle, _ = load_bundle(name)
    return list(bundle.adapter_set().adapters) if bundle is not None else []


def all_adapters() -> list[Adapter]:
    """Bundle adapters first, then the user's (a user adapter may not reuse a bundle name)."""
    return bundle_adapters() + list(st.session_state.get(state.USER_ADAPTERS, []))


def set_key(adapters: Sequence[Adapter]) -> str:
    """Content key of an ordered adapter list (names and weight hashes)."""
    return "|".join(f"{a.name}:{a.content_hash()}" for a in adapters)


@st.cache_resource(scope="session", max_entries=16, show_spinner=False)
def _aligned(key: str, _adapters: tuple[Adapter, ...]) -> AdapterSet:
    return AdapterSet.from_adapters(list(_adapters))


def selected_names() -> list[str]:
    """Names in the working set, in task order: the selection, or every loaded adapter when the
    user has not chosen (an empty selection is empty: what the Adapters page shows is the set)."""
    names = [a.name for a in all_adapters()]
    chosen = st.session_state.get(state.SELECTED)
    return names if chosen is None else [n for n in chosen if n in names]


def select(names: Sequence[str] | None) -> None:
    """Make ``names`` the working set (None = every loaded adapter)."""
    st.session_state[state.SELECTED] = None if names is None else list(names)


def working_set() -> tuple[AdapterSet | None, str]:
    """The aligned set of the selected adapters, or an error message (None, "" when empty)."""
    by_name = {a.name: a for a in all_adapters()}
    picked = tuple(by_name[n] for n in selected_names())
    if not picked:
        return None, ""
    try:
        return _aligned(set_key(picked), picked), ""
    except ValueError as err:
        return None, str(err)


def task_context(adapter_set: AdapterSet) -> tuple[Any | None, str]:
    """The bundle's data context when every adapter in the set is one of its tasks."""
    name = st.session_state.get(state.BUNDLE_NAME, "")
    bundle, reason = load_bundle(name) if name else (None, "no sample bundle is selected")
    if bundle is None:
        return None, reason
    missing = [n for n in adapter_set.names if n not in bundle.task_names]
    if missing:
        return None, f"{missing} are not tasks of the {name} bundle, so there is no data for them"
    return bundle.task_data(), ""


def require_working_set(
    verb: str, *, empty: str = "Load adapters on the Adapters page first.", minimum: int = 1
) -> AdapterSet:
    """The page's working set; else say why (error) and what to do (info), and stop the page."""
    adapter_set, problem = working_set()
    if problem:
        st.error(f"The selected adapters cannot be {verb}: {problem}")
    if adapter_set is None or len(adapter_set) < minimum:
        if all_adapters() and not problem and len(selected_names()) < minimum:
            empty = (f"Select at least {minimum} adapter(s) on the Adapters page "
                     f"({len(selected_names())} selected now).")  # fmt: skip
        st.info(empty)
        st.stop()
    return adapter_set


def narrow_selection(names: Sequence[str]) -> None:
    """Narrow the working set to ``names`` and remember the selection to restore it later."""
    if list(selected_names()) != list(names) and not st.session_state[state.PREVIOUS_SELECTION]:
        st.session_state[state.PREVIOUS_SELECTION] = {
            "selection": st.session_state.get(state.SELECTED),
            "count": len(selected_names()),
        }
    select(names)


def restore_selection_button() -> None:
    """After a trade-off point narrowed the working set: say so, and offer to restore it."""
    previous = st.session_state.get(state.PREVIOUS_SELECTION)
    if not previous:
        return
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.info(f"The working set is narrowed to {', '.join(selected_names())} (the merge you "
              f"opened); it had {previous['count']} adapters before.")  # fmt: skip
    if right.button(f"Restore all {previous['count']}", key="workset.restore"):
        select(previous["selection"])
        st.session_state[state.PREVIOUS_SELECTION] = None
        st.rerun()


def require_task_context(adapter_set: AdapterSet, need: str) -> Any:
    """The bundle's data context for ``adapter_set``; otherwise say what is missing and stop."""
    context, no_data = task_context(adapter_set)
    if context is None:
        st.info(f"{need}, which is missing: {no_data}.")
        st.stop()
    return context


def add_user_adapters(new: Sequence[Adapter]) -> list[str]:
    """Append adapters to the session and select them, refusing name clashes; returns refusals."""
    existing = {a.name for a in all_adapters()}
    refused, kept = [], list(st.session_state[state.USER_ADAPTERS])
    for adapter in new:
        if adapter.name in existing:
            refused.append(
                f"an adapter named {adapter.name!r} is already loaded; rename its folder"
            )
            continue
        existing.add(adapter.name)
        kept.append(adapter)
    added = [a.name for a in kept[len(st.session_state[state.USER_ADAPTERS]) :]]
    if st.session_state.get(state.SELECTED) is not None:  # an explicit selection: add to it
        select([*st.session_state[state.SELECTED], *added])
    st.session_state[state.USER_ADAPTERS] = kept
    return refused
