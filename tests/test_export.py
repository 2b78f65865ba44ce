"""Export: PEFT round trip, reported vs measured truncation error, overwrite and atomicity."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.export import DENSE_RANK_CAP, export_merge, merge_diagnostics
from merging_core.merge import MergedModule, MergeResult, merge

D_IN = 24
D_OUT = {"q_proj": 32, "v_proj": 16}
MODULES = [f"layers.{i}.{p}" for i in range(2) for p in D_OUT]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(D_IN, D_OUT["q_proj"])
        self.v_proj = nn.Linear(D_IN, D_OUT["v_proj"])


class Tiny(nn.Module):
    """Two blocks whose Linear paths match ``MODULES``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])


def make_adapter(name: str, rank: int, seed: int) -> Adapter:
    g = torch.Generator().manual_seed(seed)
    mods = {}
    for path in MODULES:
        d_out = D_OUT[path.rsplit(".", 1)[1]]
        B = torch.randn(d_out, rank, generator=g)  # (d_out, r)
        A = torch.randn(rank, D_IN, generator=g) / D_IN**0.5  # (r, d_in)
        mods[path] = LoraModule(B=B, A=A)
    return Adapter(name=name, modules=mods)


@pytest.fixture(scope="module")
def adapter_set() -> AdapterSet:
    return AdapterSet.from_adapters(
        [make_adapter("a", 4, 1), make_adapter("b", 2, 2), make_adapter("c", 3, 3)]
    )


@pytest.fixture(scope="module")
def ta_result(adapter_set) -> MergeResult:
    return merge(adapter_set, "task_arithmetic", scaling=0.7, weights=[1.0, -0.5, 2.0])


def peft_deltas(path) -> dict[str, torch.Tensor]:
    """Load ``path`` with PEFT onto a fresh Tiny and read back each module's ΔW."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    peft = pytest.importorskip("peft")
    model = peft.PeftModel.from_pretrained(Tiny(), str(path))
    root = model.base_model.model
    return {name: root.get_submodule(name).get_delta_weight("default") for name in MODULES}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.norm(x.double() - ref.double()) / torch.linalg.norm(ref.double()))


def test_exact_rank_export_round_trips_through_peft(ta_result, tmp_path):
    report = export_merge(ta_result, tmp_path / "out")
    loaded = peft_deltas(tmp_path / "out")
    for row in report.modules:
        assert row.exact_rank == 9 and row.rank == 9  # ranks 4 + 2 + 3, generic factors
        assert row.rel_error < 1e-6 and row.retained_energy == pytest.approx(1.0, abs=1e-12)
        assert rel_err(loaded[row.module], ta_result.delta(row.module)) < 1e-5


def test_truncated_export_error_is_reported_exactly(ta_result, tmp_path):
    report = export_merge(ta_result, tmp_path / "out", rank=3)
    loaded = peft_deltas(tmp_path / "out")
    assert report.max_rank == 3
    for row in report.modules:
        dense = ta_result.delta(row.module).double()
        S = torch.linalg.svdvals(dense)  # independent dense reference
        eckart_young = float(S[3:].norm() / S.norm())
        measured = rel_err(loaded[row.module], dense)
        assert row.rel_error == pytest.approx(eckart_young, rel=1e-6)
        assert measured == pytest.approx(row.rel_error, abs=1e-5)
        assert row.rel_error**2 + row.retained_energy == pytest.approx(1.0, abs=1e-9)
    assert report.max_rel_error == max(r.rel_error for r in report.modules)


def test_export_depends_on_delta_not_on_factorisation(adapter_set, tmp_path):
    """(B·M, M⁻¹·A) exports the same adapter weights' product as (B, A)."""
    mods = adapter_set.factors(MODULES[0])
    B, A = mods[0].B, mods[0].A  # (32, 4), (4, 24)
    M = torch.randn(4, 4, generator=torch.Generator().manual_seed(7)) + 4 * torch.eye(4)
    plain = _single_module_result(mods[0], B, A)
    mixed = _single_module_result(mods[0], B @ M, torch.linalg.solve(M, A))
    r1 = export_merge(plain, tmp_path / "p", rank=2)
    r2 = export_merge(mixed, tmp_path / "m", rank=2)
    d1 = peft_deltas_single(tmp_path / "p")
    d2 = peft_deltas_single(tmp_path / "m")
    assert rel_err(d2, d1) < 1e-5
    assert r1.modules[0].rel_error == pytest.approx(r2.modules[0].rel_error, rel=1e-5)


def _single_module_result(like: LoraModule, B, A) -> MergeResult:
    module = MergedModule.from_factors(like, B, A)
    return MergeResult(
        "task_arithmetic", {"scaling": 1.0, "weights": None}, ("a",), {MODULES[0]: module}
    )


def peft_deltas_single(path) -> torch.Tensor:
    from safetensors.torch import load_file

    tensors = load_file(str(path / "adapter_model.safetensors"))
    key = f"base_model.model.{MODULES[0]}"
    return tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]


