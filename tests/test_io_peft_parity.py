"""Parity of our loader and saver with PEFT itself.

Each test builds a tiny torch model, wraps it with ``peft.get_peft_model`` for one config variant,
makes every LoRA factor non-zero, saves with ``save_pretrained`` and checks that
``load_adapter(...).delta(module)`` equals PEFT's own ``get_delta_weight`` for every module.
The round-trip tests go the other way: our ``save_adapter`` output loaded by
``PeftModel.from_pretrained`` must give the forward pass of the factors we saved.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402

from merging_core.adapters import LoraModule  # noqa: E402
from merging_core.io import WEIGHTS_NAME, AdapterLoadError, load_adapter, save_adapter  # noqa: E402


class Toy(nn.Module):
    """Embedding -> two blocks of (q, v) linears -> head; names like a transformer's."""

    def __init__(self, vocab: int = 20, dim: int = 12) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"q": nn.Linear(dim, dim), "v": nn.Linear(dim, 2 * dim)})
            for _ in range(2)
        )
        self.proj = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(2))
        self.head = nn.Linear(dim, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        for block, proj in zip(self.layers, self.proj, strict=True):
            h = h + block["q"](h) + proj(torch.tanh(block["v"](h)))
        return self.head(h)


def _toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy()


def _gpt2(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16)
    return GPT2LMHeadModel(config).eval()


def _perturb(model: nn.Module, seed: int = 1) -> None:
    """Give every LoRA factor random values (PEFT initialises B, or embedding A, to zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g).to(p.dtype))


def _peft_deltas(model: nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """PEFT's own ΔW for every LoRA layer, keyed by module path (no ``base_model.model.``)."""
    base = model.base_model.model
    return {
        name: mod.get_delta_weight(adapter).float()
        for name, mod in base.named_modules()
        if isinstance(mod, LoraLayer)
    }


def _saved(tmp_path, model: nn.Module, config: LoraConfig, **save_kwargs) -> tuple:
    peft_model = get_peft_model(model, config)
    _perturb(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter", **save_kwargs)
    return peft_model, tmp_path / "adapter"


def _assert_parity(adapter, peft_model, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    expected = _peft_deltas(peft_model)
    assert set(adapter.modules) == set(expected)
    for name, dw in expected.items():
        ours = adapter.delta(name)
        assert ours.dtype == torch.float32
        assert ours.shape == dw.shape, name
        torch.testing.assert_close(ours, dw, rtol=rtol, atol=atol, msg=name)


def test_plain_lora_matches_peft(tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v", "head"])
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    assert adapter.name == "adapter" and adapter.source == str(path)
    assert adapter.ranks == {m: 4 for m in adapter.modules}
    assert adapter.warnings == ()
    b = adapter.modules["head"].B
    raw_b = load_file(path / WEIGHTS_NAME)["base_model.model.head.lora_B.weight"]
    torch.testing.assert_close(b, raw_b * 2.0)  # alpha / r = 8 / 4 folded into B


def test_rslora_scale_is_alpha_over_sqrt_r(tmp_path):
    config = LoraConfig(r=9, lora_alpha=6, use_rslora=True, target_modules=["q", "v"])
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    raw_b = load_file(path / WEIGHTS_NAME)["base_model.model.layers.0.q.lora_B.weight"]
    torch.testing.assert_close(adapter.modules["layers.0.q"].B, raw_b * 2.0)  # 6 / sqrt(9)


def test_rank_and_alpha_patterns_follow_peft_matching(tmp_path):
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["q", "v", "proj.0", "proj.1", "head"],
        # first matching key wins: layers.1.q -> 6, other q -> 3; a regex key for both proj.
        rank_pattern={"layers.1.q": 6, "q": 3, r"proj\.\d": 2},
        alpha_pattern={"v": 16, "head": 1.5, "layers.0.q": 9},
    )
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    assert adapter.ranks == {
        "head": 4,
        "layers.0.q": 3,
        "layers.0.v": 4,
        "layers.1.q": 6,
        "layers.1.v": 4,
        "proj.0": 2,
        "proj.1": 2,
    }


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_disk_is_upcast(tmp_path, dtype):
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q", "v"])
    peft_model = get_peft_model(_toy(), config).to(dtype)
    _perturb(peft_model)
    peft_model.save_pretrained(tmp_path / "half")
    on_disk = load_file(tmp_path / "half" / WEIGHTS_NAME)
    assert {t.dtype for t in on_disk.values()} == {dtype}
    adapter = load_adapter(tmp_path / "half")
    for name, mod in adapter.modules.items():
        assert mod.A.dtype == mod.B.dtype == torch.float32
        a = on_disk[f"base_model.model.{name}.lora_A.weight"].float()
        b = on_disk[f"base_model.model.{name}.lora_B.weight"].float()
        torch.testing.assert_close(adapter.delta(name), 4.0 * b @ a)  # exact upcast reference
    # PEFT's own delta is rounded back to the half dtype: agree to that precision.
    _assert_parity(adapter, peft_model, rtol=1e-2, atol=1e-2)


def test_gpt2_conv1d_fan_in_fan_out_is_in_base_layout(tmp_path):
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True
    )
    peft_model, path = _saved(tmp_path, _gpt2(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    base = peft_model.base_model.model
    for name, mod in adapter.modules.items():
        assert mod.transposed
        assert adapter.delta(name).shape == base.get_submodule(name).base_layer.weight.shape
    assert adapter.delta("transformer.h.0.attn.c_attn").shape == (32, 96)  # Conv1D: (in, out)


def test_embedding_delta_is_transposed_product(tmp_path):
    config = LoraConfig(r=3, lora_alpha=6, target_modules=["emb", "q"])
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    emb = adapter.modules["emb"]
    assert emb.kind == "embedding" and emb.transposed
    assert adapter.delta("emb").shape == (20, 12)  # (num_embeddings, dim)


def test_keys_without_prefix_load_the_same(tmp_path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "emb"])
    peft_model, path = _saved(tmp_path, _toy(), config)
    tensors = load_file(path / WEIGHTS_NAME)
    stripped = {k.removeprefix("base_model.model."): v for k, v in tensors.items()}
    assert stripped.keys() != tensors.keys()
    save_file(stripped, path / WEIGHTS_NAME, metadata={"format": "pt"})
    _assert_parity(load_adapter(path), peft_model)


def test_non_default_adapter_sub_folder(tmp_path):
    peft_model = get_peft_model(
        _toy(), LoraConfig(r=2, target_modules=["q"]), adapter_name="styled"
    )
    _perturb(peft_model)
    peft_model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "styled" / WEIGHTS_NAME).is_file()
    with pytest.raises(AdapterLoadError, match="styled"):
        load_adapter(tmp_path / "saved")
    adapter = load_adapter(tmp_path / "saved" / "styled")
    expected = _peft_deltas(peft_model, "styled")
    for name, dw in expected.items():
        torch.testing.assert_close(adapter.delta(name), dw)


def test_modules_to_save_and_lora_bias_are_reported(tmp_path):
    config = LoraConfig(r=2, target_modules=["q"], modules_to_save=["head"], lora_bias=True)
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    text = " ".join(adapter.warnings)
    assert "modules_to_save" in text and "head" in text
    assert "lora_B.bias" in text and "lora_bias" in text


def test_pissa_init_is_flagged(tmp_path):
    config = LoraConfig(r=2, target_modules=["q"], init_lora_weights="pissa")
    peft_model, path = _saved(tmp_path, _toy(), config)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    assert any("pissa" in w for w in adapter.warnings)


def test_trainable_tokens_are_reported(tmp_path):
    config = LoraConfig(r=2, target_modules=["c_attn"], trainable_token_indices=[1, 3])
    peft_model, path = _saved(tmp_path, _gpt2(), config, save_embedding_layers=False)
    adapter = load_adapter(path)
    _assert_parity(adapter, peft_model)
    assert any("trainable" in w for w in adapter.warnings)


def test_dora_adapter_is_refused(tmp_path):
    _, path = _saved(tmp_path, _toy(), LoraConfig(r=2, target_modules=["q"], use_dora=True))
    with pytest.raises(AdapterLoadError, match="use_dora"):
        load_adapter(path)


def test_conv_adapter_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    _, path = _saved(tmp_path, model, LoraConfig(r=2, target_modules=["0"]))
    with pytest.raises(AdapterLoadError, match="Conv"):
        load_adapter(path)


# --------------------------------------------------------------------------------------------
# Round trip: our save_adapter -> PeftModel.from_pretrained
# --------------------------------------------------------------------------------------------


def _random_modules(shapes: dict, *, transposed: bool = False, seed: int = 0) -> dict:
    """``name -> (d_out, d_in, r, kind)`` to random scale-folded factors."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (d_out, d_in, r, kind) in shapes.items():
        B = torch.randn(d_out, r, generator=g) * 0.2
        A = torch.randn(r, d_in, generator=g) * 0.2
        flipped = transposed or kind == "embedding"
        out[name] = LoraModule(B=B, A=A, kind=kind, transposed=flipped)
    return out


def _apply_dense(model: nn.Module, modules: dict) -> nn.Module:
    """Independent reference: a copy of ``model`` with ``W += ΔW`` written in by hand."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, mod in modules.items():
            weight = ref.get_submodule(name).weight  # base layout
            weight += mod.delta()
    return ref


def test_round_trip_toy_mixed_ranks_through_peft(tmp_path):
    modules = _random_modules(
        {
            "emb": (12, 20, 5, "embedding"),
            "layers.0.q": (12, 12, 3, "linear"),
            "layers.1.v": (24, 12, 7, "linear"),
            "proj.1": (12, 24, 1, "linear"),
            "head": (5, 12, 2, "linear"),
        }
    )
    path = save_adapter(tmp_path / "ours", modules, base_model="toy", extra_files={"r.md": "x"})
    base = _toy(seed=3).eval()
    ids = torch.randint(0, 20, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _apply_dense(base, modules)(ids)
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), path).eval()
        got = peft_model(ids)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for name, dw in _peft_deltas(peft_model).items():
        torch.testing.assert_close(dw, modules[name].delta(), rtol=1e-6, atol=1e-7)
    back = load_adapter(path)
    assert list(back.modules) == ["emb", "head", "layers.0.q", "layers.1.v", "proj.1"]
    for name, mod in modules.items():
        assert torch.equal(back.modules[name].A, mod.A) and torch.equal(back.modules[name].B, mod.B)
        assert back.modules[name].kind == mod.kind
        assert back.modules[name].transposed == mod.transposed
    assert back.config.base_model == "toy" and (path / "r.md").read_text() == "x"


def test_round_trip_gpt2_transposed_through_peft(tmp_path):
    modules = _random_modules(
        {
            "transformer.h.0.attn.c_attn": (96, 32, 4, "linear"),
            "transformer.h.0.mlp.c_fc": (128, 32, 2, "linear"),
            "transformer.h.0.mlp.c_proj": (32, 128, 6, "linear"),
        },
        transposed=True,
    )
    path = save_adapter(tmp_path / "gpt2", modules, task_type="CAUSAL_LM")
    base = _gpt2(seed=5)
    ids = torch.randint(0, 50, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _apply_dense(base, modules)(ids).logits
        peft_model = PeftModel.from_pretrained(copy.deepcopy(base), path).eval()
        got = peft_model(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    back = load_adapter(path)
    assert back.config.fan_in_fan_out and back.config.task_type == "CAUSAL_LM"
    for name, mod in modules.items():
        assert torch.equal(back.modules[name].B, mod.B) and back.modules[name].transposed


def test_pattern_lookup_agrees_with_peft_get_pattern_key():
    import random

    from peft.utils.other import get_pattern_key

    from merging_core.io import pattern_value

    rng = random.Random(0)
    parts = ["model", "layers", "0", "1", "12", "q_proj", "v_proj", "attn", "mlp", "up"]
    keys = ["q_proj", "layers.1.q_proj", r"layers\.\d+\.v_proj", "attn.q_proj", "1.up", "proj"]
    keys += ["mlp.up", "model.layers.0.attn.v_proj", r".*\.0\..*", "layers"]
    for _ in range(300):
        path = ".".join(rng.choice(parts) for _ in range(rng.randint(1, 5)))
        pattern = {k: i for i, k in enumerate(rng.sample(keys, rng.randint(0, 5)))}
        peft_key = get_pattern_key(pattern.keys(), path)
        assert pattern_value(pattern, path, default=-1) == pattern.get(peft_key, -1), (
            path,
            pattern,
        )


def test_round_trip_with_names_that_collide_as_regexes(tmp_path):
    """``a.b`` read as a regex also matches ``a_b``, and ``q`` is a suffix of ``blk.q``."""
    model = nn.Module()
    model.a_b = nn.Linear(4, 4)
    model.a = nn.ModuleDict({"b": nn.Linear(4, 4)})
    model.q = nn.Linear(4, 4)
    model.blk = nn.ModuleDict({"q": nn.Linear(4, 4)})
    modules = _random_modules(
        {
            "a_b": (4, 4, 3, "linear"),
            "a.b": (4, 4, 1, "linear"),
            "q": (4, 4, 2, "linear"),
            "blk.q": (4, 4, 4, "linear"),
        }
    )
    path = save_adapter(tmp_path / "tricky", modules)
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), path)
    deltas = _peft_deltas(peft_model)
    assert set(deltas) == set(modules)
    for name, mod in modules.items():
        torch.testing.assert_close(deltas[name], mod.delta(), rtol=1e-6, atol=1e-7)
