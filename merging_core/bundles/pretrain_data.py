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


# v2 recipe: the same concepts with more varied captions (a broader caption distribution).
EXTRA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "digit": ("a handwritten {}.", "a picture of the numeral {}.", "the digit {} in a photo."),
    "shape": ("a {}.", "a photo of a {} object.", "an icon shaped like a {}."),
    "texture": ("a {} pattern.", "a close-up of a {} fabric.", "something with a {} look."),
    "dots": ("a photo of {} spots.", "there are {} round things.", "{} circles."),
    "colour": ("a photo that is mostly {}.", "the colour {}.", "a {} scene."),
}


def concept_prompts(recipe: str = "v1") -> list[list[str]]:
    """Per concept (families in order), its captions (``"v2"``: more captions per concept)."""

    def templates(f: Family) -> tuple[str, ...]:
        return f.templates + (EXTRA_TEMPLATES[f.name] if recipe == "v2" else ())

    return [[t.format(c) for t in templates(f)] for f in FAMILIES for c in f.concepts]


def concept_families() -> torch.Tensor:
    """``(K,)`` the family index of each concept, in :func:`concept_prompts` order."""
    return torch.cat([torch.full((len(f.concepts),), i) for i, f in enumerate(FAMILIES)])


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


def _backdrop(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """v2: a plain or mottled backdrop, dark or light, and an ink colour that contrasts with it."""
    size = T.SIZE
    light = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1, 1)
    dark_bg = R.random_rgb(n, gen, 0.0, 0.3)
    light_bg = R.random_rgb(n, gen, 0.65, 1.0)
    bg = torch.where(light, light_bg, dark_bg).expand(n, 3, size, size)
    mottle = (torch.rand(n, generator=gen) < 0.4).float().view(n, 1, 1, 1)
    bg = (bg + mottle * 0.25 * (R.smooth_noise(n, size, 4, gen, ch=3) - 0.5)).clamp(0, 1)
    ink = torch.where(light, R.random_rgb(n, gen, 0.0, 0.35), R.random_rgb(n, gen, 0.6, 1.0))
    return bg, ink


def _draw_family_v2(name: str, k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """v2: the concepts under broad, mild variation (pose, polarity, colour, backdrop), so the
    base meets the tasks' shifts as unfamiliar rather than as something it is sure about."""
    n, size = len(k), T.SIZE
    bg, ink = _backdrop(n, gen)
    if name == "digit":
        glyphs = T.sample_digits(k, gen, "train", source="mnist5k")
        mask = T._digit_mask(glyphs, gen, angle=(-0.35, 0.35), scale=(0.5, 0.9), shift=0.12)
        return R.compose(bg, mask, ink)
    if name == "shape":
        u, v = R.local_coords(
            n,
            size,
            angle=R.uniform(n, -0.3, 0.3, gen),
            scale=R.uniform(n, 0.4, 0.75, gen),
            shift=R.uniform(2 * n, -0.2, 0.2, gen).view(n, 2),
        )
        return R.compose(bg, T.shape_masks(k, u, v), ink)
    if name == "texture":
        mask = T.texture_masks(k, gen, clean=False)
        return R.compose(bg, mask, ink)
    if name == "dots":
        return R.compose(bg, T.dot_masks(k + 1, gen, radius=(0.1, 0.16)), ink)
    if name == "colour":
        base = R.colours(COLOURS, k).expand(n, 3, size, size)
        return (base * (0.7 + 0.6 * R.smooth_noise(n, size, 4, gen))).clamp(0, 1)
    raise KeyError(f"unknown pretraining family {name!r}")


def draw_pretrain(
    n: int, gen: torch.Generator, recipe: str = "v1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pretraining images ``(n, 3, S, S)`` in [0, 1] and their concept indices ``(n,)``.

    Families are equally likely; concepts uniform within a family. ``recipe`` ``"v2"`` draws
    the broader mix (real MNIST digits, both polarities, varied poses, colours and backdrops).
    """
    draw = _draw_family_v2 if recipe == "v2" else _draw_family
    fam = torch.randint(len(FAMILIES), (n,), generator=gen)
    images = torch.zeros(n, 3, T.SIZE, T.SIZE)
    concept = torch.zeros(n, dtype=torch.int64)
    offset = 0
    for f, family in enumerate(FAMILIES):
        where = (fam == f).nonzero().flatten()
        k = torch.randint(len(family.concepts), (len(where),), generator=gen)
        if len(where):
            images[where] = draw(family.name, k, gen)
        concept[where] = offset + k
        offset += len(family.concepts)
    noise = 0.06 if recipe == "v2" else 0.03
    return R.pixel_noise(images, R.uniform(n, 0.0, noise, gen), gen), concept
