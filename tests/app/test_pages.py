"""Every page launches without an exception, with and without seeded adapters."""

from __future__ import annotations

import pytest
from apptest_support import ROOT, TIMEOUT

PAGES = ("adapters.py", "geometry.py", "sensitivity.py", "merge.py", "tradeoff.py", "export.py")


@pytest.mark.parametrize("page", PAGES)
def test_page_launches_with_adapters(app_page, adapters, page):
    at = app_page(page, adapters).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("page", PAGES)
def test_page_launches_empty(app_page, page):
    at = app_page(page, []).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_router_opens_on_adapters_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Adapters"


TITLES = {"adapters.py": "Adapters", "geometry.py": "Geometry", "sensitivity.py": "Sensitivity",
          "merge.py": "Merge", "tradeoff.py": "Trade-off", "export.py": "Export",
          "history.py": "History"}  # fmt: skip


def test_router_reaches_every_page_with_shared_state(adapters):
    from streamlit.testing.v1 import AppTest

    from app_support import state

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    at.session_state[state.BUNDLE_NAME] = ""
    at.session_state[state.USER_ADAPTERS] = list(adapters)
    at.run()
    for page, title in TITLES.items():
        at.switch_page(f"pages/{page}").run()
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == title
    # the merge made on the Merge page is what the Export page offers
    assert at.session_state[state.MERGE_RESULT].method == "task_arithmetic"
    assert not any("Nothing to export" in i.value for i in at.info)
