"""The per-session caches: content-keyed ``remember`` and identity-keyed ``per_object``."""

from __future__ import annotations

import gc

import pytest

from app_support import session_cache


class Thing:
    """Any object a page holds across reruns (weak-referenceable)."""


@pytest.fixture(autouse=True)
def fake_session(monkeypatch):
    monkeypatch.setattr(session_cache.st, "session_state", {})


def test_per_object_computes_once_per_live_object():
    calls = []
    a, b = Thing(), Thing()
    for _ in range(3):
        assert session_cache.per_object("k", a, lambda: calls.append("a") or 1) == 1
    assert session_cache.per_object("k", b, lambda: calls.append("b") or 2) == 2
    assert calls == ["a", "b"]


def test_per_object_recomputes_when_an_id_is_reused():
    first = Thing()
    session_cache.per_object("k", first, lambda: "old")
    reused = id(first)
    del first
    gc.collect()
    # force the collision a reused id would cause: a new object registered under the old id
    fresh = Thing()
    cache = session_cache.st.session_state[session_cache.state.RESULT_CACHE]["k"]
    cache[id(fresh)] = cache.pop(reused)
    assert session_cache.per_object("k", fresh, lambda: "new") == "new"
    assert session_cache.per_object("k", fresh, lambda: "again") == "new"


def test_remember_keeps_the_newest_entries():
    for i in range(5):
        session_cache.remember("r", i, lambda i=i: i * i, size=3)
    calls = []
    assert session_cache.remember("r", 4, lambda: calls.append(4) or -1, size=3) == 16
    assert session_cache.remember("r", 0, lambda: calls.append(0) or 0, size=3) == 0
    assert calls == [0]