def test_dense_result_is_capped_and_error_is_measured(tmp_path):
    g = torch.Generator().manual_seed(3)
    like = LoraModule(B=torch.zeros(80, 1), A=torch.zeros(1, 70))
    dense = torch.randn(80, 70, generator=g)  # full rank 70 > DENSE_RANK_CAP
    result = MergeResult("task_arithmetic", {}, ("a",), {"x": MergedModule.from_dense(like, dense)})
    report = export_merge(result, tmp_path / "out")
    row = report.modules[0]
    assert not row.factored and row.exact_rank == 70 and row.rank == DENSE_RANK_CAP
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    approx = t["base_model.model.x.lora_B.weight"] @ t["base_model.model.x.lora_A.weight"]
    assert rel_err(approx, dense) == pytest.approx(row.rel_error, abs=1e-5)
    assert row.rel_error > 0.01


def test_zero_update_exports_one_zero_direction(adapter_set, tmp_path):
    pair = AdapterSet.from_adapters([adapter_set.adapters[0], _negated(adapter_set.adapters[0])])
    result = merge(pair, "task_arithmetic", scaling=1.0)
    report = export_merge(result, tmp_path / "out", rank=4)
    loaded = peft_deltas(tmp_path / "out")
    for row in report.modules:
        assert row.rank == 1 and row.rel_error == 0.0 and row.norm < 1e-5
        assert float(loaded[row.module].abs().max()) == 0.0


def _negated(adapter: Adapter) -> Adapter:
    mods = {n: m.with_factors(-m.B, m.A) for n, m in adapter.modules.items()}
    return Adapter(name=f"neg_{adapter.name}", modules=mods)


def test_diagnostics_match_the_export_report(ta_result, tmp_path):
    report = export_merge(ta_result, tmp_path / "out", rank=5)
    rows = merge_diagnostics(ta_result, rank=5)
    assert [r["module"] for r in rows] == MODULES
    for row, exported in zip(rows, report.modules, strict=True):
        assert row["rank"] == exported.rank == 5
        assert row["rel_error"] == pytest.approx(exported.rel_error)
        assert row["norm"] == pytest.approx(
            float(torch.linalg.norm(ta_result.delta(row["module"])))
        )


def test_existing_target_is_refused_unless_overwrite(ta_result, tmp_path):
    out = tmp_path / "out"
    export_merge(ta_result, out, rank=2)
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        export_merge(ta_result, out, rank=5)
    assert (out / "adapter_model.safetensors").read_bytes() == before
    report = export_merge(ta_result, out, rank=5, overwrite=True)
    assert report.max_rank == 5
    assert (out / "adapter_model.safetensors").read_bytes() != before


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_write_leaves_no_partial_directory(ta_result, tmp_path, monkeypatch, existing):
    out = tmp_path / "out"
    if existing:
        export_merge(ta_result, out, rank=2)
    before = sorted(p.name for p in out.iterdir()) if existing else None
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the first file is on disk, the second is not
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        export_merge(ta_result, out, rank=3, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert sorted(p.name for p in out.iterdir()) == before


def test_model_card_and_recipe_are_written(ta_result, tmp_path):
    export_merge(ta_result, tmp_path / "out", rank=4, base_model="tiny/base")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Task Arithmetic" in card and "PeftModel.from_pretrained" in card
    assert '"scaling": 0.7' in card and "tiny/base" in card
    assert "| layers." in card  # the per-module error table
    recipe = (tmp_path / "out" / "recipe.json").read_text()
    assert '"rank": 4' in recipe and '"method": "task_arithmetic"' in recipe


@pytest.mark.parametrize("rank", [0, -1, True, 2.5, "3"])
def test_bad_rank_is_rejected(ta_result, tmp_path, rank):
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        export_merge(ta_result, tmp_path / "out", rank=rank)
    assert not (tmp_path / "out").exists()


def test_fan_in_fan_out_module_round_trips_in_base_layout(tmp_path):
    """GPT-2 ``Conv1D`` stores W as (d_in, d_out); the export must match PEFT's layout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    peft = pytest.importorskip("peft")
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(5)
    like = LoraModule(
        B=torch.randn(12, 3, generator=g), A=torch.randn(3, 10, generator=g), transposed=True
    )
    adapter = Adapter(name="gpt", modules={"attn.c_attn": like})
    result = merge(AdapterSet.from_adapters([adapter]), "task_arithmetic", scaling=1.0)
    export_merge(result, tmp_path / "out")
    base = nn.Module()
    base.attn = nn.Module()
    base.attn.c_attn = Conv1D(nf=12, nx=10)  # weight (d_in=10, d_out=12)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "out"))
    loaded = model.base_model.model.attn.c_attn.get_delta_weight("default")
    assert loaded.shape == result.delta("attn.c_attn").shape == (10, 12)
    assert rel_err(loaded, result.delta("attn.c_attn")) < 1e-5
