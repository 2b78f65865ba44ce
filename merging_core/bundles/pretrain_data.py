"""The broad pretraining mix of the vision8 base encoder: clean, simple versions of the concepts.

Five families, each a set of captioned concepts: upright digits (scikit-learn glyphs, bright on
dark), plain shapes, axis-aligned black-and-white textures, white dots on black (counts) and
colour fields. The task generators in :mod:`merging_core.bundles.tasks` draw *shifted* versions
(clutter, rotation, inversion, new layouts), so the base model's zero-shot accuracy is useful but
well below what a task adapter reaches, as for CLIP on the paper's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from merging_core.bundles import render as R
from merging_core.bundles import tasks as T

COLOURS = tuple(R.PALETTE)


@dataclass(frozen=True)
class Family:
    """Captioned concepts of one kind. ``templates`` have one ``{}`` for the concept name."""

    name: str
    concepts: tuple[str, ...]
    templates: tuple[str, ...]


FAMILIES: tuple[Family, ...] = (
    Family("digit", T.DIGIT_WORDS, ("a photo of the digit {}.", "the number {}.")),
    Family("shape", R.SHAPES, ("a {} shape.", "a drawing of a {}.")),
    Family("texture", T.TEXTURES, ("a {} texture.", "a {} surface.")),
    Family("dots", T.COUNTS, ("{} dots.", "a picture of {} dots.")),
    Family("colour", COLOURS, ("a {} image.", "something {}.")),
)


def concept_prompts() -> list[list[str]]:
    """Per concept (families in order), its captions."""
    return [[t.format(c) for t in f.templates] for f in FAMILIES for c in f.concepts]


def _draw_family(name: str, k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n, size = len(k), T.SIZE
    dark = R.random_rgb(n, gen, 0.0, 0.15).expand(n, 3, size, size)
    if name == "digit":
        glyphs = T.sample_digits(k, gen, "train")
        mask = T._digit_mask(glyphs, gen, angle=(-0.15, 0.15), scale=(0.6, 0.8), shift=0.08)
        return R.compose(dark, mask, R.random_rgb(n, gen, 0.6, 1.0))
    if name == "shape":
        u, v = R.local_coords(
            n,
            size,
            angle=torch.zeros(n),
            scale=R.uniform(n, 0.5, 0.75, gen),
            shift=R.uniform(2 * n, -0.1, 0.1, gen).view(n, 2),
        )
        return R.compose(dark, T.shape_masks(k, u, v), R.random_rgb(n, gen, 0.5, 1.0))
    if name == "texture":
        return T.texture_masks(k, gen, clean=True).expand(n, 3, size, size)
    if name == "dots":
        return T.dot_masks(k + 1, gen, radius=(0.12, 0.14)).expand(n, 3, size, size)
    if name == "colour":
        base = R.colours(COLOURS, k).expand(n, 3, size, size)
        return (base * (0.8 + 0.4 * R.smooth_noise(n, size, 4, gen))).clamp(0, 1)
    raise KeyError(f"unknown pretraining family {name!r}")


def draw_pretrain(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pretraining images ``(n, 3, S, S)`` in [0, 1] and their concept indices ``(n,)``.

    Families are equally likely; concepts uniform within a family.
    """
    fam = torch.randint(len(FAMILIES), (n,), generator=gen)
    images = torch.zeros(n, 3, T.SIZE, T.SIZE)
    concept = torch.zeros(n, dtype=torch.int64)
    offset = 0
    for f, family in enumerate(FAMILIES):
        where = (fam == f).nonzero().flatten()
        k = torch.randint(len(family.concepts), (len(where),), generator=gen)
        if len(where):
            images[where] = _draw_family(family.name, k, gen)
        concept[where] = offset + k
        offset += len(family.concepts)
    return R.pixel_noise(images, R.uniform(n, 0.0, 0.03, gen), gen), concept
