"""A small per-session LRU in ``st.session_state`` for results computed under a progress bar.

``st.cache_data``/``st.cache_resource`` replay the elements a cached function draws, which breaks
for a progress bar created outside the function; these results (merges, analyses, evaluations)
are per-user anyway, so they live in the session, keyed by content hashes.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import streamlit as st

from app_support import state

T = TypeVar("T")
DEFAULT_SIZE = 32


def remember(kind: str, key: Hashable, compute: Callable[[], T], *, size: int = DEFAULT_SIZE) -> T:
    """``compute()`` once per (``kind``, ``key``) in this session; keeps the ``size`` newest."""
    caches = st.session_state.setdefault(state.RESULT_CACHE, {})
    cache: OrderedDict = caches.setdefault(kind, OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = compute()
    cache[key] = value
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def per_object(kind: str, obj: Any, compute: Callable[[], T], *, size: int = DEFAULT_SIZE) -> T:
    """``compute()`` once per live object ``obj`` (by identity, not content) in this session.

    For values derived from an object the page holds across reruns (the cached working set, a
    cached merge result) whose content key would cost as much as the value itself. The entry
    keeps only a weak reference, so an id reused by a new object recomputes.
    """
    ref, value = remember(kind, id(obj), lambda: (weakref.ref(obj), compute()), size=size)
    if ref() is obj:
        return value
    value = compute()
    st.session_state[state.RESULT_CACHE][kind][id(obj)] = (weakref.ref(obj), value)
    return value


def progress_bar(
    label: str, *, show_message: bool = True
) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """An ``st.progress`` bar and its ``callback(fraction, message)``; call the 2nd to remove it.

    The bar says ``"<label> 40 % done"``, followed by the library's message when
    ``show_message`` (off where that message is an internal module path).
    """
    bar = st.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        share = min(max(float(fraction), 0.0), 1.0)
        tail = f" ({message})" if show_message and message else ""
        bar.progress(share, text=f"{label} {100 * share:.0f} % done{tail}")

    return report, bar.empty
