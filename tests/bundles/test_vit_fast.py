"""The tiny ViT's exact savings (stacked q/k/v, class-token-only last block) compute the same
function as the plain layer-by-layer forward, with and without low-rank updates, and step aside
whenever a hook watches a module."""

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from merging_core.bundles.vit import TinyViT, ViTConfig, lora_target_paths
from merging_core.lowrank_forward import linear_weight, observed, patched

CONFIG = ViTConfig(image_size=16, patch_size=4, width=32, depth=3, heads=4, embed_dim=24)


def plain_forward(model: TinyViT, images: torch.Tensor) -> torch.Tensor:
    """Every block on every token, each projection called as a module (hooks fire)."""
    x = model.embed(images)
    for block in model.blocks:
        attn, h = block.attn, block.norm1(x)
        n, t, d = h.shape

        def split(z, n=n, t=t, heads=attn.heads, d=d):
            return z.view(n, t, heads, d // heads).transpose(1, 2)

        q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + attn.out_proj(out)
        x = x + block.mlp(block.norm2(x))
    return model.proj(model.norm(x[:, 0]))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinyViT(CONFIG)
    for p in m.parameters():
        p.data.normal_(0, 0.2)
        p.requires_grad_(False)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def updates(rank: int, *, grad: bool = False):
    g = torch.Generator().manual_seed(2)
    out = {}
    for path in lora_target_paths(CONFIG):
        B = 0.2 * torch.randn(32, rank, generator=g)
        A = (0.2 * torch.randn(rank, 32, generator=g)).requires_grad_(grad)
        out[path] = (B, A)
    return out


def test_plain_forward_matches(model, images):
    torch.testing.assert_close(model(images), plain_forward(model, images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("route", ["dense", "factored", "auto"])
def test_patched_forward_and_gradients_match(model, images, route):
    ups = updates(rank=4, grad=True)
    with patched(model, ups, route=route):
        fast = model(images)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), [ups["blocks.2.attn.q_proj"][1]])
    with patched(model, ups, route=route):
        ref = plain_forward(model, images)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), [ups["blocks.2.attn.q_proj"][1]])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-5)


def test_every_update_reaches_the_output(model, images):
    """Each of the 12 patched projections changes the features (none is skipped)."""
    base = model(images)
    for path, (B, A) in updates(rank=32).items():
        with patched(model, {path: (B, A)}, route="dense"):
            assert not torch.allclose(model(images), base, atol=1e-6), path


def test_functional_call_weights_match(model, images):
    """The bundle's evaluation swaps in ``W + ΔW`` with ``functional_call``."""
    paths = lora_target_paths(CONFIG)
    weights = {f"{p}.weight": model.get_submodule(p).weight + 0.05 for p in paths}
    fast = functional_call(model, weights, (model.embed(images),), {"embedded": True})
    copy = TinyViT(CONFIG)
    copy.load_state_dict({**model.state_dict(), **weights})
    torch.testing.assert_close(fast, plain_forward(copy, images), rtol=1e-5, atol=1e-5)


def test_capture_on_the_last_block_sees_every_token(model, images):
    """A capture hook on the last block sends it back to the plain all-token path."""
    seen: dict[str, list[torch.Tensor]] = {"blocks.2.attn.q_proj": [], "blocks.0.attn.v_proj": []}
    with patched(model, updates(rank=4), route="dense", capture=seen):
        fast = model(images)
    with patched(model, updates(rank=4), route="dense"):
        ref = plain_forward(model, images)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    assert seen["blocks.2.attn.q_proj"][0].shape == (6, 17, 32)
    assert seen["blocks.0.attn.v_proj"][0].shape == (6, 17, 32)


def test_linear_weight_and_observed(model):
    layer = model.get_submodule("blocks.1.attn.k_proj")
    assert linear_weight(layer) is layer.weight and not observed(model)
    B, A = torch.ones(32, 1), torch.ones(1, 32)
    with patched(model, {"blocks.1.attn.k_proj": (B, A)}, route="dense"):
        torch.testing.assert_close(linear_weight(layer), layer.weight + B @ A)
    with patched(model, {"blocks.1.attn.k_proj": (B, A)}, route="factored"):
        assert linear_weight(layer) is None  # a per-token hook: call the layer itself
        assert not observed(model)  # ... but nobody watches it
    handle = layer.register_forward_pre_hook(lambda m, a: None)
    try:
        assert linear_weight(layer) is None and observed(model.blocks[1])
        assert not observed(model.blocks[2])
    finally:
        handle.remove()
    assert linear_weight(layer) is layer.weight


def test_bfloat16_autocast_stays_close(model, images):
    ups = updates(rank=4)
    with patched(model, ups):
        ref = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(images)
    assert (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()
