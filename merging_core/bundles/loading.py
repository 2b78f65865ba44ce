"""Load a bundle by name or folder: ``manifest.json``'s ``kind`` picks the loader.

Kinds: ``tiny-vit-zero-shot`` (vision8, the default for manifests written before kinds existed)
and ``transformers-classification`` (a transformers sequence classifier with PEFT ``SEQ_CLS``
adapters and JSONL task data; see :mod:`merging_core.bundles.transformers_kind`). A new model
family is a new loader here, not edits across the house.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from merging_core.bundles import files
from merging_core.bundles.bundle import KIND as VISION_KIND
from merging_core.bundles.bundle import load_vision_bundle
from merging_core.bundles.transformers_kind import KIND as TRANSFORMERS_KIND
from merging_core.bundles.transformers_kind import load_transformers_bundle

LOADERS: dict[str, Callable[[Path, dict[str, Any]], Any]] = {
    VISION_KIND: load_vision_bundle,
    TRANSFORMERS_KIND: load_transformers_bundle,
}
DEFAULT_KIND = VISION_KIND


def load_bundle_from(root: str | Path) -> Any:
    """Load the bundle in folder ``root``.

    Raises:
        ValueError: an unknown ``kind`` (the message lists the known ones), or a bad manifest.
        FileNotFoundError: no ``manifest.json`` in ``root``.
    """
    root = Path(root)
    manifest = files.read_manifest(root)
    kind = manifest.get("kind", DEFAULT_KIND)
    if kind not in LOADERS:
        raise ValueError(
            f"{root / 'manifest.json'}: unknown bundle kind {str(kind)[:80]!r}; known kinds are "
            f"{sorted(LOADERS)}"
        )
    return LOADERS[kind](root, manifest)


def load_bundle(name: str = "vision8") -> Any:
    """A shipped bundle by name (``vision8``, ``nli6``), or a bundle folder by path."""
    path = Path(name)
    if (path / "manifest.json").is_file():
        return load_bundle_from(path)
    return load_bundle_from(files.bundle_root(name))


def shipped_bundles() -> list[str]:
    """Names of the bundles shipped with the project."""
    return sorted(p.name for p in files.SHIPPED.glob("*") if (p / "manifest.json").is_file())
