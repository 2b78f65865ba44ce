"""The sweep folder on disk: the one module of the sweep package that reads and writes files.

Layout of ``DIR``::

    spec.json                  the spec the sweep ran with
    points/<key>.json          one finished point (written atomically: temp file + rename)
    failed/<key>.json          one failed point with its error (retried by the next run)
    states/<key>.safetensors   the learned state of a data-driven point (warm starts, reopening)
    exports/<key>/             the point as a PEFT adapter, when the spec asks for exports

A file is complete or absent: a sweep killed mid-write leaves at most a ``.tmp`` file, which is
ignored and overwritten by the next run.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = "merge-lab-sweep-point"
VERSION = 1


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temp file in the same folder, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, allow_nan=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    """Read one JSON file; ``ValueError`` naming the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def point_path(folder: Path, key: str, *, failed: bool = False) -> Path:
    return Path(folder) / ("failed" if failed else "points") / f"{key}.json"


def save_point(folder: Path, record: Mapping[str, Any]) -> None:
    """Write a finished (``points/``) or failed (``failed/``) point; success clears the failure."""
    key, failed = record["key"], record["status"] == "failed"
    write_json(
        point_path(folder, key, failed=failed), {"format": FORMAT, "version": VERSION, **record}
    )
    if not failed:
        point_path(folder, key, failed=True).unlink(missing_ok=True)


def done_keys(folder: Path) -> set[str]:
    """Keys of the finished points in ``folder``."""
    points = Path(folder) / "points"
    return {p.stem for p in points.glob("*.json")} if points.is_dir() else set()


def iter_points(folder: Path, *, failed: bool = False) -> Iterator[dict[str, Any]]:
    """The point records of ``folder`` (finished, or failed), sorted by key."""
    sub = Path(folder) / ("failed" if failed else "points")
    for path in sorted(sub.glob("*.json")) if sub.is_dir() else []:
        record = read_json(path)
        if record.get("format") != FORMAT:
            raise ValueError(f"{path} is not a sweep point file (format {record.get('format')!r})")
        yield record


def state_path(folder: Path, key: str) -> Path:
    return Path(folder) / "states" / f"{key}.safetensors"


def save_state(folder: Path, key: str, state: Mapping[str, torch.Tensor]) -> str:
    """Write a learned state (name -> tensor) atomically; returns its path inside the folder."""
    from merging_core.io import state_to_bytes

    path = state_path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(state_to_bytes(state))
    os.replace(tmp, path)
    return str(path.relative_to(folder))


def load_state(folder: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The saved state of point ``key``, or None when it has none."""
    from merging_core.io import load_state as read_state

    path = state_path(folder, key)
    return read_state(path) if path.is_file() else None


def save_spec(folder: Path, spec: Mapping[str, Any]) -> None:
    write_json(Path(folder) / "spec.json", spec)


def load_spec(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / "spec.json"
    return read_json(path) if path.is_file() else None


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
