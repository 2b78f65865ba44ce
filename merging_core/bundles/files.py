"""The small reader of a bundle's own shipped files (manifest, weights, heads, arrays).

Adapters are read by :mod:`merging_core.io` (``load_adapter``); this module only reads the
bundle-specific files that sit beside them, and only under the bundle's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

SHIPPED = Path(__file__).resolve().parents[2] / "sample_adapters"


def bundle_root(name: str) -> Path:
    """The folder of the shipped bundle ``name``; ``KeyError`` naming the known bundles."""
    root = SHIPPED / name
    if not (root / "manifest.json").is_file():
        known = sorted(p.name for p in SHIPPED.glob("*") if (p / "manifest.json").is_file())
        raise KeyError(f"no sample bundle named {name!r}; shipped bundles are {known}")
    return root


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing paths that leave the bundle folder."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents and path != root.resolve():
        raise ValueError(f"bundle file {relative!r} points outside the bundle folder {root}")
    return path


def read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text())


def read_tensors(root: Path, relative: str) -> dict[str, torch.Tensor]:
    """A safetensors file of the bundle as a dict of tensors."""
    return load_file(str(inside(root, relative)))


def read_arrays(root: Path, relative: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file of the bundle (decompressed eagerly)."""
    with np.load(inside(root, relative)) as data:
        return {k: data[k] for k in data.files}


def write_manifest(root: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``root/manifest.json`` (creating ``root``); refuses to replace one unless asked."""
    target = root / "manifest.json"
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists; pass overwrite to replace it")
    root.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target
