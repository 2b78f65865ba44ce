"""A tiny CLIP-style vision transformer: the base encoder of the ``vision8`` sample bundle.

The attention projections are plain ``nn.Linear`` modules named like CLIP's
(``blocks.{i}.attn.q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``), so LoRA adapters (and
forward hooks of data-driven merges) address them by their module path.

Input: ``(N, C, H, W)`` float images in ``[0, 1]``; output: ``(N, d_embed)`` image embeddings
(unnormalised; heads normalise them, as CLIP does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape  # (N, T, d)

        def split(z: torch.Tensor) -> torch.Tensor:  # (N, T, d) -> (N, heads, T, d / heads)
            return z.view(n, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, T, d / heads)
        return self.out_proj(out.transpose(1, 2).reshape(n, t, d))


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
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
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, 0]))  # (N, d) -> (N, embed_dim)


def lora_target_paths(config: ViTConfig) -> list[str]:
    """Module paths of every attention projection, in block order (the LoRA targets)."""
    names = ("q_proj", "k_proj", "v_proj", "out_proj")
    return [f"blocks.{i}.attn.{n}" for i in range(config.depth) for n in names]
