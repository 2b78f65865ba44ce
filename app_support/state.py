"""Every ``st.session_state`` key the app uses, and their defaults, in one place.

Pages import the constants (never spell a key as a string literal) and call :func:`init_state`
through ``app.py``, so a page opened directly (tests, deep links) still finds every key.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

BUNDLE_NAME = "bundle_name"  # str: the sample bundle the app opens on ("" = none)
USE_BUNDLE = "use_bundle"  # bool: include the bundle's adapters in the working set
USER_ADAPTERS = "user_adapters"  # list[Adapter]: adapters the user loaded (path or upload)
LOAD_MESSAGES = "load_messages"  # list[str]: refusals of the last load attempt, shown as errors
SELECTED = "selected_adapters"  # list[str] | None: names in the working set (None = all loaded)
MERGE_RESULT = "merge_result"  # MergeResult | None: the latest merge, used by Export
MERGE_RECIPE = "merge_recipe"  # dict | None: method, params, seed, adapters of MERGE_RESULT
WARM_START = "warm_start"  # dict: method -> last learned coefficients (warm start of next run)
PENDING_SETTINGS = "pending_settings"  # dict | None: settings to load into the Merge widgets
ACTIVE_RUN = "active_run"  # Job | None: this session's data-driven run (queued, running or done)
PREVIOUS_SELECTION = "previous_selection"  # dict | None: {"selection", "count"} before a narrowing
OPENED_RESULT = "opened_result"  # (method, params key, seed, adapter names) -> MergeResult opened
#   from a trade-off point: the Merge page shows exactly that merge instead of re-running it
TRADEOFF_POINTS = "tradeoff_points"  # dict: (task_a, task_b, method) -> list of sweep points
TRADEOFF_JOB = "tradeoff_job"  # Job | None: this session's queued/running/finished sweep
TRADEOFF_CLICK = "tradeoff_click"  # str: the last chart selection already acted upon
EXPORT_DIR = "export_dir"  # str: last export folder
RESULT_CACHE = "result_cache"  # dict of per-session LRUs (app_support.session_cache)

METHOD = "merge.method"  # widget key, bound to the URL (query parameter "merge.method")
SEED = "merge.seed"  # widget key, bound to the URL
GEOMETRY_LAYER = "geometry.layer"
GEOMETRY_MODULE = "geometry.module"
TRADEOFF_TASK_A = "tradeoff.task_a"
TRADEOFF_TASK_B = "tradeoff.task_b"

DEFAULT_BUNDLE = "vision8"

_DEFAULTS: dict[str, Any] = {
    BUNDLE_NAME: DEFAULT_BUNDLE,
    USE_BUNDLE: True,
    LOAD_MESSAGES: [],
    MERGE_RESULT: None,
    MERGE_RECIPE: None,
    PENDING_SETTINGS: None,
    ACTIVE_RUN: None,
    TRADEOFF_JOB: None,
    SELECTED: None,
    PREVIOUS_SELECTION: None,
    EXPORT_DIR: "",
}
_FACTORIES = {USER_ADAPTERS: list, WARM_START: dict, TRADEOFF_POINTS: dict, OPENED_RESULT: dict}


def init_state() -> None:
    """Give every key its default unless it is already set (seeded by a test or a page)."""
    _leave_pages_folder_mode()
    for key, value in _DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value
    for key, factory in _FACTORIES.items():
        if key not in st.session_state:
            st.session_state[key] = factory()


def _leave_pages_folder_mode() -> None:
    """Run every page through ``app.py``'s navigation, even when a deep link comes first.

    On a freshly started server Streamlit treats the ``pages/`` folder as old-style pages until
    ``app.py`` has called ``st.navigation`` once: a shared link (``/merge?…``) opened first runs
    ``pages/merge.py`` alone (no page config, a sidebar of file names) and keeps the whole server
    in that mode. Switching the mode off and rerunning lets ``app.py`` route the same URL.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def param_key(method: str, param: str, adapter: str | None = None) -> str:
    """Widget key of one method parameter: ``merge.<method>.<param>[.<adapter name>]``.

    Per-adapter values (a ``weights`` parameter) are keyed by the adapter's *name*, never by its
    position, so a value set for one adapter stays with it when the selection changes.
    """
    base = f"merge.{method}.{param}"
    return base if adapter is None else f"{base}.{adapter}"
