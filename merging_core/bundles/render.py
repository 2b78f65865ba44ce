"""Batched procedural drawing for the vision8 tasks: glyph placement, shapes, textures, clutter.

Everything works on float images in ``[0, 1]``: masks ``(N, 1, S, S)``, colours ``(N, 3, 1, 1)``,
images ``(N, 3, S, S)``. Randomness comes only from the explicit ``torch.Generator`` arguments.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.95, 0.95, 0.95),
    "purple": (0.55, 0.15, 0.70),
    "orange": (0.95, 0.50, 0.10),
    "gray": (0.50, 0.50, 0.50),
}


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """``(n,)`` floats uniform in ``[low, high)``."""
    return low + (high - low) * torch.rand(n, generator=gen)


def grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in ``[-1, 1]``: ``(xs, ys)`` each ``(1, 1, S, S)``."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return xs[None, None], ys[None, None]


def local_coords(
    n: int, size: int, *, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates in each object's frame: rotate by ``angle`` (rad), divide by ``scale``.

    Args:
        angle, scale: ``(n,)``. shift: ``(n, 2)`` object centre in ``[-1, 1]``.

    Returns:
        ``(u, v)`` each ``(n, 1, S, S)``.
    """
    xs, ys = grid(size)
    dx = xs - shift[:, 0].view(n, 1, 1, 1)
    dy = ys - shift[:, 1].view(n, 1, 1, 1)
    cos, sin = torch.cos(angle).view(n, 1, 1, 1), torch.sin(angle).view(n, 1, 1, 1)
    s = scale.view(n, 1, 1, 1)
    return (cos * dx + sin * dy) / s, (-sin * dx + cos * dy) / s


def place_glyphs(
    glyphs: torch.Tensor,
    size: int,
    *,
    angle: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
) -> torch.Tensor:
    """Draw ``(n, 1, h, w)`` glyphs (values in [0, 1]) into ``(n, 1, S, S)`` masks.

    ``scale`` is the glyph's half-width in image coordinates (1 = fills the image).
    """
    n = glyphs.shape[0]
    u, v = local_coords(n, size, angle=angle, scale=scale, shift=shift)
    sample_at = torch.cat([u, v], dim=1).permute(0, 2, 3, 1)  # (n, S, S, 2)
    return F.grid_sample(glyphs, sample_at, mode="bilinear", align_corners=False)


def soft(dist: torch.Tensor, edge: float = 0.08) -> torch.Tensor:
    """Signed distance (negative inside) -> soft mask in [0, 1]."""
    return torch.sigmoid(-dist / edge)


SHAPES = ("circle", "triangle", "square", "diamond", "octagon", "cross")


def shape_distance(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance of a unit ``kind`` in local coordinates (negative inside)."""
    au, av = u.abs(), v.abs()
    if kind == "circle":
        return torch.sqrt(u**2 + v**2) - 1.0
    if kind == "square":
        return torch.maximum(au, av) - 0.85
    if kind == "diamond":
        return (au + av) / math.sqrt(2) - 0.8
    if kind == "octagon":
        return torch.maximum(torch.maximum(au, av), (au + av) / math.sqrt(2)) - 0.9
    if kind == "triangle":  # apex up; edges at 60 degrees
        return torch.maximum(v - 0.6, (math.sqrt(3) * au - v) / 2 - 0.45)
    if kind == "cross":
        bar = 0.32
        return torch.minimum(torch.maximum(au - 1.0, av - bar), torch.maximum(au - bar, av - 1.0))
    raise KeyError(f"unknown shape {kind!r}; known shapes are {list(SHAPES)}")


def colours(names: list[str] | tuple[str, ...], idx: torch.Tensor) -> torch.Tensor:
    """``(n,)`` indices into ``names`` -> ``(n, 3, 1, 1)`` RGB."""
    table = torch.tensor([PALETTE[c] for c in names])  # (k, 3)
    return table[idx].view(-1, 3, 1, 1)


def random_rgb(n: int, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """``(n, 3, 1, 1)`` random colours with channels in ``[low, high)``."""
    return (low + (high - low) * torch.rand(n, 3, generator=gen)).view(n, 3, 1, 1)


def smooth_noise(n: int, size: int, cells: int, gen: torch.Generator, ch: int = 1) -> torch.Tensor:
    """Low-frequency noise ``(n, ch, S, S)`` in [0, 1]: a ``cells × cells`` grid, upsampled."""
    coarse = torch.rand(n, ch, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def clutter_background(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Coloured gradient + blotches: ``(n, 3, S, S)``."""
    xs, ys = grid(size)
    a, b = random_rgb(n, gen, 0.1, 0.9), random_rgb(n, gen, 0.1, 0.9)
    t = uniform(n, 0, 2 * math.pi, gen).view(n, 1, 1, 1)
    ramp = (torch.cos(t) * xs + torch.sin(t) * ys + 1) / 2  # (n, 1, S, S)
    base = a * ramp + b * (1 - ramp)
    blotch = smooth_noise(n, size, 5, gen, ch=3) - 0.5
    return (base + 0.5 * blotch).clamp(0, 1)


def pixel_noise(images: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise with per-image ``sigma`` ``(n,)`` and clip to [0, 1]."""
    noise = torch.randn(images.shape, generator=gen) * sigma.view(-1, 1, 1, 1)
    return (images + noise).clamp(0, 1)


def compose(background: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Paint ``colour`` ``(n, 3, 1, 1)`` through ``mask`` ``(n, 1, S, S)`` onto ``background``."""
    return background * (1 - mask) + colour * mask


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(n, 3, S, S)`` floats in [0, 1] -> uint8 (what is stored and what the tasks return)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
