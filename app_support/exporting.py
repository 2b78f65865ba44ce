"""Exporting the current merge: PEFT adapter + recipe + model card into a folder, then a zip.

The writing itself is :func:`merging_core.export.export_merge` (atomic, refuses an existing
folder unless ``overwrite``); this module only builds the recipe and zips the written folder for
the browser download.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from app_support.library import feature
from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult
from merging_core.methods import get_method


def default_folder(result: MergeResult) -> str:
    """A readable default target: ``merged/<method>-<first adapters>``."""
    names = "-".join(n.replace("/", "_") for n in result.adapter_names[:3])
    more = f"-and-{len(result.adapter_names) - 3}" if len(result.adapter_names) > 3 else ""
    return str(Path("merged") / f"{result.method}-{names}{more}")


def export(
    result: MergeResult,
    adapter_set: AdapterSet,
    folder: str,
    *,
    rank: int | None,
    overwrite: bool,
) -> Any:
    """Write the merge to ``folder``; returns the library's export report.

    Raises:
        ValueError: an empty folder, an existing folder without ``overwrite``, a bad rank, or
            inputs that do not match the merge.
    """
    if not folder.strip():
        raise ValueError("choose a folder to export into")
    target = Path(folder.strip()).expanduser()
    if target.exists() and not overwrite:
        raise ValueError(
            f"{target} already exists. Tick **Replace the folder if it exists** to overwrite it, "
            "or choose another folder."
        )
    export_mod, recipe_mod = feature("export"), _recipe_module()
    picked = adapter_set.subset([adapter_set.names.index(n) for n in result.adapter_names])
    base = picked.adapters[0].config.base_model
    recipe = recipe_mod.build_recipe(
        result, inputs=recipe_mod.recipe_inputs(picked), rank=rank, base_model=base
    )
    return export_mod.export_merge(
        result,
        Path(folder.strip()).expanduser(),
        rank=rank,
        base_model=base,
        overwrite=overwrite,
        recipe=recipe,
    )


def describe_params(result: MergeResult) -> list[str]:
    """``name = value`` per parameter in plain words; per-adapter weights listed by adapter."""
    info = get_method(result.method)
    lines = []
    for name, value in result.params.items():
        kind = info.param(name).kind if name in info.param_names else ""
        if kind == "weights":
            value = (
                "1 for every adapter (default)" if value is None
                else ", ".join(f"{a} {float(v):g}"
                               for a, v in zip(result.adapter_names, value, strict=True))
            )  # fmt: skip
        lines.append(f"{name.replace('_', ' ')} = {value}")
    return lines


def _recipe_module() -> Any:
    from merging_core import recipe

    return recipe


def zip_folder(folder: str | Path) -> bytes:
    """The files of an exported adapter folder as an in-memory zip (flat, folder name as root)."""
    root = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, arcname=str(Path(root.name) / path.relative_to(root)))
    return buffer.getvalue()
