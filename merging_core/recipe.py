"""Merge recipes: everything needed to redo an export bit for bit, as one JSON document.

A recipe records the inputs (adapter paths as the user gave them, names, and the SHA-256 of
each weights file), the method id, its validated parameters, the seed, the export rank, the base
model and the package versions it was made with::

    {"format": "merge-lab-recipe", "version": 1, "method": "ties",
     "params": {"density": 0.2, ...}, "seed": 0, "rank": 16, "base_model": "",
     "inputs": [{"name": "math", "path": "adapters/math", "sha256": "<64 hex>"}, ...],
     "versions": {"python": "3.12.3", "torch": "2.13.0", "peft": "0.21.2", ...}}

A data-driven merge (TARA, AdaMerging) also records the task data it learned from and where it
started::

     "task_data": {"bundle": "vision8", "fingerprint": "<32 hex>"},
     "warm_start": {"file": "warm_start.safetensors", "sha256": "<64 hex>"} | null,
     "device": "cpu"

(the warm-start state is written next to the recipe by the export). Replaying
(:mod:`merging_core.replay`) loads the inputs through :mod:`merging_core.io`, refuses any whose
weights hash or task-data fingerprint differs, merges with the same parameters, seed and warm
start, and exports at the same rank; on the same machine and package versions the safetensors
bytes are identical. Nothing here reads files itself.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from merging_core.adapters import Adapter, AdapterSet
from merging_core.results import MergeResult

FORMAT = "merge-lab-recipe"
VERSION = 1
VERSIONED_PACKAGES = ("torch", "numpy", "safetensors", "peft", "merging-core")
WARM_START_FILE = "warm_start.safetensors"

_SHA = re.compile(r"^[0-9a-f]{64}$")
_KEYS = ("format", "version", "method", "params", "seed", "rank", "base_model", "inputs")


def package_versions() -> dict[str, str]:
    """Python and package versions (from installed metadata; nothing is imported).

    Packages that are not installed are left out (peft is optional).
    """
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def recipe_inputs(
    adapter_set: AdapterSet, paths: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """One ``{"name", "path", "sha256"}`` entry per adapter, in task order.

    Args:
        adapter_set: the merged adapters; ``Adapter.sha256`` is the hash of its weights file
            (empty for adapters built in memory, which makes the recipe non-replayable).
        paths: the paths as the user typed them (default: each adapter's ``source``).

    Raises:
        ValueError: ``paths`` has the wrong length.
    """
    if paths is not None and len(paths) != len(adapter_set):
        raise ValueError(f"got {len(paths)} paths for {len(adapter_set)} adapters")
    given = list(paths) if paths is not None else [a.source for a in adapter_set]
    return [
        {"name": a.name, "path": str(p), "sha256": a.sha256}
        for a, p in zip(adapter_set, given, strict=True)
    ]


def build_recipe(
    result: MergeResult,
    *,
    inputs: Sequence[Mapping[str, str]],
    rank: int | None = None,
    base_model: str = "",
) -> dict[str, Any]:
    """The recipe of ``result`` exported at ``rank`` (validated, JSON-able).

    Args:
        result: what :func:`merging_core.merge.merge` returned (a data-driven result's ``run``
            supplies the task data's identity, the warm start's hash and the device).
        inputs: from :func:`recipe_inputs`, in the same task order as the merge.
        rank: the export rank (None = exact).
        base_model: the base model id, if known.

    Raises:
        ValueError: inputs that do not match the result's adapters, or invalid fields.
    """
    names = [item.get("name", "") for item in inputs]
    if names != list(result.adapter_names):
        raise ValueError(
            f"recipe inputs {names} do not match the merged adapters {list(result.adapter_names)}"
        )
    recipe = {
        "format": FORMAT,
        "version": VERSION,
        "method": result.method,
        "params": dict(result.params),
        "seed": int(result.seed),
        "rank": rank,
        "base_model": base_model,
        "inputs": [dict(item) for item in inputs],
        **data_fields(result),
        "versions": package_versions(),
    }
    return validate_recipe(recipe)


def data_fields(result: MergeResult) -> dict[str, Any]:
    """``task_data`` / ``warm_start`` / ``device`` of a data-driven result ({} otherwise)."""
    run = result.run
    if not run.get("task_data"):
        return {}
    warm = run.get("warm_start")
    return {
        "task_data": {"bundle": run["task_data"]["name"], "fingerprint": run["task_data"]["fingerprint"]},
        "warm_start": {"file": WARM_START_FILE, "sha256": warm} if warm else None,
        "device": run.get("device", "cpu"),
    }


def validate_recipe(data: Any) -> dict[str, Any]:
    """Check a recipe's structure and parameters; return a normalised, JSON-able copy.

    Parameters go through the method's own spec (defaults filled, bounds checked), so a
    recipe that validates will merge.

    Raises:
        TypeError: ``data`` is not a JSON object. ValueError: a missing or invalid field.
        KeyError: an unknown method.
    """
    from merging_core.methods import get_method  # registers every method

    if not isinstance(data, Mapping):
        raise TypeError(f"a recipe must be a JSON object, got {type(data).__name__}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"recipe is missing field(s) {missing}")
    if data["format"] != FORMAT or data["version"] != VERSION:
        raise ValueError(
            f"not a version-{VERSION} {FORMAT!r} document: format={data['format']!r}, "
            f"version={data['version']!r}"
        )
    info = get_method(data["method"])
    if not isinstance(data["params"], Mapping):
        raise ValueError(f"recipe params must be an object, got {data['params']!r}")
    out = dict(data)
    out["params"] = _jsonable(info.validate_params(data["params"]))
    out["seed"] = _check_int("seed", data["seed"], low=0)
    out["rank"] = None if data["rank"] is None else _check_int("rank", data["rank"], low=1)
    if not isinstance(data["base_model"], str):
        raise ValueError(f"recipe base_model must be a string, got {data['base_model']!r}")
    out["inputs"] = _check_inputs(data["inputs"])
    out["versions"] = dict(data.get("versions") or {})
    if info.needs_data:
        _check_data_fields(data, info.name)
    return out


def _check_data_fields(data: Mapping[str, Any], method: str) -> None:
    task = data.get("task_data")
    if not isinstance(task, Mapping) or not all(isinstance(task.get(k), str) for k in ("bundle", "fingerprint")):
        raise ValueError(
            f"recipe of data-driven method {method!r} needs task_data with string bundle and "
            f"fingerprint, got {str(task)[:80]!r}"
        )
    warm = data.get("warm_start")
    if warm is not None and (not isinstance(warm, Mapping) or not _SHA.match(str(warm.get("sha256", "")))
                             or not isinstance(warm.get("file"), str)):  # fmt: skip
        raise ValueError(f"recipe warm_start must be null or {{file, sha256}}, got {str(warm)[:80]!r}")


def require_replayable(recipe: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` unless every input has a path and a SHA-256 to check it against."""
    for i, item in enumerate(recipe["inputs"]):
        if not item["path"] or not _SHA.match(item["sha256"]):
            raise ValueError(
                f"recipe input {i} ({item['name']!r}) has no path or weights hash "
                f"(path={item['path']!r}, sha256={item['sha256']!r}); this recipe was written "
                "for adapters built in memory and cannot be replayed"
            )


def verify_inputs(recipe: Mapping[str, Any], adapters: Sequence[Adapter]) -> None:
    """Check that ``adapters`` are the recipe's inputs, byte for byte (weights SHA-256).

    Raises:
        ValueError: wrong count, or an adapter whose weights hash differs (named, with both
            hashes).
    """
    inputs = recipe["inputs"]
    if len(adapters) != len(inputs):
        raise ValueError(f"recipe has {len(inputs)} inputs but {len(adapters)} adapters were given")
    for i, (item, adapter) in enumerate(zip(inputs, adapters, strict=True)):
        if adapter.sha256 != item["sha256"]:
            raise ValueError(
                f"input {i} ({item['name']!r}) does not match the recipe: the weights at "
                f"{adapter.source or item['path']!r} hash to {adapter.sha256 or '(none)'} but "
                f"the recipe expects {item['sha256']}"
            )


def version_differences(recipe: Mapping[str, Any]) -> list[str]:
    """Plain-words notes for each recorded version that differs from this environment.

    A replay under different versions still merges the same maths but may not be bit-exact.
    """
    now = package_versions()
    notes = []
    for name, then in sorted((recipe.get("versions") or {}).items()):
        if now.get(name) != then:
            notes.append(f"{name} is {now.get(name, 'not installed')} here, recipe used {then}")
    return notes


def recipe_to_json(recipe: Mapping[str, Any]) -> str:
    """Stable JSON text (fixed key order, 2-space indent, trailing newline)."""
    return json.dumps(dict(recipe), indent=2, ensure_ascii=False) + "\n"


def parse_recipe(text: str, *, source: str = "recipe") -> dict[str, Any]:
    """Parse and validate recipe JSON text; ``source`` names it in error messages.

    Raises:
        ValueError: not JSON, or an invalid recipe.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from None
    try:
        return validate_recipe(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def recipe_for_export(
    result: MergeResult,
    recipe: Mapping[str, Any] | None,
    *,
    rank: int | None,
    base_model: str,
) -> dict[str, Any]:
    """The recipe written next to an export: ``recipe`` checked against the export, or (None) a
    non-replayable one naming the inputs only.

    Raises:
        ValueError: the recipe names another method, seed or rank than this export.
    """
    if recipe is None:
        inputs = [{"name": n, "path": "", "sha256": ""} for n in result.adapter_names]
        return build_recipe(result, inputs=inputs, rank=rank, base_model=base_model)
    checked = validate_recipe(recipe)
    for key, value in (("method", result.method), ("seed", result.seed), ("rank", rank)):
        if checked[key] != value:
            raise ValueError(f"recipe {key} is {checked[key]!r} but this export has {value!r}")
    return checked


def replay_command(recipe: Mapping[str, Any]) -> str:
    """The command that replays ``recipe`` (what the model card tells the reader)."""
    bundle = (recipe.get("task_data") or {}).get("bundle")
    data = f" --bundle {bundle}" if bundle else ""
    return f"merge-lab merge --recipe recipe.json{data} --out OUT"


def _check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"recipe {name} must be an integer >= {low}, got {value!r}")
    return value


def _check_inputs(inputs: Any) -> list[dict[str, str]]:
    if not isinstance(inputs, list) or not inputs:
        raise ValueError(f"recipe inputs must be a non-empty list, got {inputs!r}")
    out = []
    for i, item in enumerate(inputs):
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in ("name", "path", "sha256")
        ):
            raise ValueError(
                f"recipe input {i} must have string name, path and sha256, got {item!r}"
            )
        if item["sha256"] and not _SHA.match(item["sha256"]):
            raise ValueError(
                f"recipe input {i} sha256 must be 64 hex digits, got {item['sha256']!r}"
            )
        out.append({"name": item["name"], "path": item["path"], "sha256": item["sha256"]})
    return out


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples (per-adapter weights) become lists so the recipe is plain JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def warm_start_files(result: MergeResult, recipe: Mapping[str, Any]) -> dict[str, bytes]:
    """``{file: bytes}`` of the warm-start state a data-driven recipe names ({} for none).

    Raises:
        ValueError: the recipe names a warm start the result does not carry.
    """
    from merging_core import io

    warm = recipe.get("warm_start")
    if not warm:
        return {}
    state = result.extras.get("warm_start")
    if not state:
        raise ValueError("the recipe names a warm start but the merge result does not carry it")
    return {warm["file"]: io.state_to_bytes(state)}
