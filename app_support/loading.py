"""Loading user adapters from a local folder or from uploaded files, through ``merging_core.io``.

The app never opens adapter files itself: paths and uploaded bytes go to the library's loader,
which reads safetensors only (pickle files are refused unopened). Results are cached per session
by path + modification time, or by the SHA-256 of the uploaded bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from app_support.library import feature_attr
from app_support.workset import LOAD_ERRORS
from merging_core.adapters import Adapter

CONFIG_FILE = "adapter_config.json"


@st.cache_resource(scope="session", max_entries=64, show_spinner="Loading adapter…")
def _load_path(path: str, stamp: float) -> Adapter:
    return feature_attr("io", "load_adapter")(path)


@st.cache_resource(scope="session", max_entries=64, show_spinner="Loading adapter…")
def _load_files(name: str, digest: str, _files: dict[str, bytes]) -> Adapter:
    return feature_attr("io", "load_adapter_from_files")(_files, name=name)


def adapter_folders(path: str) -> list[Path]:
    """``path`` itself if it is an adapter folder, else its sub-folders that are.

    Raises:
        FileNotFoundError: ``path`` does not exist. NotADirectoryError: it is a file.
        ValueError: it holds no adapter folder.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {path!r}")
    if not root.is_dir():
        raise NotADirectoryError(f"{path!r} is a file; give the adapter's folder")
    if (root / CONFIG_FILE).is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file())
    if not found:
        raise ValueError(f"{path!r} has no {CONFIG_FILE}, nor any sub-folder with one")
    return found


def load_from_path(path: str) -> tuple[list[Adapter], list[str]]:
    """Load one adapter folder, or every adapter folder inside ``path``; (adapters, errors)."""
    if feature_attr("io", "load_adapter") is None:
        return [], ["loading adapters needs merging_core.io, which is not in this build yet"]
    try:
        folders = adapter_folders(path.strip())
    except LOAD_ERRORS as err:
        return [], [str(err)]
    adapters, errors = [], []
    for folder in folders:
        try:
            adapters.append(_load_path(str(folder), folder.stat().st_mtime))
        except LOAD_ERRORS as err:
            errors.append(f"{folder.name}: {err}")
    return adapters, errors


def group_uploads(files: Sequence[Any], fallback_name: str) -> dict[str, dict[str, bytes]]:
    """Group uploaded files by their top folder (directory uploads) into adapter file maps.

    Loose files (no folder in their name) form one adapter called ``fallback_name``.

    Raises:
        ValueError: two files of one adapter share a name.
    """
    groups: dict[str, dict[str, bytes]] = {}
    for upload in files:
        parts = Path(upload.name).parts
        folder = parts[-2] if len(parts) > 1 else fallback_name
        files_of = groups.setdefault(folder, {})
        if parts[-1] in files_of:
            raise ValueError(f"adapter {folder!r} has two files named {parts[-1]!r}")
        files_of[parts[-1]] = upload.getvalue()
    return groups


def load_from_uploads(files: Sequence[Any], fallback_name: str) -> tuple[list[Adapter], list[str]]:
    """Load uploaded adapter files (one or several folders); (adapters, errors)."""
    if feature_attr("io", "load_adapter_from_files") is None:
        return [], ["loading adapters needs merging_core.io, which is not in this build yet"]
    try:
        groups = group_uploads(files, fallback_name.strip() or "uploaded")
    except ValueError as err:
        return [], [str(err)]
    adapters, errors = [], []
    for name, content in groups.items():
        digest = hashlib.sha256(b"".join(content[k] for k in sorted(content))).hexdigest()
        try:
            adapters.append(_load_files(name, digest, content))
        except LOAD_ERRORS as err:
            errors.append(f"{name}: {err}")
    return adapters, errors


def adapter_rows(adapters: Sequence[Adapter], bundle_names: Sequence[str]) -> list[dict[str, Any]]:
    """One table row per adapter: rank, α, rsLoRA, modules, base model, warnings."""
    rows = []
    for a in adapters:
        ranks = sorted(set(a.ranks.values()))
        rows.append(
            {
                "adapter": a.name,
                "source": "sample bundle" if a.name in bundle_names else (a.source or "upload"),
                "rank": ", ".join(map(str, ranks)),
                "α": a.config.lora_alpha,
                "rsLoRA": a.config.use_rslora,
                "modules": len(a.modules),
                "parameters": a.num_params,
                "base model": a.config.base_model or "?",
                "warnings": "; ".join(a.warnings),
            }
        )
    return rows
