"""Loader and saver behaviour on hand-written adapters (no peft needed): golden scales, PEFT's
pattern matching, hashes and sources, uploads, and save_adapter's config, metadata and atomicity.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import merging_core
from merging_core import io
from merging_core.adapters import LoraModule
from merging_core.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_adapter,
    load_adapter_from_files,
    load_adapters,
    pattern_value,
    save_adapter,
)

P = "base_model.model."


def _write(path, config: dict, tensors: dict) -> None:
    path.mkdir(parents=True)
    (path / CONFIG_NAME).write_text(json.dumps(config))
    save_file(tensors, path / WEIGHTS_NAME, metadata={"format": "pt"})


def _mod(d_out: int, d_in: int, r: int, seed: int, **kw) -> LoraModule:
    g = torch.Generator().manual_seed(seed)
    return LoraModule(
        B=torch.randn(d_out, r, generator=g), A=torch.randn(r, d_in, generator=g), **kw
    )


# --- golden loads ---------------------------------------------------------------------------


def test_golden_linear_scale_alpha_over_r(tmp_path):
    A = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])  # (r=2, d_in=3)
    B = torch.tensor([[1.0, 1.0], [2.0, 0.0]])  # (d_out=2, r=2)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 3, "target_modules": ["fc"]}
    _write(tmp_path / "a", config, {f"{P}fc.lora_A.weight": A, f"{P}fc.lora_B.weight": B})
    adapter = load_adapter(tmp_path / "a")
    expected = torch.tensor([[1.5, 1.5, 1.5], [3.0, 0.0, 6.0]])  # 3/2 * B @ A by hand
    assert torch.equal(adapter.delta("fc"), expected)
    assert adapter.modules["fc"].kind == "linear" and not adapter.modules["fc"].transposed
    assert adapter.config.r == 2 and adapter.config.lora_alpha == 3.0


def test_golden_rslora_and_embedding(tmp_path):
    A = torch.tensor([[1.0, 2.0, 0.0]] * 4)  # lora_embedding_A (r=4, num_embeddings=3)
    B = torch.ones(2, 4)  # lora_embedding_B (dim=2, r=4)
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 6, "use_rslora": True}
    tensors = {f"{P}wte.lora_embedding_A": A, f"{P}wte.lora_embedding_B": B}
    _write(tmp_path / "e", config, tensors)
    adapter = load_adapter(tmp_path / "e")
    # s = 6 / sqrt(4) = 3; (B @ A) has rows [4, 8, 0]; ΔW = 3 (B @ A)ᵀ: (3, 2)
    expected = torch.tensor([[12.0, 12.0], [24.0, 24.0], [0.0, 0.0]])
    assert torch.equal(adapter.delta("wte"), expected)
    assert adapter.modules["wte"].kind == "embedding" and adapter.modules["wte"].transposed


def test_fan_in_fan_out_marks_linear_modules_transposed(tmp_path):
    m = _mod(4, 3, 2, 0)
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "fan_in_fan_out": True}
    _write(tmp_path / "f", config, {f"{P}c.lora_A.weight": m.A, f"{P}c.lora_B.weight": m.B})
    adapter = load_adapter(tmp_path / "f")
    assert adapter.delta("c").shape == (3, 4)
    torch.testing.assert_close(adapter.delta("c"), (m.B @ m.A).T)


@pytest.mark.parametrize(
    ("pattern", "module", "expected"),
    [
        ({"layers.1.q": 6, "q": 3}, "model.layers.1.q", 6),  # dotted suffix, first key wins
        ({"layers.1.q": 6, "q": 3}, "model.layers.0.q", 3),
        ({"q": 3, "layers.1.q": 6}, "model.layers.1.q", 3),  # order matters
        ({"roj": 2}, "model.proj", 8),  # must start at a dot boundary
        ({r"proj\.\d": 2}, "model.proj.7", 2),  # keys are regexes
        ({r"proj\.\d": 2}, "model.proj.17", 8),
        ({"model.proj": 5}, "model.proj", 5),  # full names match themselves
        ({}, "anything", 8),
    ],
)
def test_pattern_value_follows_peft_semantics(pattern, module, expected):
    assert pattern_value(pattern, module, default=8) == expected


def test_hash_source_name_and_file_paths(tmp_path):
    path = save_adapter(tmp_path / "nice", {"x.fc": _mod(3, 3, 1, 0)})
    digest = hashlib.sha256((path / WEIGHTS_NAME).read_bytes()).hexdigest()
    adapter = load_adapter(path)
    assert adapter.sha256 == digest == adapter.content_hash()
    assert adapter.source == str(path) and adapter.name == "nice"
    assert load_adapter(path, name="renamed").name == "renamed"
    assert load_adapter(path / CONFIG_NAME).sha256 == digest
    assert merging_core.load_adapter(str(path / WEIGHTS_NAME)).name == "nice"


def test_load_adapters_disambiguates_clashing_folder_names(tmp_path):
    one = save_adapter(tmp_path / "run1" / "adapter", {"fc": _mod(3, 3, 1, 0)})
    two = save_adapter(tmp_path / "run2" / "adapter", {"fc": _mod(3, 3, 1, 1)})
    other = save_adapter(tmp_path / "solo", {"fc": _mod(3, 3, 1, 2)})
    names = [a.name for a in load_adapters([one, two, other])]
    assert names == ["run1/adapter", "run2/adapter", "solo"]


def test_modules_come_in_natural_order(tmp_path):
    mods = {f"layers.{i}.fc": _mod(2, 2, 1, i) for i in (10, 2, 1)}
    adapter = load_adapter(save_adapter(tmp_path / "o", mods))
    assert list(adapter.modules) == ["layers.1.fc", "layers.2.fc", "layers.10.fc"]


def test_upload_matches_disk_load(tmp_path):
    path = save_adapter(tmp_path / "up", {"fc": _mod(4, 3, 2, 0), "g": _mod(2, 3, 1, 1)})
    files = {f"some/dir/{n}": (path / n).read_bytes() for n in (CONFIG_NAME, WEIGHTS_NAME)}
    uploaded = load_adapter_from_files(files, name="mine")
    disk = load_adapter(path)
    assert uploaded.name == "mine" and uploaded.source == "" and uploaded.sha256 == disk.sha256
    for name in disk.modules:
        assert torch.equal(uploaded.delta(name), disk.delta(name))
    renamed = {
        CONFIG_NAME: files[f"some/dir/{CONFIG_NAME}"],
        "w.safetensors": files[f"some/dir/{WEIGHTS_NAME}"],
    }
    assert load_adapter_from_files(renamed, name="r").sha256 == disk.sha256


def test_config_without_peft_type_loads_with_a_note(tmp_path):
    m = _mod(3, 3, 8, 0)
    _write(tmp_path / "n", {}, {f"{P}fc.lora_A.weight": m.A, f"{P}fc.lora_B.weight": m.B})
    adapter = load_adapter(tmp_path / "n")
    assert any("no peft_type" in w for w in adapter.warnings)
    torch.testing.assert_close(adapter.delta("fc"), m.B @ m.A)  # defaults r = alpha = 8


def test_non_lora_tensors_are_reported_not_dropped(tmp_path):
    m = _mod(3, 3, 2, 0)
    tensors = {
        f"{P}fc.lora_A.weight": m.A,
        f"{P}fc.lora_B.weight": m.B,
        f"{P}fc.lora_B.bias": torch.zeros(3),
        f"{P}head.modules_to_save.default.weight": torch.zeros(2, 3),
        f"{P}emb.token_adapter.trainable_tokens_delta": torch.zeros(2, 3),
    }
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "modules_to_save": ["head"]}
    _write(tmp_path / "p", config, tensors)
    text = " | ".join(load_adapter(tmp_path / "p").warnings)
    assert "modules_to_save=['head']" in text
    assert "1 lora_B.bias" in text and "1 trainable-token" in text
    assert "head.modules_to_save.default.weight" in text


# --- save_adapter ---------------------------------------------------------------------------


def test_save_writes_a_scale_one_peft_config(tmp_path):
    mods = {
        "q": _mod(4, 4, 2, 0),
        "block.q": _mod(4, 4, 5, 1),  # "q" is a dotted suffix of this name
        "a_b": _mod(4, 4, 3, 2),
        "a.b": _mod(4, 4, 1, 3),  # "a.b" read as a regex also matches "a_b"
        "emb": _mod(6, 9, 4, 4, kind="embedding", transposed=True),
    }
    path = save_adapter(tmp_path / "s", mods, base_model="org/base", task_type="CAUSAL_LM")
    config = json.loads((path / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == config["lora_alpha"] == 5
    assert config["use_rslora"] is False and config["use_dora"] is False
    assert config["fan_in_fan_out"] is False
    assert config["base_model_name_or_path"] == "org/base" and config["task_type"] == "CAUSAL_LM"
    assert config["rank_pattern"] == config["alpha_pattern"]
    assert sorted(config["target_modules"]) == sorted(mods)
    for name, mod in mods.items():  # PEFT's own lookup gives every module its rank and scale 1
        assert pattern_value(config["rank_pattern"], name, default=None) == mod.rank
        assert pattern_value(config["alpha_pattern"], name, default=None) == mod.rank
    back = load_adapter(path)
    for name, mod in mods.items():
        assert torch.equal(back.modules[name].B, mod.B) and torch.equal(back.modules[name].A, mod.A)
    assert back.modules["emb"].kind == "embedding"


def test_save_key_layout_and_metadata(tmp_path):
    mods = {"fc": _mod(4, 3, 2, 0), "wte": _mod(5, 7, 2, 1, kind="embedding", transposed=True)}
    path = save_adapter(tmp_path / "k", mods, metadata={"recipe": "ta"}, target_modules=["fc"])
    with safe_open(path / WEIGHTS_NAME, "pt") as f:
        assert f.metadata() == {"format": "pt", "recipe": "ta"}
        assert sorted(f.keys()) == [
            f"{P}fc.lora_A.weight",
            f"{P}fc.lora_B.weight",
            f"{P}wte.lora_embedding_A",
            f"{P}wte.lora_embedding_B",
        ]
        assert f.get_tensor(f"{P}wte.lora_embedding_A").shape == (2, 7)
    assert json.loads((path / CONFIG_NAME).read_text())["target_modules"] == ["fc"]


def test_save_transposed_linear_sets_fan_in_fan_out(tmp_path):
    mods = {"c_attn": _mod(6, 2, 2, 0, transposed=True)}
    path = save_adapter(tmp_path / "t", mods)
    assert json.loads((path / CONFIG_NAME).read_text())["fan_in_fan_out"] is True
    assert load_adapter(path).delta("c_attn").shape == (2, 6)


@pytest.mark.parametrize(
    ("mods", "kwargs", "err", "needle"),
    [
        ({}, {}, ValueError, "no modules"),
        ({"a": "x"}, {}, TypeError, "must be a LoraModule"),
        (
            {"a": _mod(2, 2, 1, 0), "b": _mod(2, 2, 1, 1, transposed=True)},
            {},
            ValueError,
            "mix layouts",
        ),
        ({"e": _mod(2, 2, 1, 0, kind="embedding")}, {}, ValueError, "transposed=True"),
        ({"a": _mod(2, 2, 1, 0)}, {"extra_files": {CONFIG_NAME: "{}"}}, ValueError, "overwrite"),
        ({"a": _mod(2, 2, 1, 0)}, {"extra_files": {"../x": "y"}}, ValueError, "plain file"),
        ({"a": _mod(2, 2, 1, 0)}, {"extra_files": {"x": 3}}, TypeError, "str or bytes"),
        ({"a": _mod(2, 2, 1, 0)}, {"metadata": {"k": 1}}, TypeError, "str to str"),
        ({"a": _mod(2, 2, 1, 0)}, {"metadata": {"format": "np"}}, ValueError, "'pt'"),
    ],
)
def test_save_refusals_write_nothing(tmp_path, mods, kwargs, err, needle):
    with pytest.raises(err, match=needle):
        save_adapter(tmp_path / "out", mods, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_non_finite_factors(tmp_path):
    bad = LoraModule(B=torch.tensor([[float("nan")]]), A=torch.ones(1, 1))
    with pytest.raises(ValueError, match="'fc' has NaN or Inf"):
        save_adapter(tmp_path / "out", {"fc": bad})


def test_save_refuses_existing_folder_unless_overwrite(tmp_path):
    path = save_adapter(tmp_path / "out", {"fc": _mod(2, 2, 1, 0)})
    (path / "keep.txt").write_text("old")
    with pytest.raises(ValueError, match="already exists"):
        save_adapter(path, {"fc": _mod(2, 2, 1, 1)})
    assert (path / "keep.txt").exists()
    save_adapter(path, {"fc": _mod(2, 2, 1, 1)}, overwrite=True)
    assert not (path / "keep.txt").exists()  # replaced as a whole, not merged into
    assert torch.equal(load_adapter(path).modules["fc"].A, _mod(2, 2, 1, 1).A)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or old folders left
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        save_adapter(tmp_path / "file", {"fc": _mod(2, 2, 1, 1)}, overwrite=True)


def test_failed_write_leaves_no_trace(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(tmp_path / "out", {"fc": _mod(2, 2, 1, 0)})
    assert list(tmp_path.iterdir()) == []


def test_failed_swap_restores_the_old_adapter(tmp_path, monkeypatch):
    path = save_adapter(tmp_path / "out", {"fc": _mod(2, 2, 1, 0)})
    before = (path / WEIGHTS_NAME).read_bytes()
    real_rename = io.os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the new folder moving into place
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(io.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        save_adapter(path, {"fc": _mod(2, 2, 1, 1)}, overwrite=True)
    assert (path / WEIGHTS_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_save_is_byte_for_byte_deterministic(tmp_path):
    mods = {"b.fc": _mod(4, 3, 2, 0), "a.fc": _mod(3, 4, 1, 1)}
    meta = {"z": "3", "recipe": "ta", "a": "1"}
    one = save_adapter(tmp_path / "one", mods, metadata=meta)
    two = save_adapter(tmp_path / "two", mods, metadata=dict(reversed(meta.items())))
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    assert load_adapter(one).sha256 == load_adapter(two).sha256


def test_save_refuses_rank_zero(tmp_path):
    empty = LoraModule(B=torch.zeros(3, 0), A=torch.zeros(0, 2))
    with pytest.raises(ValueError, match="'fc' has rank 0"):
        save_adapter(tmp_path / "z", {"fc": empty})


def test_root_adapter_notes_sub_folder_adapters(tmp_path):
    root = save_adapter(tmp_path / "multi", {"fc": _mod(2, 2, 1, 0)})
    save_adapter(root / "second", {"fc": _mod(2, 2, 1, 1)})
    adapter = load_adapter(root)
    assert any("sub-folders" in w and "second" in w for w in adapter.warnings)


def test_lenient_spellings_peft_also_writes(tmp_path):
    m = _mod(3, 5, 2, 0)
    config = {"peft_type": "LORA", "r": 2.0, "lora_alpha": 4}  # r as a JSON float
    tensors = {f"{P}emb.lora_embedding_A.weight": m.A, f"{P}emb.lora_embedding_B.weight": m.B}
    _write(tmp_path / "l", config, tensors)
    adapter = load_adapter(tmp_path / "l")
    torch.testing.assert_close(adapter.delta("emb"), 2.0 * (m.B @ m.A).T)
