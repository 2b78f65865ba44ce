"""Bring your own model: a ``transformers-classification`` bundle made from files in place.

:func:`init_bundle` writes only a ``manifest.json`` that references the user's base model folder,
PEFT ``SEQ_CLS`` adapter folders and JSONL data by absolute path (nothing is copied), then loads
the bundle once so that every problem is reported now, naming the task and the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merging_core.bundles import files
from merging_core.bundles.transformers_kind import KIND, BundleError, load_transformers_bundle


def init_bundle(
    out: str | Path,
    *,
    base: str | Path,
    adapters: Mapping[str, str | Path],
    data: Mapping[str, Sequence[str | Path]],
    num_labels: int | None = None,
    classes: Mapping[str, Sequence[str]] | None = None,
    max_length: int = 128,
    name: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``out/manifest.json`` for the given files and check it by loading the bundle.

    Args:
        out: the bundle folder to create. base: a local transformers model folder.
        adapters: task name -> PEFT ``SEQ_CLS`` LoRA folder (with its classifier head saved).
        data: task name -> ``[validation.jsonl]`` or ``[validation.jsonl, test.jsonl]``.
        num_labels: rows of every head (default: read from the first adapter's head).
        classes: task name -> class names (default: ``num_labels`` classes "0", "1", ...).
        max_length: tokenizer truncation. name: the bundle's name (default: the folder name).
        overwrite: replace an existing manifest.

    Returns:
        The manifest written.

    Raises:
        BundleError / ValueError: a task without data or adapter, a file that is missing, a head
            that is absent, a data row without ``text`` or with a label out of range, or an
            adapter module that is not in the model (the message names task and file).
    """
    root = Path(out)
    missing = sorted(set(adapters) ^ set(data))
    if missing:
        raise BundleError(f"tasks {missing} need both an --adapter and a --data entry")
    labels = num_labels or _head_rows(Path(adapters[next(iter(adapters))]))
    tasks = [
        _task_entry(task, Path(adapters[task]), data[task], labels, (classes or {}).get(task))
        for task in adapters
    ]
    manifest = {
        "name": name or root.resolve().name,
        "kind": KIND,
        "format_version": 1,
        "description": "A user bundle made by `merge-lab bundle init` (files referenced in place).",
        "base_model": {"path": str(Path(base).resolve()), "num_labels": labels,
                       "max_length": int(max_length)},  # fmt: skip
        "tasks": tasks,
    }
    target = files.write_manifest(root, manifest, overwrite=overwrite)
    try:
        load_transformers_bundle(root, manifest)
    except Exception:
        target.unlink()
        raise
    return manifest


def _task_entry(task, adapter, splits, labels, names) -> dict[str, Any]:
    if not 1 <= len(splits) <= 2:
        raise BundleError(f"task {task!r}: give VALIDATION.jsonl[,TEST.jsonl], got {list(splits)}")
    for file in [adapter, *map(Path, splits)]:
        if not file.exists():
            raise BundleError(f"task {task!r}: {file} does not exist")
    entry = {
        "name": task,
        "classes": list(names) if names else [str(i) for i in range(labels)],
        "adapter": str(adapter.resolve()),
        "data": {"validation": str(Path(splits[0]).resolve())},
    }
    if len(splits) == 2:
        entry["data"]["test"] = str(Path(splits[1]).resolve())
    if len(entry["classes"]) > labels:
        raise BundleError(f"task {task!r}: {len(entry['classes'])} classes but heads have {labels} rows")
    return entry


def _head_rows(adapter: Path) -> int:
    """Rows of the adapter's saved classifier head: its only 2-D saved weight that is not a
    pooler (BERT-family adapters may save their own pooler beside the classifier)."""
    from merging_core.io import load_saved_modules

    heads = [t for k, t in load_saved_modules(adapter).items()
             if k.endswith(".weight") and t.dim() == 2 and ".pooler." not in f".{k}"]  # fmt: skip
    if len(heads) != 1:
        raise BundleError(
            f"{adapter}: cannot tell the number of labels from its saved modules "
            f"({len(heads)} candidate heads); pass --num-labels"
        )
    return int(heads[0].shape[0])
