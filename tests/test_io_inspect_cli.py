"""``merge-lab inspect``: rows, JSON, and refused adapters as rows with exit code 1."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from merging_core.adapters import LoraModule
from merging_core.cli import main
from merging_core.io import CONFIG_NAME, WEIGHTS_NAME, save_adapter


def _peft_like(path, *, r=4, alpha=16, rslora=False, extra=None):
    """A hand-written PEFT folder: q (rank r) and v (rank 2 via rank_pattern) in two layers."""
    path.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "rank_pattern": {"v": 2},
        "target_modules": ["q_proj", "v"],
        "base_model_name_or_path": "org/tiny",
        "modules_to_save": ["head"],
        **(extra or {}),
    }
    (path / CONFIG_NAME).write_text(json.dumps(config))
    tensors = {}
    for layer in (0, 1):
        for mod, rank in (("q_proj", r), ("v", 2)):
            key = f"base_model.model.model.layers.{layer}.attn.{mod}"
            tensors[f"{key}.lora_A.weight"] = torch.ones(rank, 8)
            tensors[f"{key}.lora_B.weight"] = torch.ones(6, rank)
    save_file(tensors, path / WEIGHTS_NAME)
    return path


def test_json_rows(tmp_path, capsys):
    a = _peft_like(tmp_path / "task_a", r=8, alpha=16)
    b = save_adapter(
        tmp_path / "merged", {"fc": LoraModule(B=torch.ones(3, 5), A=torch.ones(5, 3))}
    )
    assert main(["inspect", str(a), str(b), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    first, second = rows
    assert first["name"] == "task_a" and first["ok"] and first["error"] is None
    assert first["rank"] == "2–8" and (first["rank_min"], first["rank_max"]) == (2, 8)
    assert first["alpha"] == "16" and first["scale"] == "2–8"  # 16/8 for q, 16/2 for v
    assert first["rslora"] is False
    assert first["target_modules"] == ["q_proj", "v"]
    assert first["num_modules"] == 4
    assert first["num_params"] == 2 * (8 * 8 + 6 * 8) + 2 * (2 * 8 + 6 * 2)
    assert first["base_model"] == "org/tiny"
    assert any("modules_to_save" in w for w in first["warnings"])
    assert second["rank"] == "5" and second["scale"] == "1" and second["warnings"] == []


def test_table_and_refused_row(tmp_path, capsys):
    good = _peft_like(tmp_path / "good", r=4, alpha=4, rslora=True)
    dora = _peft_like(tmp_path / "dora", extra={"use_dora": True})
    assert main(["inspect", str(good), str(dora), str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "name", "rank", "alpha", "rsLoRA", "targets", "#modules", "#params", "base", "model"
    ]  # fmt: skip
    assert out[1].split() == [
        "good",
        "2–4",
        "4",
        "yes",
        "q_proj,v",
        "4",
        "168",
        "org/tiny",
    ]  # 2 * (4*8 + 6*4 + 2*8 + 6*2)
    assert out[2].startswith("    ! modules_to_save")
    assert out[3].startswith("dora  REFUSED:") and "use_dora" in out[3]
    assert out[4].startswith("missing  REFUSED:") and "no such file or folder" in out[4]


def test_json_refused_row_has_every_key(tmp_path, capsys):
    good = _peft_like(tmp_path / "good")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"not opened")
    assert main(["inspect", "--json", str(good), str(tmp_path / "pickled")]) == 1
    ok_row, bad_row = json.loads(capsys.readouterr().out)
    assert set(ok_row) == set(bad_row)
    assert bad_row["ok"] is False and "pickle" in bad_row["error"]
    assert "adapter_model.bin" in bad_row["error"]
