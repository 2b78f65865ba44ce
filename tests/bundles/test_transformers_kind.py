"""The transformers-classification bundle kind end to end on tiny random BERT- and LLaMA-family
classifiers built here (offline): bundle init and its refusals, the TaskData contract, evaluation,
TARA / sensitivity / a two-point trade-off, and φ = c equal to Task Arithmetic at λ = c through
the model's own forward."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_transformers as tt  # noqa: E402
from taskdata_conformance import adapter_updates, check_task_data  # noqa: E402

from merging_core.bundles import load_bundle  # noqa: E402
from merging_core.bundles.transformers_kind import BundleError  # noqa: E402
from merging_core.cli import main  # noqa: E402
from merging_core.merge import merge  # noqa: E402


def never_step() -> bool:
    return True


def init_args(out, files) -> list[str]:
    args = ["bundle", "init", str(out), "--base", str(files["base"])]
    for task, path in files["adapters"].items():
        args += ["--adapter", f"{task}={path}"]
    for task, splits in files["data"].items():
        args += ["--data", f"{task}={','.join(splits)}"]
    return args


@pytest.fixture(scope="module", params=["bert", "llama"])
def made(request, tmp_path_factory):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    root = tmp_path_factory.mktemp(request.param)
    files = tt.build_family(root, request.param)
    assert main(init_args(root / "bundle", files)) == 0
    return request.param, files, load_bundle(str(root / "bundle"))


def test_manifest_references_files_in_place(made):
    _, files, bundle = made
    manifest = json.loads((bundle.root / "manifest.json").read_text())
    assert manifest["kind"] == "transformers-classification"
    assert manifest["base_model"]["num_labels"] == tt.NUM_LABELS
    assert [t["name"] for t in manifest["tasks"]] == list(tt.TASKS)
    assert sorted(p.name for p in bundle.root.iterdir()) == ["manifest.json"]
    assert manifest["tasks"][0]["adapter"] == str(Path(files["adapters"]["alpha"]).resolve())


def test_heads_come_from_the_adapters(made):
    from merging_core.io import load_saved_modules

    family, files, bundle = made
    saved = load_saved_modules(files["adapters"]["beta"])
    head = "classifier" if family == "bert" else "score"
    torch.testing.assert_close(bundle.heads["beta"].weight, saved[f"{head}.weight"])
    assert (bundle.heads["beta"].bias is None) == (family == "llama")


def test_task_data_conformance(made):
    _, _, bundle = made
    check_task_data(bundle.task_data(), adapter_updates(bundle.adapter_set()))


def test_phi_constant_equals_task_arithmetic_through_the_models_forward(made):
    _, _, bundle = made
    adapters, data = bundle.adapter_set(), bundle.task_data()
    for method in ("tara_a", "tara_b"):
        res = merge(adapters, method, task_data=data, init=0.3, should_stop=never_step)
        ta = merge(adapters, "task_arithmetic", scaling=0.3)
        index = torch.arange(8)
        batch = data.unlabeled("gamma", index)
        updates = {p: (m.factors.B, m.factors.A) for p, m in res.modules.items()}
        weights = bundle._merged_weights(ta.deltas())
        with torch.no_grad():
            ours = data.features([batch], updates)[0]
            dense = bundle.runner.features(batch, weights)
        torch.testing.assert_close(ours, dense, atol=1e-4, rtol=1e-4)
        assert bundle.evaluate(res) == bundle.evaluate(ta)


def test_evaluate_tara_sensitivity_and_tradeoff(made):
    from merging_core.sensitivity import directional_jacobian
    from merging_core.tradeoff import two_task_sweep

    _, _, bundle = made
    adapters, data = bundle.adapter_set(), bundle.task_data()
    scores = bundle.evaluate({})
    assert set(scores["tasks"]) == set(tt.TASKS)
    assert bundle.zero_shot_accuracy() == {t: s["accuracy"] for t, s in scores["tasks"].items()}
    for variant in ("a", "b"):
        res = merge(adapters, f"tara_{variant}", task_data=data, steps=2, lr=0.05)
        assert res.run["steps_done"] == 2 and res.state
    sens = directional_jacobian(adapters, data, variant="b", batch_size=4)
    assert sens.J.shape[0] == 3 and torch.isfinite(sens.J).all()

    def evaluate(result, names):
        return [bundle.evaluate(result, tasks=list(names))["tasks"][n]["accuracy"] for n in names]

    sweep = two_task_sweep(adapters, data, evaluate, tasks=("alpha", "beta"), points=2,
                           methods={"tara_b": {"lr": 0.05}}, steps=2, warm_steps=1,
                           baselines=False)  # fmt: skip
    assert [p.t for p in sweep.points] == [1.0, 0.0]


def test_bundle_init_refuses_bad_inputs_naming_task_and_file(made, tmp_path):
    family, files, _ = made
    if family != "bert":
        pytest.skip("the refusals do not depend on the family")
    bad = tt.write_data(tmp_path / "bad.jsonl", "x", 3, 0)
    rows = [json.loads(line) for line in bad.read_text().splitlines()]
    rows[1]["label"] = 7
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    broken = dict(files, data={**files["data"], "beta": [files["data"]["beta"][0], str(bad)]})
    with pytest.raises(BundleError, match=r"task 'beta'.*bad.jsonl line 2.*label 7"):
        _init(tmp_path / "b1", broken)
    no_text = tmp_path / "notext.jsonl"
    no_text.write_text(json.dumps({"sentence": "hi", "label": 0}) + "\n")
    broken = dict(files, data={**files["data"], "gamma": [str(no_text)]})
    with pytest.raises(BundleError, match=r"task 'gamma'.*'text'"):
        _init(tmp_path / "b2", broken)
    headless = tmp_path / "headless"
    headless.mkdir()
    src = Path(files["adapters"]["alpha"])
    (headless / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    _strip_head(src / "adapter_model.safetensors", headless / "adapter_model.safetensors")
    broken = dict(files, adapters={**files["adapters"], "alpha": headless})
    with pytest.raises(BundleError, match=r"task 'alpha'.*no classifier head"):
        _init(tmp_path / "b3", broken, num_labels=tt.NUM_LABELS)
    assert not (tmp_path / "b3" / "manifest.json").exists()
    assert main(init_args(tmp_path / "b4", {**files, "data": {"alpha": ["missing.jsonl"]}})) == 2


def _init(out, files, **kw):
    from merging_core.bundles.user_bundle import init_bundle

    return init_bundle(out, base=files["base"], adapters=files["adapters"], data=files["data"], **kw)


def _strip_head(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {k: v for k, v in load_file(str(src)).items() if "lora_" in k}
    save_file(tensors, str(dst))
