"""Optuna search: deterministic under a seed, resumable from its SQLite study."""

import pytest

pytest.importorskip("optuna")

from merging_core.sweep import parse_spec  # noqa: E402
from merging_core.sweep.search import run_search  # noqa: E402
from tests.sweep.conftest import ta_spec_dict  # noqa: E402

SEARCH = {"params": {"scaling": {"low": 0.05, "high": 1.0}}, "seed": 7}


def trials_of(folder):
    import optuna

    [summary] = optuna.study.get_all_study_summaries(f"sqlite:///{folder / 'search.sqlite'}")
    study = optuna.load_study(
        study_name=summary.study_name, storage=f"sqlite:///{folder / 'search.sqlite'}"
    )
    return [(t.params["scaling"], t.value) for t in study.trials]


def test_five_trials_are_deterministic_under_a_seed(tmp_path):
    spec = parse_spec(ta_spec_dict(search=SEARCH))
    a = run_search(spec, tmp_path / "a", trials=5)
    b = run_search(spec, tmp_path / "b", trials=5)
    assert trials_of(tmp_path / "a") == trials_of(tmp_path / "b")
    assert len(trials_of(tmp_path / "a")) == 5 and a.to_dict() == b.to_dict()
    assert a.best_value == max(v for _, v in trials_of(tmp_path / "a"))
    assert set(a.best_test["tasks"]) == {"mnist", "svhn"}  # the best recipe's test scores
    other = run_search(
        parse_spec(ta_spec_dict(search={**SEARCH, "seed": 8})), tmp_path / "c", trials=2
    )
    assert trials_of(tmp_path / "c") != trials_of(tmp_path / "a")[:2] and other.trials == 2


def test_search_resumes_from_its_study(tmp_path):
    spec = parse_spec(ta_spec_dict(search=SEARCH))
    assert run_search(spec, tmp_path, trials=2).ran == 2
    resumed = run_search(spec, tmp_path, trials=3)
    assert (resumed.trials, resumed.ran) == (3, 1)
    assert len(list((tmp_path / "points").glob("*.json"))) == 3


def test_search_section_is_checked():
    with pytest.raises(ValueError, match="needs a search section"):
        run_search(parse_spec(ta_spec_dict()), "unused", trials=1)
    bad = parse_spec(ta_spec_dict(search={"params": {"density": {"low": 0, "high": 1}}}))
    with pytest.raises(ValueError, match="not a parameter of 'task_arithmetic'"):
        run_search(bad, "unused", trials=1)


@pytest.mark.slow
def test_search_on_two_local_workers_runs_the_same_startup_trials(tmp_path):
    # TPE's first trials are seeded random draws, so batches of two ask for the same values
    spec = parse_spec(ta_spec_dict(search=SEARCH))
    run_search(spec, tmp_path / "serial", trials=4)
    local = run_search(spec, tmp_path / "local", trials=4, executor="local", workers=2)
    assert local.ran == 4
    assert trials_of(tmp_path / "local") == trials_of(tmp_path / "serial")
