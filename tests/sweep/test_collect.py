"""Collect works from the point files alone: a folder from another machine gives the same front."""

import json
import shutil

import pytest

from merging_core.cli import main
from merging_core.sweep.collect import collect, collect_folder, table_csv
from tests.sweep.conftest import FIXTURES

# The fixture: a 6-point Task Arithmetic λ sweep over all eight vision8 tasks, written on another
# machine. Its (mnist, svhn) normalised accuracies are, by λ: 0.1 (75.6, 61.3), 0.2 (71.4, 68.9),
# 0.3 (66.4, 63.2), 0.4 (53.8, 45.3), 0.5 (45.4, 36.8), 0.6 (37.0, 26.4): only λ = 0.1 and
# 0.2 are not dominated.
FOLDER = FIXTURES / "ta_vision8"
KEY = {0.1: "5bc026580cdc803a9189", 0.2: "ab38f25e805c3a44b4cf", 0.4: "2c9507ff71104316c6b9"}


def test_front_over_two_tasks_from_a_foreign_folder():
    collected = collect_folder(FOLDER, tasks=["mnist", "svhn"])
    assert collected.varying == ("scaling",)
    assert [r["values"]["scaling"] for r in collected.rows] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert {collected.rows[i]["key"] for i in collected.front} == {KEY[0.1], KEY[0.2]}
    assert collected.rows[0]["scores"]["mnist"] == pytest.approx(75.6303, abs=1e-4)


def test_front_over_all_tasks_matches_a_brute_force_check():
    collected = collect_folder(FOLDER)
    rows = collected.rows
    vec = [[r["scores"][t] for t in collected.tasks] for r in rows]

    def dominated(i):
        return any(
            all(a >= b for a, b in zip(vec[j], vec[i], strict=True)) and vec[j] != vec[i]
            for j in range(len(vec))
        )

    assert list(collected.front) == [i for i in range(len(rows)) if not dominated(i)]
    assert KEY[0.2] in {rows[i]["key"] for i in collected.front}


def test_cli_collect_writes_table_front_and_html(tmp_path, capsys):
    folder = tmp_path / "sweep"
    shutil.copytree(FOLDER, folder)
    assert main(["sweep", "collect", str(folder), "--tasks", "mnist,svhn", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["front_keys"]) == {KEY[0.1], KEY[0.2]}
    html = (folder / "collect" / "report.html").read_text()
    assert "plotly" in html and "mnist" in html
    csv = (folder / "collect" / "table.csv").read_text().splitlines()
    assert csv[0].startswith("key,label,scaling,") and len(csv) == 7
    assert table_csv(collect_folder(folder)).splitlines()[0] == csv[0]


def test_collect_refuses_empty_and_unknown_tasks(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sweep folder"):
        collect_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        collect_folder(FOLDER, tasks=["mnist", "imagenet"])
    with pytest.raises(ValueError, match="no finished point"):
        collect([], split="test")
