"""Every page launches without an exception, with and without seeded adapters."""

from __future__ import annotations

import pytest
from conftest import ROOT, TIMEOUT

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
