"""Replay a recipe: load and verify its inputs (and task data), merge, export — the same bytes.

A data-free recipe needs only its adapters. A data-driven one (TARA, AdaMerging) also needs the
task data it learned from — the replay refuses when the data's fingerprint differs — and, when
it was warm-started, the state it started from (``warm_start.safetensors`` beside the recipe,
checked against its SHA-256). Replays run on the task data's device; on the same machine and
package versions a CPU replay writes byte-identical safetensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merging_core import io
from merging_core.adapters import AdapterSet
from merging_core.adaptive.common import state_hash
from merging_core.export import ExportReport, export_merge
from merging_core.merge import merge
from merging_core.recipe import (
    package_versions,
    require_replayable,
    validate_recipe,
    verify_inputs,
)
from merging_core.results import Progress


def replay_recipe(
    recipe: Mapping[str, Any],
    out: str | Path,
    *,
    paths: Sequence[str] | None = None,
    overwrite: bool = False,
    task_data: Any = None,
    recipe_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Redo a recipe: load and verify its inputs, merge, export to ``out``.

    Args:
        recipe: a recipe dict (validated again here).
        out: the export directory.
        paths: adapter paths to use instead of the recorded ones (same order; hashes are still
            checked), e.g. when the recipe was written on another machine.
        overwrite: replace an existing ``out``.
        task_data: for data-driven recipes, the task data (its fingerprint must match).
        recipe_dir: the folder holding the recipe (where its warm-start state file lies).
        progress: optional ``callback(fraction, message)``; merge takes the first half.

    Raises:
        ValueError: invalid or non-replayable recipe, a hash or fingerprint mismatch, missing
            task data, or an existing ``out``.
    """
    checked = validate_recipe(recipe)
    require_replayable(checked)
    if paths is not None:
        if len(paths) != len(checked["inputs"]):
            raise ValueError(f"got {len(paths)} paths for {len(checked['inputs'])} recipe inputs")
        checked["inputs"] = [
            {**item, "path": str(p)} for item, p in zip(checked["inputs"], paths, strict=True)
        ]
    if Path(out).exists() and not overwrite:
        raise ValueError(f"export path {str(out)!r} already exists; pass overwrite=True")
    data_args = _data_args(checked, task_data, recipe_dir)
    adapters = io.load_adapters([item["path"] for item in checked["inputs"]])
    verify_inputs(checked, adapters)
    result = merge(
        AdapterSet.from_adapters(adapters), checked["method"], seed=checked["seed"],
        progress=_half(progress, 0.0), **data_args, **checked["params"],
    )  # fmt: skip
    replayed = {
        **checked,
        "inputs": [
            {**i, "name": n} for i, n in zip(checked["inputs"], result.adapter_names, strict=True)
        ],
        "versions": package_versions(),
    }
    return export_merge(
        result, out, rank=checked["rank"], base_model=checked["base_model"], overwrite=overwrite,
        recipe=replayed, progress=_half(progress, 0.5),
    )  # fmt: skip


def _data_args(recipe: Mapping[str, Any], task_data: Any, recipe_dir: Any) -> dict[str, Any]:
    """``task_data`` and ``warm_start`` for ``merge()``; refuses a different data set."""
    wanted = recipe.get("task_data")
    if not wanted:
        return {}
    if task_data is None:
        raise ValueError(
            f"this recipe learned from the task data of bundle {wanted['bundle']!r}; pass it "
            f"(--bundle {wanted['bundle']} on the command line)"
        )
    if task_data.fingerprint() != wanted["fingerprint"]:
        raise ValueError(
            f"the task data of {task_data.name!r} (fingerprint {task_data.fingerprint()}) is not "
            f"the data this recipe learned from ({wanted['bundle']!r}, fingerprint "
            f"{wanted['fingerprint']}); the merge would differ"
        )
    return {"task_data": task_data, "warm_start": _warm_start(recipe, recipe_dir)}


def _warm_start(recipe: Mapping[str, Any], recipe_dir: Any) -> dict[str, Any] | None:
    warm = recipe.get("warm_start")
    if not warm:
        return None
    if recipe_dir is None:
        raise ValueError("this recipe was warm-started; give the folder holding its state file")
    state = io.load_state(Path(recipe_dir) / warm["file"])
    if state_hash(state) != warm["sha256"]:
        raise ValueError(
            f"{Path(recipe_dir) / warm['file']}: warm-start state does not match the recipe's hash"
        )
    return state


def _half(progress: Progress | None, start: float) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + 0.5 * fraction, message)
