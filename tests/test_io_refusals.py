"""Every refusal of the loader: one AdapterLoadError naming the file and the problem.

Adapters are written with our own ``save_adapter`` and then damaged by hand, so these tests do not
need peft (the peft-made DoRA and Conv adapters are refused in test_io_peft_parity.py).
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from merging_core.adapters import LoraModule
from merging_core.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterLoadError,
    load_adapter,
    load_adapter_from_files,
    save_adapter,
)


def _modules(seed: int = 0) -> dict[str, LoraModule]:
    g = torch.Generator().manual_seed(seed)
    return {
        name: LoraModule(B=torch.randn(6, 4, generator=g), A=torch.randn(4, 5, generator=g))
        for name in ("layers.0.q", "layers.1.q")
    }


@pytest.fixture
def adapter_dir(tmp_path):
    return save_adapter(tmp_path / "good", _modules())


def _edit_config(path, **changes) -> None:
    config = json.loads((path / CONFIG_NAME).read_text())
    config.update(changes)
    (path / CONFIG_NAME).write_text(json.dumps(config))


def _edit_tensors(path, fn) -> None:
    tensors = load_file(path / WEIGHTS_NAME)
    save_file(fn(dict(tensors)), path / WEIGHTS_NAME, metadata={"format": "pt"})


class _Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof of code execution if it ever runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil_pickle(marker) -> bytes:
    return pickle.dumps(_Payload(str(marker)))


def test_the_payload_really_runs_when_unpickled(tmp_path):
    marker = tmp_path / "control_marker"
    pickle.loads(_evil_pickle(marker))  # the control: this is what loading must never do
    assert marker.is_dir()


@pytest.mark.parametrize("file_name", ["adapter_model.bin", "weights.pt", "model.pth", "x.ckpt"])
def test_pickle_weights_are_refused_unopened(tmp_path, file_name):
    folder, marker = tmp_path / "evil", tmp_path / "pwned"
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    (folder / file_name).write_bytes(_evil_pickle(marker))
    for target in (folder, folder / file_name):
        with pytest.raises(AdapterLoadError, match="pickle") as err:
            load_adapter(target)
        assert file_name in str(err.value)
    upload = {CONFIG_NAME: (folder / CONFIG_NAME).read_bytes(), file_name: _evil_pickle(marker)}
    with pytest.raises(AdapterLoadError, match="pickle"):
        load_adapter_from_files(upload, name="evil")
    assert not marker.exists()


def test_pickle_next_to_safetensors_is_ignored_and_noted(adapter_dir, tmp_path):
    marker = tmp_path / "pwned"
    (adapter_dir / "adapter_model.bin").write_bytes(_evil_pickle(marker))
    adapter = load_adapter(adapter_dir)
    assert any("adapter_model.bin" in w and "never opened" in w for w in adapter.warnings)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"use_dora": True}, "use_dora"),
        ({"peft_type": "LOHA"}, "LOHA"),
        ({"peft_type": "ADALORA"}, "ADALORA"),
        ({"use_qalora": True}, "use_qalora"),
        ({"target_parameters": ["experts.gate_up_proj"]}, "target_parameters"),
        ({"r": 0}, "r must be a positive integer"),
        ({"r": "4"}, "r must be a positive integer"),
        ({"lora_alpha": "big"}, "lora_alpha must be a finite number"),
        ({"use_rslora": "yes"}, "use_rslora must be true or false"),
        ({"rank_pattern": {"q(": 4}}, "not a valid regex"),
        ({"rank_pattern": ["q"]}, "rank_pattern must be an object"),
        ({"alpha_pattern": {"q": None}}, "alpha_pattern"),
    ],
)
def test_config_refusals(adapter_dir, changes, needle):
    _edit_config(adapter_dir, **changes)
    with pytest.raises(AdapterLoadError, match=needle) as err:
        load_adapter(adapter_dir)
    assert CONFIG_NAME in str(err.value)


def test_rank_contradicting_config_is_refused(adapter_dir):
    _edit_config(adapter_dir, r=8, rank_pattern={}, alpha_pattern={})
    with pytest.raises(AdapterLoadError, match=r"rank 4 in the weights .* r=8"):
        load_adapter(adapter_dir)


def test_rank_contradicting_rank_pattern_is_refused(adapter_dir):
    _edit_config(adapter_dir, r=4, rank_pattern={"layers.1.q": 2})
    with pytest.raises(AdapterLoadError, match=r"'layers.1.q' has rank 4 .* r=2"):
        load_adapter(adapter_dir)


def test_a_and_b_disagreeing_on_rank_is_refused(adapter_dir):
    key = "base_model.model.layers.0.q.lora_B.weight"
    _edit_tensors(adapter_dir, lambda t: {**t, key: torch.zeros(6, 3)})
    with pytest.raises(AdapterLoadError, match="disagree on the rank"):
        load_adapter(adapter_dir)


@pytest.mark.parametrize("side", ["A", "B"])
def test_missing_factor_is_refused(adapter_dir, side):
    key = f"base_model.model.layers.1.q.lora_{side}.weight"
    _edit_tensors(adapter_dir, lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(AdapterLoadError, match=rf"'layers.1.q' has no lora_{side}.weight"):
        load_adapter(adapter_dir)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused(adapter_dir, bad):
    key = "base_model.model.layers.0.q.lora_A.weight"

    def poison(t):
        t[key] = t[key].clone()
        t[key][1, 2] = bad
        return t

    _edit_tensors(adapter_dir, poison)
    with pytest.raises(AdapterLoadError, match=r"layers.0.q.lora_A.weight holds 1 NaN/Inf"):
        load_adapter(adapter_dir)


def test_conv_shaped_factors_are_refused(adapter_dir):
    key = "base_model.model.layers.0.q.lora_A.weight"
    _edit_tensors(adapter_dir, lambda t: {**t, key: torch.zeros(4, 5, 3, 3)})
    with pytest.raises(AdapterLoadError, match="Conv LoRA modules are not supported"):
        load_adapter(adapter_dir)


def test_dora_magnitude_tensor_is_refused_even_without_the_flag(adapter_dir):
    key = "base_model.model.layers.0.q.lora_magnitude_vector"
    _edit_tensors(adapter_dir, lambda t: {**t, key: torch.ones(6)})
    with pytest.raises(AdapterLoadError, match="DoRA"):
        load_adapter(adapter_dir)


@pytest.mark.parametrize("cut", [0, 5, 100, -7])
def test_truncated_safetensors_is_refused(adapter_dir, cut):
    data = (adapter_dir / WEIGHTS_NAME).read_bytes()
    (adapter_dir / WEIGHTS_NAME).write_bytes(data[:cut])
    with pytest.raises(AdapterLoadError, match="truncated or corrupt") as err:
        load_adapter(adapter_dir)
    assert WEIGHTS_NAME in str(err.value)


def test_corrupt_safetensors_is_refused(adapter_dir):
    data = bytearray((adapter_dir / WEIGHTS_NAME).read_bytes())
    data[8:40] = b"\x00\xff" * 16  # smash the JSON header
    (adapter_dir / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(AdapterLoadError, match="truncated or corrupt"):
        load_adapter(adapter_dir)


def test_missing_config_is_refused(adapter_dir):
    (adapter_dir / CONFIG_NAME).unlink()
    with pytest.raises(AdapterLoadError, match=f"{CONFIG_NAME}: missing"):
        load_adapter(adapter_dir)


def test_missing_weights_is_refused(adapter_dir):
    (adapter_dir / WEIGHTS_NAME).unlink()
    with pytest.raises(AdapterLoadError, match=f"{WEIGHTS_NAME}: missing"):
        load_adapter(adapter_dir)


@pytest.mark.parametrize(("text", "needle"), [("{not json", "not valid JSON"), ("[1]", "list")])
def test_invalid_json_config_is_refused(adapter_dir, text, needle):
    (adapter_dir / CONFIG_NAME).write_text(text)
    with pytest.raises(AdapterLoadError, match=needle) as err:
        load_adapter(adapter_dir)
    assert CONFIG_NAME in str(err.value)


def test_missing_path_and_empty_folder_are_refused(tmp_path):
    with pytest.raises(AdapterLoadError, match="no such file or folder"):
        load_adapter(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match="not a PEFT adapter folder"):
        load_adapter(tmp_path / "empty")


def test_parent_of_adapter_sub_folders_names_them(tmp_path):
    save_adapter(tmp_path / "multi" / "alpha", _modules())
    save_adapter(tmp_path / "multi" / "beta", _modules())
    with pytest.raises(AdapterLoadError, match="2 adapter sub-folder.*alpha, beta"):
        load_adapter(tmp_path / "multi")


FOREIGN = {
    "kohya": ({"lora_unet_down_blocks_0_attn1_to_q.lora_down.weight": (4, 8)}, "kohya"),
    "mlx": ({"model.layers.0.self_attn.q_proj.lora_a": (8, 4)}, "MLX"),
    "diffusers": ({"unet.down.attn1.processor.to_q_lora.down.weight": (4, 8)}, "diffusers"),
}


@pytest.mark.parametrize("fmt", sorted(FOREIGN))
def test_foreign_formats_are_explained(tmp_path, adapter_dir, fmt):
    keys, needle = FOREIGN[fmt]
    tensors = {k: torch.zeros(shape) for k, shape in keys.items()}
    single = tmp_path / f"{fmt}.safetensors"
    save_file(tensors, single)
    with pytest.raises(AdapterLoadError, match=needle):  # a bare file
        load_adapter(single)
    save_file(tensors, adapter_dir / WEIGHTS_NAME)
    with pytest.raises(AdapterLoadError, match=needle):  # in a PEFT-looking folder
        load_adapter(adapter_dir)
    (adapter_dir / CONFIG_NAME).unlink()
    with pytest.raises(AdapterLoadError, match=needle):  # without a config
        load_adapter(adapter_dir)


def test_weights_without_lora_factors_are_refused(adapter_dir):
    save_file({"model.layers.0.q.weight": torch.zeros(3, 3)}, adapter_dir / WEIGHTS_NAME)
    with pytest.raises(AdapterLoadError, match="no LoRA factors"):
        load_adapter(adapter_dir)


def test_upload_refusals(adapter_dir):
    weights = (adapter_dir / WEIGHTS_NAME).read_bytes()
    with pytest.raises(AdapterLoadError, match=f"{CONFIG_NAME} is missing"):
        load_adapter_from_files({WEIGHTS_NAME: weights}, name="up")
    with pytest.raises(AdapterLoadError, match="exactly one weights file"):
        load_adapter_from_files({CONFIG_NAME: b"{}"}, name="up")
    with pytest.raises(AdapterLoadError, match="not valid JSON"):
        load_adapter_from_files({CONFIG_NAME: b"{", WEIGHTS_NAME: weights}, name="up")
    with pytest.raises(AdapterLoadError, match="truncated or corrupt"):
        load_adapter_from_files({CONFIG_NAME: b"{}", WEIGHTS_NAME: weights[:50]}, name="up")
    with pytest.raises(ValueError, match="non-empty name"):
        load_adapter_from_files({CONFIG_NAME: b"{}", WEIGHTS_NAME: weights}, name="")


def test_same_factor_with_and_without_prefix_is_refused(adapter_dir):
    key = "base_model.model.layers.0.q.lora_A.weight"
    _edit_tensors(adapter_dir, lambda t: {**t, key.removeprefix("base_model.model."): t[key] + 1})
    with pytest.raises(AdapterLoadError, match="two lora_A tensors"):
        load_adapter(adapter_dir)


def test_pickle_in_upload_next_to_safetensors_is_ignored_and_noted(adapter_dir, tmp_path):
    marker = tmp_path / "pwned"
    files = {n: (adapter_dir / n).read_bytes() for n in (CONFIG_NAME, WEIGHTS_NAME)}
    files["adapter_model.bin"] = _evil_pickle(marker)
    adapter = load_adapter_from_files(files, name="up")
    assert any("adapter_model.bin" in w and "never opened" in w for w in adapter.warnings)
    assert not marker.exists()
