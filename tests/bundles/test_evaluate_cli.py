"""``merge-lab evaluate``: JSON output equals the library's evaluation; errors exit 2."""

import json

import pytest

from merging_core.cli import main
from merging_core.merge import merge


def test_json_output_matches_bundle_evaluate(bundle, adapters, capsys):
    rc = main(
        [
            "evaluate",
            "--bundle",
            "vision8",
            "--method",
            "task_arithmetic",
            "--set",
            "scaling=0.4",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    expected = bundle.evaluate(merge(adapters, "task_arithmetic", scaling=0.4))
    assert set(printed) == {"tasks", "average_normalized"}
    assert list(printed["tasks"]) == list(bundle.task_names)
    for name, row in expected["tasks"].items():
        assert printed["tasks"][name] == pytest.approx(row)
    assert printed["average_normalized"] == pytest.approx(expected["average_normalized"])


def test_task_subset_merges_and_scores_only_those_tasks(bundle, adapters, capsys):
    rc = main(
        [
            "evaluate",
            "--method",
            "task_arithmetic",
            "--tasks",
            "mnist,count",
            "--set",
            "scaling=1",
            "--json",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed["tasks"]) == ["mnist", "count"]
    pair = adapters.subset([0, 7])
    expected = bundle.evaluate(
        merge(pair, "task_arithmetic", scaling=1.0), tasks=["mnist", "count"]
    )
    assert printed["average_normalized"] == pytest.approx(expected["average_normalized"])


def test_plain_table_lists_every_task(capsys):
    assert main(["evaluate", "--method", "task_arithmetic", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("mnist", "landcover", "average"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "nope"], "nope"),
        (["--method", "task_arithmetic", "--tasks", "cars"], "cars"),
        (["--method", "task_arithmetic", "--set", "scaling=9"], "scaling"),
        (["--method", "task_arithmetic", "--bundle", "nlp6"], "nlp6"),
    ],
)
def test_errors_name_the_bad_value_and_exit_2(argv, message, capsys):
    assert main(["evaluate", "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err
