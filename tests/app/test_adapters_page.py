"""Adapters page: load from a folder or by upload, refusals as errors, table, identity check."""

from __future__ import annotations

import pytest
from apptest_support import MODULES, make_adapter

from app_support import state
from merging_core.io import save_adapter


@pytest.fixture
def adapter_root(tmp_path):
    for i in range(2):
        save_adapter(tmp_path / f"lora{i}", make_adapter(f"x{i}", i).modules, base_model="tiny")
    return tmp_path


@pytest.fixture
def page(app_page):
    at = app_page("adapters.py", []).run()
    assert not at.exception, at.exception
    return at


def load_path(at, path):
    at.text_input(key="adapters.path").set_value(str(path))
    at.button[0].click().run()  # the folder form's submit button
    assert not at.exception, at.exception
    return at


def test_opens_with_a_clear_state_when_the_bundle_is_missing(app_page):
    at = app_page("adapters.py", [], **{state.BUNDLE_NAME: "no-such-bundle"}).run()
    assert not at.exception
    assert any("not available" in i.value for i in at.info)
    assert any("No adapters loaded yet" in i.value for i in at.info)


def test_opens_on_the_bundle(bundle_page):
    at = bundle_page("adapters.py").run()
    assert not at.exception, at.exception
    assert at.toggle(key=state.USE_BUNDLE).value is True
    table = at.dataframe[0].value
    assert list(table["adapter"]) == ["task0", "task1", "task2"]
    assert set(table["source"]) == {"sample bundle"}


def test_load_a_folder_of_adapters_shows_the_table(page, adapter_root):
    load_path(page, adapter_root)
    assert not page.error
    table = page.dataframe[0].value
    assert list(table["adapter"]) == ["lora0", "lora1"]
    assert list(table["rank"]) == ["4", "4"]
    assert list(table["modules"]) == [len(MODULES)] * 2
    assert list(table["base model"]) == ["tiny", "tiny"]
    assert page.metric[0].value == "2"  # adapters in the working set


def test_loading_twice_is_refused_by_name(page, adapter_root):
    load_path(page, adapter_root / "lora0")
    load_path(page, adapter_root / "lora0")
    assert any("already loaded" in e.value for e in page.error)
    assert len(page.session_state[state.USER_ADAPTERS]) == 1


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p, "no adapter_config.json"),
    ],
)
def test_refused_paths_are_errors(page, tmp_path, setup, message):
    load_path(page, setup(tmp_path))
    assert any(message in e.value for e in page.error), [e.value for e in page.error]


def test_pickle_weights_are_refused_unopened(page, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4, "lora_alpha": 4}')
    (bad / "adapter_model.bin").write_bytes(b"not really a pickle")
    load_path(page, bad)
    assert page.error and any("pickle" in e.value.lower() for e in page.error)


def test_upload_a_directory(page, adapter_root):
    folder = adapter_root / "lora1"
    files = [
        (f"lora1/{p.name}", p.read_bytes(), "application/octet-stream")
        for p in sorted(folder.iterdir())
    ]
    page.radio(key="adapters.upload_kind").set_value("A folder").run()
    page.file_uploader(key="adapters.upload.A folder").set_value(files).run()
    page.button(key="adapters.upload_load").click().run()
    assert not page.exception, page.exception
    assert not page.error, [e.value for e in page.error]
    assert list(page.dataframe[0].value["adapter"]) == ["lora1"]


def test_upload_single_files(page, adapter_root):
    files = [(p.name, p.read_bytes(), "application/octet-stream")
             for p in sorted((adapter_root / "lora0").iterdir())]  # fmt: skip
    page.file_uploader(key="adapters.upload.Files").set_value(files).run()
    page.text_input(key="adapters.upload_name").set_value("mine").run()
    page.button(key="adapters.upload_load").click().run()
    assert not page.exception, page.exception
    assert list(page.dataframe[0].value["adapter"]) == ["mine"]


@pytest.mark.parametrize("file_name", ["adapter_model.bin", "weights.pt"])
def test_a_lone_pickle_upload_gets_the_apps_refusal(page, file_name):
    page.file_uploader(key="adapters.upload.Files").set_value(
        [(file_name, b"not really a pickle", "application/octet-stream")]
    ).run()
    page.button(key="adapters.upload_load").click().run()
    assert not page.exception, page.exception
    assert any("pickle" in e.value.lower() for e in page.error), [e.value for e in page.error]


def test_a_loaded_adapter_is_selected(bundle_page, adapter_root):
    at = bundle_page("adapters.py").run()
    # an explicit selection of one bundle task, then a load: the new adapter joins the set
    at.multiselect(key="adapters.selected").set_value(["task0"]).run()
    assert at.metric[0].value == "1"
    at.session_state[state.USE_BUNDLE] = True
    load_path(at, adapter_root / "lora0")
    assert at.multiselect(key="adapters.selected").value == ["task0", "lora0"]
    assert at.session_state[state.SELECTED] == ["task0", "lora0"]


def test_clearing_the_selection_empties_the_working_set(page, adapter_root):
    load_path(page, adapter_root)
    assert page.multiselect(key="adapters.selected").value == ["lora0", "lora1"]
    page.multiselect(key="adapters.selected").set_value([]).run()
    assert not page.exception
    assert page.multiselect(key="adapters.selected").value == []
    assert not page.metric  # no working-set count left claiming 2
    assert any("No adapter is selected" in w.value for w in page.warning)


def test_identity_check_passes(app_page, adapters):
    at = app_page("adapters.py", adapters).run()
    at.selectbox(key="adapters.identity").set_value("task1")
    at.button(key="adapters.identity_run").click().run()
    assert not at.exception
    shown = next(m for m in at.metric if m.label.startswith("max |ΔW error|"))
    assert float(shown.value) < 1e-5
    assert any("passes" in s.value for s in at.success)


def test_unmergeable_selection_is_an_error(app_page):
    lonely = make_adapter("other", 5)
    lonely = type(lonely)(
        name="other", modules={"elsewhere.0.w": lonely.modules[MODULES[0]]}, config=lonely.config
    )
    at = app_page("adapters.py", [make_adapter("a", 1), lonely]).run()
    assert not at.exception
    assert any("cannot be merged together" in e.value for e in at.error)
