"""Every page opens with the nli6 bundle (a real pretrained transformer) selected, and the
Adapters page's picker switches bundles (the selection follows)."""

from __future__ import annotations

import pytest
from apptest_support import ROOT, TIMEOUT

from app_support import state

PAGES = ("adapters.py", "geometry.py", "sensitivity.py", "merge.py", "tradeoff.py", "export.py")


def open_page(page: str, bundle: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT * 6)
    at.session_state[state.BUNDLE_NAME] = bundle
    return at.run()


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_nli6(page):
    at = open_page(page, "nli6")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_picker_switches_bundle_and_selection():
    at = open_page("adapters.py", "vision8")
    assert not at.exception
    at.selectbox(key="adapters.bundle_pick").set_value("nli6").run(timeout=TIMEOUT * 4)
    assert not at.exception, at.exception
    assert at.session_state[state.BUNDLE_NAME] == "nli6"
    assert at.session_state[state.SELECTED] is None  # every adapter of the new bundle
    assert any("nli6" in t.label for t in at.toggle)
