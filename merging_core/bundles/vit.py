"""A tiny CLIP-style vision transformer: the base encoder of the ``vision8`` sample bundle.

The attention projections are plain ``nn.Linear`` modules named like CLIP's
(``blocks.{i}.attn.q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``), so LoRA adapters (and
forward hooks of data-driven merges) address them by their module path.

Input: ``(N, C, H, W)`` float images in ``[0, 1]``; output: ``(N, d_embed)`` image embeddings
(unnormalised; heads normalise them, as CLIP does).

Two exact savings in the forward (the same function as the plain layer-by-layer forward, to
float32 round-off; ``tests/bundles/test_vit_fast.py``):

* q/k/v run as one matmul with the three weights stacked, whenever each projection's output is
  ``linear(x, weight, bias)`` (plain, or patched with a dense ``W + B A`` by
  :func:`merging_core.lowrank_forward.patched`); a projection with a hook (a factored update, a
  capture) is called on its own.
* In the last block only the class token's output reaches the features, so its queries,
  attention output, ``out_proj`` and MLP run for the class token alone (keys and values still
  for every token) — unless something observes that block's modules (a capture hook).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from merging_core.lowrank_forward import linear_weight, observed


@dataclass(frozen=True)
class ViTConfig:
    """Shape of the encoder.

    Attributes:
        image_size: H = W of the input. patch_size: side of a square patch.
        channels: C of the input. width: token dimension d. depth: number of blocks.
        heads: attention heads (``width % heads == 0``). mlp_ratio: hidden size / width.
        embed_dim: output dimension (= the text embedding dimension for zero-shot heads).
    """

    image_size: int = 32
    patch_size: int = 8
    channels: int = 3
    width: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: int = 2
    embed_dim: int = 384

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head self-attention with CLIP-named projections (all ``(d, d)`` Linears)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, *, cls_only: bool = False) -> torch.Tensor:
        """``(N, T, d)`` -> ``(N, T, d)``; with ``cls_only`` ``(N, 1, d)``: the class token's
        output alone (its query against every token's key and value)."""
        n, t, d = x.shape  # (N, T, d)
        q, k, v = self._qkv(x, cls_only)
        tq = q.shape[1]

        def split(z: torch.Tensor, tokens: int) -> torch.Tensor:  # (N, T, d) -> (N, h, T, d/h)
            return z.view(n, tokens, self.heads, d // self.heads).transpose(1, 2)

        out = _attention(split(q, tq), split(k, t), split(v, t))
        return self.out_proj(out.transpose(1, 2).reshape(n, tq, d))  # (N, h, tq, d/h) -> (N, tq, d)

    def _qkv(self, x: torch.Tensor, cls_only: bool):
        """Queries (every token, or the class token's), keys and values: one stacked matmul
        when all three projections are plain ``linear(x, W, b)`` (see the module docstring)."""
        layers = (self.q_proj, self.k_proj, self.v_proj)
        weights = [linear_weight(layer) for layer in layers]
        q_in = x[:, :1] if cls_only else x
        if any(w is None for w in weights) or any(layer.bias is None for layer in layers):
            return self.q_proj(q_in), self.k_proj(x), self.v_proj(x)
        biases = [layer.bias for layer in layers]
        if cls_only:  # keys and values for every token, the query for the class token only
            k, v = F.linear(x, torch.cat(weights[1:]), torch.cat(biases[1:])).chunk(2, dim=-1)
            return F.linear(q_in, weights[0], biases[0]), k, v
        return F.linear(x, torch.cat(weights), torch.cat(biases)).chunk(3, dim=-1)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ / √d_h) v`` per head, ``(N, h, T_q, d_h)``.

    Under CPU bfloat16 autocast the core runs in float32 and returns float32 (it is ~1 % of the
    FLOPs, and the CPU kernel's bfloat16 backward measured ~7× slower than its float32 one at
    these sizes); the projections around it stay in bfloat16.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and q.dtype != torch.float32:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return F.scaled_dot_product_attention(q, k, v)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: torch.Tensor, *, cls_only: bool = False) -> torch.Tensor:
        """``(N, T, d)`` -> ``(N, T, d)``, or with ``cls_only`` the class token's ``(N, 1, d)``."""
        x = (x[:, :1] if cls_only else x) + self.attn(self.norm1(x), cls_only=cls_only)
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding + class token + ``depth`` blocks + projection to ``embed_dim``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Linear(c.channels * c.patch_size**2, c.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, c.num_patches + 1, c.width))
        self.blocks = nn.ModuleList(Block(c.width, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.width)
        self.proj = nn.Linear(c.width, c.embed_dim, bias=False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` in [0, 1] -> ``(N, 1 + P, d)`` tokens entering block 0.

        Nothing here is touched by LoRA on the attention projections, so evaluation caches it.
        """
        p = self.config.patch_size
        x = (images - 0.5) / 0.25
        n, ch, _, _ = x.shape
        patches = x.unfold(2, p, p).unfold(3, p, p)  # (N, C, H/p, W/p, p, p)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n, -1, ch * p * p)  # (N, P, C p p)
        tokens = self.patch_embed(patches)  # (N, P, d)
        cls = self.cls_token.expand(n, -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def forward(self, images: torch.Tensor, *, embedded: bool = False) -> torch.Tensor:
        """``(N, C, H, W)`` images (or, with ``embedded=True``, tokens from :meth:`embed`) ->
        ``(N, embed_dim)`` features."""
        x = images if embedded else self.embed(images)
        *body, last = self.blocks
        for block in body:
            x = block(x)
        x = last(x, cls_only=not observed(last))  # (N, 1, d) unless someone watches the block
        return self.proj(self.norm(x[:, 0]))  # (N, d) -> (N, embed_dim)


def lora_target_paths(config: ViTConfig) -> list[str]:
    """Module paths of every attention projection, in block order (the LoRA targets)."""
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    return [f"blocks.{i}.attn.{n}" for i in range(config.depth) for n in names]
