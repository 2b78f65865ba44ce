"""AppTests: the History page (list, compare, ΔW difference, reopen) and the Trade-off page's
"open a sweep folder" panel, on the fixture sweep folder."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.sweep.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TIMEOUT = 90


@pytest.fixture
def folder(tmp_path):
    shutil.copytree(FIXTURES / "ta_vision8", tmp_path, dirs_exist_ok=True)
    return tmp_path


def page(name: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "pages" / name), default_timeout=TIMEOUT)


def chart_titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_history_lists_compares_and_reopens(folder):
    at = page("history.py").run()
    assert not at.exception and any("Type a folder" in i.value for i in at.info)
    at.text_input(key="history.folder").set_value(str(folder)).run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 6
    assert chart_titles(at) == ["Per-task normalised accuracy (test)"]
    at.button(key="history.delta").click().run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric] == ["‖ΔW_A − ΔW_B‖_F", "relative to ‖ΔW_A‖_F"]
    at.button(key="history.open").click().run()  # switch_page needs the app's router
    pending = at.session_state["pending_settings"]
    assert pending["method"] == "task_arithmetic" and "scaling" in pending["params"]


def test_history_names_a_missing_folder(tmp_path):
    at = page("history.py").run()
    at.text_input(key="history.folder").set_value(str(tmp_path / "nope")).run()
    assert not at.exception and "does not exist" in at.error[0].value


def test_tradeoff_page_opens_a_sweep_folder(folder):
    at = page("tradeoff.py").run()
    assert not at.exception, at.exception
    at.text_input(key="tradeoff.sweep_folder").set_value(str(folder)).run()
    assert not at.exception, at.exception
    assert "Trade-off: mnist vs svhn" in chart_titles(at)
    assert any("6 points, 2 on the front" in c.value for c in at.caption)
