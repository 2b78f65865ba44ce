"""The shipped nli6 bundle: its manifest follows the transformers-classification format, its data
files are exactly the generator's output, its adapters load through peft and through our loader to
the same ΔW and heads, and its recorded measurements say what the bundle promises."""

import json
from pathlib import Path

import pytest
import torch

from merging_core.bundles.nli6 import build, tasks

ROOT = Path(__file__).resolve().parents[2] / "sample_adapters" / "nli6"
ACCURACY_KEYS = (
    "individual_accuracy",
    "individual_validation_accuracy",
    "base_head_accuracy",
    "base_head_validation_accuracy",
)


@pytest.fixture(scope="module")
def manifest():
    return json.loads((ROOT / "manifest.json").read_text())


def test_manifest_follows_the_bundle_format(manifest):
    assert manifest["name"] == "nli6"
    assert manifest["kind"] == "transformers-classification"
    assert manifest["format_version"] == 1
    base = manifest["base_model"]
    assert ("package" in base) != ("path" in base)
    assert base["num_labels"] == 3 and base["max_length"] == build.MAX_LENGTH
    if "extra_weights" in base:
        assert (ROOT / base["extra_weights"]).is_file()
    assert [e["name"] for e in manifest["tasks"]] == list(tasks.TASK_NAMES)
    for entry in manifest["tasks"]:
        assert entry["classes"] == list(tasks.get_task(entry["name"]).classes)
        assert len(entry["classes"]) <= base["num_labels"]
        assert (ROOT / entry["adapter"] / "adapter_config.json").is_file()
        assert (ROOT / entry["adapter"] / "adapter_model.safetensors").is_file()
        assert set(entry["data"]) == {"validation", "test"}
        assert all(0.0 <= entry[k] <= 1.0 for k in ACCURACY_KEYS)
        assert isinstance(entry["premise"], dict)
    ta = manifest["task_arithmetic"]
    assert [r["lambda"] for r in ta["grid"]] == list(build.LAMBDA_GRID)
    best = max(ta["grid"], key=lambda r: r["average_normalized"])
    assert ta["best_lambda"] == best["lambda"]
    assert ta["best_average_normalized"] == best["average_normalized"]


def test_merging_is_hard(manifest):
    assert manifest["task_arithmetic"]["best_average_normalized"] <= 0.90


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_every_adapter_clearly_beats_base_plus_head(manifest, name):
    entry = next(e for e in manifest["tasks"] if e["name"] == name)
    assert entry["individual_accuracy"] >= entry["base_head_accuracy"] + 0.15


def test_data_files_are_the_generators_output(manifest):
    seed = manifest["build"]["seed"]
    for entry in manifest["tasks"]:
        sizes = entry["splits"]
        assert sizes["validation"] >= 512 and sizes["test"] >= 1000
        files = {**entry["data"], "train": entry["train_data"]}
        for split, relative in files.items():
            rows = build.read_jsonl(ROOT / relative)
            assert rows == tasks.generate(entry["name"], split, sizes[split], seed=seed)
            assert all(0 <= r["label"] < len(entry["classes"]) for r in rows)


def test_the_committed_bundle_stays_under_20_mb():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total <= 20 * 2**20, f"{total / 2**20:.1f} MiB"


@pytest.mark.slow
def test_adapters_load_through_peft_and_our_loader_to_the_same_delta_and_head(
    manifest, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from peft import PeftModel

    _, base = build.load_base(0)
    model = None
    for entry in manifest["tasks"]:
        name, folder = entry["name"], str(ROOT / entry["adapter"])
        if model is None:
            model = PeftModel.from_pretrained(base, folder, adapter_name=name)
        else:
            model.load_adapter(folder, adapter_name=name)
        deltas, (pool_weight, pool_bias, weight, bias) = build.load_task_adapter(
            ROOT / entry["adapter"]
        )
        lora_layers = {
            path: module
            for path, module in model.base_model.model.named_modules()
            if hasattr(module, "get_delta_weight") and name in getattr(module, "lora_A", {})
        }
        assert set(deltas) == set(lora_layers) and len(deltas) == 6 * 4
        for path, module in lora_layers.items():
            torch.testing.assert_close(deltas[path], module.get_delta_weight(name))
        head = model.base_model.model.classifier.modules_to_save[name]
        assert torch.equal(head.weight, weight) and torch.equal(head.bias, bias)
        pooler = model.base_model.model.bert.pooler.modules_to_save[name].dense
        assert torch.equal(pooler.weight, pool_weight) and torch.equal(pooler.bias, pool_bias)
