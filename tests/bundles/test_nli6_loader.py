"""nli6 through the transformers-classification loader: offline load, the TaskData contract,
evaluation that reproduces the manifest's measured numbers, and TARA through merge()."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taskdata_conformance import adapter_updates, check_task_data  # noqa: E402

def one_row(bundle, split: str = "test") -> float:
    """One row's share of an accuracy on the rows the manifest measured."""
    return 1 / (bundle.eval_rows or int(bundle.labels(bundle.task_names[0], split).shape[0]))


@pytest.fixture(scope="module")
def nli6():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    from merging_core.bundles import load_bundle

    return load_bundle("nli6")


def test_loads_offline_with_six_tasks_and_their_heads(nli6):
    assert nli6.task_names == ("mnli", "qnli", "snli", "rte", "sick", "scitail")
    assert nli6.manifest["kind"] == "transformers-classification"
    assert {t: h.classes for t, h in nli6.heads.items()} == {
        "mnli": 3, "qnli": 2, "snli": 3, "rte": 2, "sick": 3, "scitail": 2,
    }  # fmt: skip
    assert nli6.eval_rows == nli6.manifest["measured_rows"]
    assert nli6.slider_rows == nli6.manifest["slider"]["rows"]
    assert nli6.runner.pooler_path == "bert.pooler"  # every adapter trained its own pooler
    assert all(h.pooler is not None for h in nli6.heads.values())


def test_task_data_conformance(nli6):
    adapters = nli6.adapter_set()
    check_task_data(nli6.task_data(), adapter_updates(adapters.subset([0, 1])))


@pytest.mark.slow
def test_evaluation_reproduces_the_manifest(nli6):
    """Base + each task's head on the measured rows, and one adapter on its own task."""
    base = nli6.evaluate({}, split="test")
    for entry in nli6.manifest["tasks"]:
        got = base["tasks"][entry["name"]]["accuracy"]
        assert got == pytest.approx(entry["base_head_accuracy"], abs=2.5 * one_row(nli6))
    qnli = nli6.adapter_set().adapters[1]
    own = nli6.evaluate({m: qnli.delta(m) for m in qnli.modules}, tasks=["qnli"])
    assert own["tasks"]["qnli"]["accuracy"] == pytest.approx(
        nli6.manifest["tasks"][1]["individual_accuracy"], abs=2.5 * one_row(nli6)
    )


def test_slider_subset_is_normalised_by_its_own_individual_accuracy(nli6):
    """rte's own adapter on the slider subset scores its recorded slider normaliser (≈ 100 %)."""
    rte = nli6.adapter_set().adapters[3]
    rows = nli6.slider_rows
    own = nli6.evaluate({m: rte.delta(m) for m in rte.modules}, tasks=["rte"], rows=rows)
    recorded = nli6.manifest["slider"]["individual_accuracy"]["rte"]
    assert own["tasks"]["rte"]["accuracy"] == pytest.approx(recorded, abs=2.5 / rows)
    assert own["tasks"]["rte"]["normalized"] == pytest.approx(1.0, abs=2.5 / rows / recorded)


@pytest.mark.slow
def test_tara_runs_through_merge_on_the_real_model(nli6):
    from merging_core.merge import merge

    adapters = nli6.adapter_set().subset([0, 5])  # mnli + scitail
    res = merge(adapters, "tara_b", task_data=nli6.task_data(), steps=2, batch_size=4)
    assert res.run["steps_done"] == 2 and res.run["task_data"]["name"] == "nli6"
    assert all(torch.isfinite(v).all() for v in res.state.values())
