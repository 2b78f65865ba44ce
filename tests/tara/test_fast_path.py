"""The fast vision8 forward learns the same φ as the plain one; the loop's thread setting is
applied for the run only."""

import pytest
import torch
from torch.nn import functional as F

from merging_core.adaptive.cache import AdaptiveCache
from merging_core.adaptive.loop import TrainConfig, train_coefficients
from merging_core.bundles import load_bundle
from merging_core.bundles.vit import TinyViT
from merging_core.merge import merge


def plain_forward(self: TinyViT, images: torch.Tensor, *, embedded: bool = False) -> torch.Tensor:
    """The forward before the exact savings: every token, each projection its own module."""
    x = images if embedded else self.embed(images)
    for block in self.blocks:
        attn, h = block.attn, block.norm1(x)
        n, t, d = h.shape

        def split(z, n=n, t=t, heads=attn.heads, d=d):
            return z.view(n, t, heads, d // heads).transpose(1, 2)

        q, k, v = split(attn.q_proj(h)), split(attn.k_proj(h)), split(attn.v_proj(h))
        x = x + attn.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
                              .reshape(n, t, d))  # fmt: skip
        x = x + block.mlp(block.norm2(x))
    return self.proj(self.norm(x[:, 0]))


@pytest.fixture(scope="module")
def vision8():
    bundle = load_bundle("vision8")
    return bundle, bundle.adapter_set().subset([1, 6]), bundle.task_data("cpu"), AdaptiveCache()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tara_b", "adamerging_layer"])
def test_fast_forward_learns_the_same_phi_as_the_plain_one(vision8, monkeypatch, method):
    """Both runs share one cache (banks, anchors z_i): the forward's equality is checked in
    tests/bundles/test_vit_fast.py; here the loop's gradients through it."""
    bundle, adapters, data, cache = vision8
    kw = dict(task_data=data, cache=cache, steps=3, seed=0, precision="float32")  # exact
    fast = merge(adapters, method, **kw)
    monkeypatch.setattr(TinyViT, "forward", plain_forward)
    plain = merge(adapters, method, **kw)
    for key, value in plain.state.items():
        torch.testing.assert_close(fast.state[key], value, rtol=0, atol=1e-6)
    for a, b in zip(fast.run["losses"], plain.run["losses"], strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_threads_apply_to_the_loop_only(monkeypatch):
    from tests.tara.conftest import make_context

    data = make_context()
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self):
            seen.append(torch.get_num_threads())
            return {}

    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    config = TrainConfig(steps=2, lr=1e-3, entropy_scale=1.0, threads=target)
    objective = lambda H: H.sum()  # noqa: E731
    monkeypatch.setattr(
        "merging_core.adaptive.loop._one_step",
        lambda data, tasks, streams, banks, coeffs, *a: (coeffs(), (0.0, []))[1],
    )
    train_coefficients(data, data.task_names, {}, Spy(), objective, config=config,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert seen == [target, target] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        train_coefficients(data, data.task_names, {}, Spy(), objective,
                           config=TrainConfig(steps=1, lr=1e-3, entropy_scale=1.0, threads=-1),
                           generator=torch.Generator())  # fmt: skip
