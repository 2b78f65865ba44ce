"""Adapters that save their own BERT pooler beside the classifier (``modules_to_save=
["classifier", "pooler"]``): the loader makes the pooler part of each task's head, and a task's
logits through the bundle equal peft's own forward of that adapter."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_transformers as tt  # noqa: E402

from merging_core.bundles import load_bundle  # noqa: E402
from merging_core.cli import main  # noqa: E402

pytestmark = pytest.mark.slow  # builds a tiny model and three adapters (~20 s on two shared cores)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    root = tmp_path_factory.mktemp("pooler")
    base = tt.build_base(root, "bert")
    heads = {"alpha": ["classifier", "pooler"], "beta": ["classifier", "pooler"], "gamma": None}
    args = ["bundle", "init", str(root / "bundle"), "--base", str(base)]  # labels read past poolers
    adapters = {}
    for i, task in enumerate(tt.TASKS):
        adapters[task] = tt.build_adapter(base, root / task, "bert", 10 + i, heads=heads[task])
        val = tt.write_data(root / task / "validation.jsonl", task, 12, 100 + i, labels=False)
        test = tt.write_data(root / task / "test.jsonl", task, 16, 200 + i)
        args += ["--adapter", f"{task}={adapters[task]}", "--data", f"{task}={val},{test}"]
    assert main(args) == 0
    return base, adapters, load_bundle(str(root / "bundle"))


def test_saved_poolers_become_part_of_the_heads(made):
    from merging_core.io import load_saved_modules

    _, adapters, bundle = made
    assert bundle.runner.pooler_path == "bert.pooler"
    saved = load_saved_modules(adapters["alpha"])
    torch.testing.assert_close(bundle.heads["alpha"].pooler[0], saved["bert.pooler.dense.weight"])
    base_dense = bundle.model.bert.pooler.dense.weight
    torch.testing.assert_close(bundle.heads["gamma"].pooler[0], base_dense.float())  # none saved


@pytest.mark.parametrize("task", tt.TASKS)
def test_task_logits_equal_peft_forward(made, task):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base, adapters, bundle = made
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=tt.NUM_LABELS)
    peft_model = PeftModel.from_pretrained(model, str(adapters[task])).eval()
    adapter = next(a for a in bundle.adapter_set().adapters if a.name == task)
    weights = bundle._merged_weights({m: adapter.delta(m) for m in adapter.modules})
    batch = bundle.task_data().unlabeled(task, torch.arange(6))
    with torch.inference_mode():
        ours = bundle.heads[task](bundle.runner.features(batch, weights))
        theirs = peft_model(**batch).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
