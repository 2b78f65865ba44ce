"""The shipped vision8 bundle: loads offline, adapters match the encoder and peft, evaluation
reproduces the manifest, and the merge context follows the TaskContext contract."""

import copy
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from merging_core.bundles import load_bundle
from merging_core.bundles.files import SHIPPED
from merging_core.bundles.vit import lora_target_paths
from merging_core.merge import merge

NAMES = ("mnist", "svhn", "rotated", "parity", "signs", "textures", "landcover", "count")


@pytest.mark.slow
def test_loads_offline_without_peft_or_transformers():
    code = (
        "import sys, socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network use during bundle load')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from merging_core.bundles import load_bundle\n"
        "b = load_bundle('vision8')\n"
        "b.evaluate({})\n"
        "assert 'peft' not in sys.modules and 'transformers' not in sys.modules\n"
        "print(len(b.task_names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "8"


def test_contract_names_and_files(bundle):
    assert bundle.name == "vision8" and bundle.task_names == NAMES
    for name, folder in bundle.adapter_dirs.items():
        assert folder.name == name
        assert sorted(p.name for p in folder.iterdir()) == [
            "adapter_config.json",
            "adapter_model.safetensors",
        ]
    assert set(bundle.manifest) >= {"base_model", "tasks", "data", "lora", "build"}
    size = sum(p.stat().st_size for p in (SHIPPED / "vision8").rglob("*") if p.is_file())
    assert size < 20e6


def test_adapters_target_every_attention_projection_r16(bundle, adapters):
    paths = lora_target_paths(bundle.encoder.config)
    assert adapters.names == list(NAMES)
    assert sorted(adapters.modules) == sorted(paths)
    for adapter in adapters:
        assert adapter.config.r == 16 and adapter.config.lora_alpha == 16
        for path, module in adapter.modules.items():
            weight = bundle.encoder.get_submodule(path).weight
            assert module.rank == 16 and module.shape == tuple(weight.shape)


@pytest.mark.slow
def test_zero_shot_and_individual_accuracies_reproduce_the_manifest(bundle, adapters):
    zero = bundle.evaluate({})
    for name in NAMES:
        assert zero["tasks"][name]["accuracy"] == pytest.approx(bundle.zero_shot_accuracy()[name])
    for adapter in adapters:
        deltas = {m: adapter.delta(m) for m in adapter.modules}
        own = bundle.evaluate(deltas, tasks=[adapter.name])["tasks"][adapter.name]
        assert own["accuracy"] == pytest.approx(bundle.individual_accuracy()[adapter.name])
        assert own["normalized"] == pytest.approx(1.0)
        val = bundle.evaluate(deltas, tasks=[adapter.name], split="validation")
        assert val["tasks"][adapter.name]["normalized"] == pytest.approx(1.0)
    for entry in bundle.manifest["tasks"]:  # the build's own peft forward agrees to one image
        assert abs(entry["peft_test_accuracy"] - entry["individual_accuracy"]) <= 1 / 128


def test_every_adapter_clearly_beats_zero_shot(bundle):
    zero, own = bundle.zero_shot_accuracy(), bundle.individual_accuracy()
    assert all(own[n] >= zero[n] + 0.1 for n in NAMES), (zero, own)


def test_evaluate_matches_an_independent_dense_forward(bundle, adapters):
    """W + ΔW written into a copy of the encoder, plain forward on the raw images."""
    result = merge(adapters, "task_arithmetic", scaling=0.3)
    scores = bundle.evaluate(result, tasks=["svhn", "count"])
    model = copy.deepcopy(bundle.encoder)
    with torch.no_grad():
        for path, dw in result.deltas().items():
            model.get_submodule(path).weight += dw
        for name in ("svhn", "count"):
            x = bundle.arrays[f"{name}/test/images"]
            feats = F.normalize(model(torch.from_numpy(x).float() / 255), dim=-1)
            preds = (feats @ bundle.heads[name].T).argmax(-1)
            acc = float((preds == bundle.labels(name)).float().mean())
            assert scores["tasks"][name]["accuracy"] == pytest.approx(acc)


def test_task_data_forward_gives_the_same_features_as_merged_weights(bundle, adapters):
    """Data-driven merges add B (A x) to each targeted Linear's output, inside the forward only."""
    data = bundle.task_data()
    adapter = adapters.adapters[1]
    x = data.unlabeled("svhn", torch.arange(16))
    updates = {p: (m.B, m.A) for p, m in adapter.modules.items()}
    with torch.no_grad():
        hooked = data.features([x], updates)[0]
    deltas = {m: adapter.delta(m) for m in adapter.modules}
    merged = bundle.features(deltas, tasks=["svhn"], split="validation")["svhn"][:16]
    torch.testing.assert_close(hooked, merged, rtol=1e-4, atol=1e-4)
    base = bundle.features({}, tasks=["svhn"], split="validation")["svhn"][:16]
    assert (data.features([x])[0] - base).abs().max() < 1e-4  # nothing left applied


def test_evaluate_inside_a_patched_forward_refuses(bundle, adapters):
    from merging_core.lowrank_forward import patched

    adapter = adapters.adapters[0]
    with patched(bundle.encoder, {p: (m.B, m.A) for p, m in adapter.modules.items()}):
        with pytest.raises(RuntimeError, match="twice"):
            bundle.evaluate({}, tasks=["mnist"])


def test_evaluate_rejects_bad_input_naming_it(bundle):
    with pytest.raises(KeyError, match="blocks.9"):
        bundle.evaluate({"blocks.9.attn.q_proj": torch.zeros(128, 128)})
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        bundle.evaluate({"blocks.0.attn.q_proj": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="dev"):
        bundle.evaluate({}, split="dev")
    with pytest.raises(KeyError, match="cars"):
        bundle.evaluate({}, tasks=["cars"])
    with pytest.raises(TypeError, match="list"):
        bundle.evaluate({}, tasks="mnist")
    with pytest.raises(KeyError, match="nope"):
        load_bundle("nope")


def test_task_arithmetic_is_hard_on_this_bundle(bundle):
    ref = bundle.manifest["reference_results"]["task_arithmetic"]
    assert ref["best_average_normalized"] <= 0.9
    lam = ref["best_lambda"]
    adapters = bundle.adapter_set()
    again = bundle.evaluate(merge(adapters, "task_arithmetic", scaling=lam))
    assert again["average_normalized"] == pytest.approx(ref["best_average_normalized"])


@pytest.mark.slow
def test_peft_reads_the_adapters_and_agrees_with_our_loader(bundle, adapters):
    from peft import PeftModel

    base = copy.deepcopy(bundle.encoder)
    name = "textures"
    model = PeftModel.from_pretrained(base, str(bundle.adapter_dirs[name])).eval()
    ours = adapters.adapters[NAMES.index(name)]
    for path, module in ours.modules.items():
        peft_layer = model.base_model.model.get_submodule(path)
        torch.testing.assert_close(peft_layer.get_delta_weight("default"), module.delta())
    x = bundle.images(name)[:32]
    with torch.no_grad():
        via_peft = model(x)
    deltas = {m: ours.delta(m) for m in ours.modules}
    via_ours = bundle.features(deltas, tasks=[name])[name][:32]
    torch.testing.assert_close(via_peft, via_ours, rtol=1e-4, atol=1e-4)
