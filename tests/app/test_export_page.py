"""Export page: writes a loadable PEFT adapter, refuses to overwrite, offers a zip."""

from __future__ import annotations

import io
import zipfile

import pytest

from app_support import state
from merging_core.adapters import AdapterSet
from merging_core.io import load_adapter
from merging_core.merge import merge


@pytest.fixture
def export_page(app_page, adapters):
    result = merge(AdapterSet.from_adapters(adapters), "task_arithmetic", scaling=0.5)
    at = app_page("export.py", adapters, **{state.MERGE_RESULT: result}).run()
    assert not at.exception, at.exception
    return at, result


def submit(at, folder, *, overwrite=False):
    at.text_input(key="export.folder").set_value(str(folder))
    at.checkbox(key="export.overwrite").set_value(overwrite)
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, at.exception
    return at


def test_export_writes_adapter_recipe_card_and_zip(export_page, tmp_path):
    at, result = export_page
    target = tmp_path / "merged"
    submit(at, target)
    assert [s.value for s in at.success][0].startswith(f"Wrote {target}")
    assert sorted(p.name for p in target.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "recipe.json",
    ]
    loaded = load_adapter(target)
    for module in result.modules:
        err = (loaded.delta(module) - result.delta(module)).abs().max()
        assert float(err) < 1e-4
    zipped = at.get("download_button")
    assert zipped, "no download button after the export"


def test_existing_folder_is_refused_then_replaced_on_request(export_page, tmp_path):
    at, _ = export_page
    target = tmp_path / "merged"
    submit(at, target)
    before = (target / "adapter_model.safetensors").read_bytes()
    submit(at, target)
    refusal = next(e.value for e in at.error if "Export refused" in e.value)
    assert "already exists" in refusal and "Replace the folder if it exists" in refusal
    submit(at, target, overwrite=True)
    assert not at.error
    assert (target / "adapter_model.safetensors").read_bytes() == before


def test_zip_holds_the_exported_files(tmp_path):
    from app_support.exporting import zip_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("hi")
    names = zipfile.ZipFile(io.BytesIO(zip_folder(tmp_path / "a"))).namelist()
    assert names == ["a/x.txt"]


def test_nothing_to_export_says_so(app_page, adapters):
    at = app_page("export.py", adapters).run()
    assert any("Nothing to export yet" in i.value for i in at.info)


def test_exported_recipe_carries_the_weights_the_user_set(app_page, adapters, tmp_path):
    import json

    from app_support.state import param_key

    merge_at = app_page("merge.py", adapters).run()
    merge_at.slider(key=param_key("task_arithmetic", "weights", "task1")).set_value(0.99).run()
    merge_at.session_state[state.SELECTED] = ["task2", "task1"]  # the order changes too
    merge_at.run()
    result = merge_at.session_state[state.MERGE_RESULT]
    at = app_page("export.py", adapters, **{state.MERGE_RESULT: result}).run()
    caption = next(c.value for c in at.caption if c.value.startswith("Parameters"))
    assert "weights = task2 1, task1 0.99" in caption and "None" not in caption
    submit(at, tmp_path / "out")
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    names = [item["name"] for item in recipe["inputs"]]
    assert dict(zip(names, recipe["params"]["weights"], strict=True)) == {
        "task2": 1.0,
        "task1": 0.99,
    }
