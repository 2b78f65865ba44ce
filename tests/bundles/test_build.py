"""The build script's pieces on a toy-sized encoder: deterministic pretraining, peft adapters
that our loader and the manifest conventions accept; MiniLM heads (slow)."""

import pytest
import torch
from torch.nn import functional as F

from merging_core.bundles import pretrain_data, tasks, vision8
from merging_core.bundles.vit import ViTConfig, lora_target_paths
from merging_core.io import load_adapter

TOY = ViTConfig(depth=2, width=32, heads=2, embed_dim=16)


def _concept_heads() -> torch.Tensor:
    k = len(pretrain_data.concept_prompts())
    return F.normalize(torch.randn(k, 16, generator=torch.Generator().manual_seed(0)), dim=-1)


def test_pretraining_is_deterministic_under_a_seed():
    heads = _concept_heads()
    a, sa = vision8.pretrain(heads, config=TOY, steps=3, batch=8, seed=5)
    b, sb = vision8.pretrain(heads, config=TOY, steps=3, batch=8, seed=5)
    assert sa == sb
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_finetuned_adapter_is_saved_in_peft_format_and_read_by_our_loader(tmp_path):
    encoder, scale = vision8.pretrain(_concept_heads(), config=TOY, steps=1, batch=8, seed=0)
    head = F.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    train = tasks.generate("mnist", "train", 16, seed=0)
    model = vision8.finetune(encoder, head, scale, train, steps=2, batch=8, lr=1e-2, seed=0)
    vision8.save_adapter_dir(model, tmp_path / "mnist", "toy/base")
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    adapter = load_adapter(tmp_path / "mnist")
    assert adapter.name == "mnist" and adapter.config.base_model == "toy/base"
    assert sorted(adapter.modules) == sorted(lora_target_paths(TOY))
    assert all(m.rank == 16 for m in adapter.modules.values())
    # B starts at zero in PEFT; two steps of training must have moved it
    assert any(float(m.B.abs().max()) > 0 for m in adapter.modules.values())
    # the frozen base was copied, not trained
    assert torch.equal(
        encoder.blocks[0].attn.q_proj.weight,
        model.base_model.model.blocks[0].attn.q_proj.base_layer.weight,
    )


@pytest.mark.slow
def test_minilm_heads_are_normalised_and_semantic():
    from merging_core.bundles import text

    tok, lm = text.load_text_model()
    heads = text.class_heads([["the number three."], ["a striped texture."]], tok, lm)
    torch.testing.assert_close(heads.norm(dim=-1), torch.ones(2))
    probe = text.embed_sentences(["a photo of the digit three."], tok, lm)[0]
    assert float(probe @ heads[0]) > float(probe @ heads[1]) + 0.2
