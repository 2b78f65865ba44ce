"""Reading and writing PEFT LoRA adapters: the only module of the library that touches files.

Space: factors. Loading turns a PEFT directory (``adapter_config.json`` +
``adapter_model.safetensors``) into an :class:`~merging_core.adapters.Adapter` whose modules hold
``B: (d_out, r)`` with the LoRA scale folded in and ``A: (r, d_in)``, both float32, so that
``Adapter.delta(module)`` equals PEFT's own ``get_delta_weight`` in the base weight's layout.
Saving writes such factors back as a valid PEFT adapter whose every scale is 1.

Only safetensors is ever read. Pickle-based files (``adapter_model.bin``, ``.pt``, ``.pth``,
``.ckpt``) are refused without being opened, so loading can never execute code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from merging_core.adapters import Adapter, AdapterConfig, LoraModule

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PREFIX = "base_model.model."

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "AdapterLoadError",
    "load_adapter",
    "load_adapter_from_files",
    "load_adapters",
    "pattern_value",
    "save_adapter",
]


class AdapterLoadError(ValueError):
    """An adapter that cannot be loaded faithfully; the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_LINEAR_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<side>[AB])\.weight")
_EMBEDDING_KEY = re.compile(r"(?P<module>.+)\.lora_embedding_(?P<side>[AB])(?:\.weight)?")
_MUTATING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def load_adapter(path: str | os.PathLike[str], *, name: str | None = None) -> Adapter:
    """Load a PEFT LoRA adapter directory with every scale folded into ``B``.

    Space: factors. Per module, ``B (d_out, r)`` is multiplied by ``s = alpha / r`` (or
    ``alpha / sqrt(r)`` with ``use_rslora``), with ``r`` and ``alpha`` resolved through
    ``rank_pattern``/``alpha_pattern`` exactly as PEFT does; both factors are upcast to float32.
    Linear modules get ``transposed = fan_in_fan_out``; embeddings get ``transposed=True``.

    Args:
        path: the adapter folder (or its ``adapter_config.json`` / ``adapter_model.safetensors``).
        name: display name; defaults to the folder name.

    Returns:
        The adapter; ``sha256`` is the hash of the weights file, ``source`` the folder path, and
        ``warnings`` lists payload that is not merged.

    Raises:
        AdapterLoadError: the folder is not a mergeable PEFT LoRA adapter; the message names the
            file and the reason (pickle weights, DoRA, another PEFT type, bad shapes, ...).
    """
    root = _adapter_dir(Path(path))
    config_file, weights_file = root / CONFIG_NAME, root / WEIGHTS_NAME
    notes = _ignored_pickle_notes(p.name for p in root.iterdir() if p.is_file())
    subs = sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())
    if subs:
        notes.append(f"more adapters in sub-folders, not loaded here: {', '.join(subs)}")
    return _build_adapter(
        config=(config_file.read_bytes(), str(config_file)),
        weights=(weights_file.read_bytes(), str(weights_file)),
        name=name or root.name,
        source=str(root),
        notes=notes,
    )


def load_adapters(paths: Iterable[str | os.PathLike[str]]) -> list[Adapter]:
    """Load several adapters; clashing folder names get their parent folder as a prefix.

    Raises:
        AdapterLoadError: the first adapter that cannot be loaded.
    """
    adapters = [load_adapter(p) for p in paths]
    names = [a.name for a in adapters]
    return [
        replace(a, name=f"{Path(a.source).parent.name}/{a.name}") if names.count(a.name) > 1 else a
        for a in adapters
    ]


def load_adapter_from_files(files: Mapping[str, bytes], *, name: str) -> Adapter:
    """Load an adapter from file contents (e.g. an upload widget), without touching the disk.

    Args:
        files: file name -> bytes; needs ``adapter_config.json`` and
            ``adapter_model.safetensors`` (or exactly one other ``.safetensors`` file).
            Directory parts of the names are ignored.
        name: display name of the adapter.

    Returns:
        The adapter, as :func:`load_adapter` would build it (``source`` is ``""``).

    Raises:
        AdapterLoadError: as :func:`load_adapter`; pickle files are refused unopened.
        ValueError: an empty name.
    """
    if not name:
        raise ValueError(f"an uploaded adapter needs a non-empty name, got {name!r}")
    by_name = {Path(k).name: bytes(v) for k, v in files.items()}
    weights_name = _uploaded_weights_name(by_name)
    if CONFIG_NAME not in by_name:
        label = f"uploaded {weights_name}"
        _refuse_foreign(_safetensors_keys(by_name[weights_name], label), label)
        raise AdapterLoadError(
            f"uploaded adapter {name!r}: {CONFIG_NAME} is missing (got {_names(by_name)}); "
            "a PEFT adapter needs both its config and its weights"
        )
    return _build_adapter(
        config=(by_name[CONFIG_NAME], f"uploaded {CONFIG_NAME}"),
        weights=(by_name[weights_name], f"uploaded {weights_name}"),
        name=name,
        source="",
        notes=_ignored_pickle_notes(by_name),
    )


def _ignored_pickle_notes(file_names: Iterable[str]) -> list[str]:
    return [
        f"{n} is a pickle file and was ignored (never opened)"
        for n in sorted(file_names)
        if n.lower().endswith(PICKLE_SUFFIXES)
    ]


def _uploaded_weights_name(by_name: Mapping[str, bytes]) -> str:
    if WEIGHTS_NAME in by_name:
        return WEIGHTS_NAME
    candidates = [n for n in by_name if n.lower().endswith(".safetensors")]
    if len(candidates) == 1:
        return candidates[0]
    pickles = [n for n in by_name if n.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise AdapterLoadError(_pickle_message(f"uploaded {pickles[0]}"))
    raise AdapterLoadError(
        f"uploaded files {_names(by_name) or '(none)'}: need exactly one weights file "
        f"({WEIGHTS_NAME}), found {len(candidates)}"
    )


# --- finding the files ----------------------------------------------------------------------


def _adapter_dir(path: Path) -> Path:
    """The folder holding ``adapter_config.json`` + ``adapter_model.safetensors``, or refuse."""
    if not path.exists():
        raise AdapterLoadError(f"{path}: no such file or folder")
    if path.is_file():
        return _dir_of_file(path)
    has_config, has_weights = (path / CONFIG_NAME).is_file(), (path / WEIGHTS_NAME).is_file()
    if has_config and has_weights:
        return path
    if has_weights:
        _refuse_foreign(_safetensors_keys((path / WEIGHTS_NAME).read_bytes(), str(path)), path)
        raise AdapterLoadError(f"{path / CONFIG_NAME}: missing; the weights alone cannot be read")
    _refuse_pickles(path)
    if has_config:
        raise AdapterLoadError(f"{path / WEIGHTS_NAME}: missing (the folder has only its config)")
    _refuse_sub_folders(path)
    for st in sorted(path.glob("*.safetensors")):
        _refuse_foreign(_safetensors_keys(st.read_bytes(), str(st)), st)
    raise AdapterLoadError(f"{path / CONFIG_NAME}: missing; {path} is not a PEFT adapter folder")


def _dir_of_file(path: Path) -> Path:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AdapterLoadError(_pickle_message(str(path)))
    if path.name in (CONFIG_NAME, WEIGHTS_NAME):
        return _adapter_dir(path.parent)
    if path.suffix.lower() == ".safetensors":
        _refuse_foreign(_safetensors_keys(path.read_bytes(), str(path)), path)
    raise AdapterLoadError(
        f"{path}: a PEFT adapter is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}; "
        "pass that folder"
    )


def _refuse_pickles(path: Path) -> None:
    pickles = sorted(p for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterLoadError(_pickle_message(str(pickles[0])))


def _pickle_message(where: str) -> str:
    return (
        f"{where}: pickle weights are refused and never opened, because unpickling can run "
        "arbitrary code; re-save the adapter as safetensors (PEFT's save_pretrained does by "
        "default) from a source you trust"
    )


def _refuse_sub_folders(path: Path) -> None:
    subs = sorted(p.name for p in path.iterdir() if (p / CONFIG_NAME).is_file())
    if subs:
        raise AdapterLoadError(
            f"{path}: no adapter here, but {len(subs)} adapter sub-folder(s): {', '.join(subs)} "
            "(PEFT saves a non-default adapter under its name); point at one of them"
        )


# --- parsing --------------------------------------------------------------------------------


def _build_adapter(
    *,
    config: tuple[bytes, str],
    weights: tuple[bytes, str],
    name: str,
    source: str,
    notes: list[str],
) -> Adapter:
    """Parse config and weights (``(bytes, label)`` each) into an :class:`Adapter`."""
    cfg, cfg_notes = _read_config(_parse_json(*config), config[1])
    tensors = _parse_safetensors(*weights)
    modules, tensor_notes = _modules_from_tensors(tensors, cfg, weights[1])
    return Adapter(
        name=name,
        modules=modules,
        config=cfg,
        warnings=tuple(notes + cfg_notes + tensor_notes),
        source=source,
        sha256=hashlib.sha256(weights[0]).hexdigest(),
    )


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterLoadError(f"{where}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise AdapterLoadError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return raw


def _parse_safetensors(data: bytes, where: str) -> dict[str, torch.Tensor]:
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as err:
        raise AdapterLoadError(
            f"{where}: not a readable safetensors file (truncated or corrupt?): {err}"
        ) from err
    if not tensors:
        raise AdapterLoadError(f"{where}: holds no tensors")
    return tensors


def _safetensors_keys(data: bytes, where: str) -> list[str]:
    return list(_parse_safetensors(data, where))


def _read_config(raw: Mapping[str, Any], where: str) -> tuple[AdapterConfig, list[str]]:
    """Validate the fields that change ΔW; refuse what cannot be merged; note what is dropped."""
    notes = _refuse_config(raw, where)
    rank_pattern = _pattern(raw, "rank_pattern", where, positive_int=True)
    alpha_pattern = _pattern(raw, "alpha_pattern", where, positive_int=False)
    cfg = AdapterConfig(
        r=_positive_int(raw.get("r", 8), f"{where}: r"),
        lora_alpha=_number(raw.get("lora_alpha", 8), f"{where}: lora_alpha"),
        use_rslora=_flag(raw, "use_rslora", where),
        target_modules=raw.get("target_modules"),
        base_model=str(raw.get("base_model_name_or_path") or ""),
        task_type=str(raw.get("task_type") or ""),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=_flag(raw, "fan_in_fan_out", where),
        raw=dict(raw),
    )
    return cfg, notes + _config_notes(raw)


def _refuse_config(raw: Mapping[str, Any], where: str) -> list[str]:
    peft_type = raw.get("peft_type")
    if peft_type is None:
        return ["the config has no peft_type; read as a LoRA adapter"]
    if str(peft_type).upper() != "LORA":
        raise AdapterLoadError(
            f"{where}: peft_type is {peft_type!r}; only LoRA adapters (peft_type 'LORA') "
            "have a B·A update that can be merged here"
        )
    if raw.get("use_dora"):
        raise AdapterLoadError(
            f"{where}: use_dora is true; a DoRA update rescales rows of W0 + s·B·A, so it is "
            "not the low-rank ΔW these merges need"
        )
    if raw.get("use_qalora"):
        raise AdapterLoadError(f"{where}: use_qalora is true; QA-LoRA's pooled A is not supported")
    if raw.get("target_parameters"):
        raise AdapterLoadError(
            f"{where}: target_parameters={raw['target_parameters']!r}; LoRA on raw parameters "
            "(e.g. fused MoE experts) is not supported"
        )
    return []


def _config_notes(raw: Mapping[str, Any]) -> list[str]:
    notes = []
    if raw.get("modules_to_save"):
        notes.append(
            f"modules_to_save={raw['modules_to_save']!r}: these layers were trained in full; "
            "their weights are not part of the LoRA update and are not merged"
        )
    if raw.get("trainable_token_indices"):
        notes.append("trainable_token_indices is set: the trained token embeddings are not merged")
    if raw.get("lora_bias"):
        notes.append("lora_bias is true: the adapter's extra lora_B bias is not merged")
    if raw.get("bias") not in (None, "none"):
        notes.append(f"bias={raw['bias']!r}: trained bias vectors are not merged")
    init = str(raw.get("init_lora_weights", True)).lower()
    if init.startswith(_MUTATING_INITS):
        notes.append(
            f"init_lora_weights={raw['init_lora_weights']!r} changes the base weights at init; "
            "unless the adapter was converted, its ΔW is relative to that changed base"
        )
    if raw.get("alora_invocation_tokens"):
        notes.append("activated LoRA (alora_invocation_tokens): ΔW only applies after invocation")
    if raw.get("layer_replication"):
        notes.append("layer_replication is set: replicated layers share module paths")
    return notes


def _pattern(
    raw: Mapping[str, Any], field: str, where: str, *, positive_int: bool
) -> dict[str, float]:
    pattern = raw.get(field) or {}
    if not isinstance(pattern, dict):
        raise AdapterLoadError(f"{where}: {field} must be an object, got {pattern!r}")
    out = {}
    for key, value in pattern.items():
        try:
            re.compile(rf"(.*\.)?({key})$")
        except re.error as err:
            raise AdapterLoadError(f"{where}: {field} key {key!r} is not a valid regex") from err
        label = f"{where}: {field}[{key!r}]"
        out[key] = _positive_int(value, label) if positive_int else _number(value, label)
    return out


def _positive_int(value: Any, label: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON writers may emit 8.0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterLoadError(f"{label} must be a positive integer, got {value!r}")
    return value


def _number(value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdapterLoadError(f"{label} must be a finite number, got {value!r}")
    return float(value)


def _flag(raw: Mapping[str, Any], field: str, where: str) -> bool:
    value = raw.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise AdapterLoadError(f"{where}: {field} must be true or false, got {value!r}")
    return value


# --- tensors -> modules ---------------------------------------------------------------------


def _modules_from_tensors(
    tensors: Mapping[str, torch.Tensor], cfg: AdapterConfig, where: str
) -> tuple[dict[str, LoraModule], list[str]]:
    parts, other = _group_tensors(tensors, where)
    if not parts:
        _refuse_foreign(list(tensors), where)
        raise AdapterLoadError(
            f"{where}: no LoRA factors (lora_A/lora_B or lora_embedding_A/B) among "
            f"{len(tensors)} tensors, e.g. {sorted(tensors)[:3]}"
        )
    modules = {
        module: _module(module, parts[module], cfg, where)
        for module in sorted(parts, key=_natural_key)
    }
    return modules, _payload_notes(other)


def _group_tensors(
    tensors: Mapping[str, torch.Tensor], where: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``module -> {"kind", "A", "B"}`` and the keys that are not LoRA factors."""
    parts: dict[str, dict[str, Any]] = {}
    other: list[str] = []
    for key, tensor in tensors.items():
        short = key.removeprefix(PREFIX)
        if "lora_magnitude_vector" in short:
            raise AdapterLoadError(
                f"{where}: holds DoRA magnitude vectors ({key!r}); DoRA is not a plain B·A update"
            )
        match = _LINEAR_KEY.fullmatch(short) or _EMBEDDING_KEY.fullmatch(short)
        if match is None:
            other.append(short)
            continue
        kind = "linear" if match.re is _LINEAR_KEY else "embedding"
        entry = parts.setdefault(match["module"], {"kind": kind})
        if entry["kind"] != kind:
            raise AdapterLoadError(
                f"{where}: module {match['module']!r} has both linear and embedding factors"
            )
        if match["side"] in entry:
            raise AdapterLoadError(
                f"{where}: module {match['module']!r} has two lora_{match['side']} tensors "
                "(with and without the base_model.model. prefix?)"
            )
        entry[match["side"]] = tensor
    return parts, other


def _module(module: str, part: Mapping[str, Any], cfg: AdapterConfig, where: str) -> LoraModule:
    """Check one module's tensors against the config and fold the scale into ``B``."""
    names = ("lora_embedding_A", "lora_embedding_B") if part["kind"] == "embedding" else None
    names = names or ("lora_A.weight", "lora_B.weight")
    for side, label in zip("AB", names, strict=True):
        if side not in part:
            raise AdapterLoadError(f"{where}: module {module!r} has no {label}; it needs both")
    A = _checked_float32(part["A"], f"{where}: {module}.{names[0]}")  # (r, d_in)
    B = _checked_float32(part["B"], f"{where}: {module}.{names[1]}")  # (d_out, r)
    if B.shape[1] != A.shape[0]:
        raise AdapterLoadError(
            f"{where}: module {module!r}: {names[0]} {tuple(A.shape)} and {names[1]} "
            f"{tuple(B.shape)} disagree on the rank"
        )
    rank = pattern_value(cfg.rank_pattern, module, default=cfg.r)
    if A.shape[0] != rank:
        raise AdapterLoadError(
            f"{where}: module {module!r} has rank {A.shape[0]} in the weights but the config "
            f"gives it r={rank} (r / rank_pattern)"
        )
    alpha = pattern_value(cfg.alpha_pattern, module, default=cfg.lora_alpha)
    scale = _scale(alpha, rank, rslora=cfg.use_rslora)
    embedding = part["kind"] == "embedding"
    return LoraModule(
        B=B * scale,  # (d_out, r), scale folded
        A=A,  # (r, d_in)
        kind=part["kind"],
        transposed=embedding or cfg.fan_in_fan_out,
    )


def _checked_float32(t: torch.Tensor, label: str) -> torch.Tensor:
    """``t`` upcast to float32 after checking it is a finite 2-D float matrix."""
    if t.ndim in (3, 4, 5):
        raise AdapterLoadError(
            f"{label} has shape {tuple(t.shape)}: Conv LoRA modules are not supported "
            "(only Linear, GPT-2 Conv1D and Embedding)"
        )
    if t.ndim != 2:
        raise AdapterLoadError(f"{label} must be 2-D, got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise AdapterLoadError(f"{label} must be a float tensor, got {t.dtype}")
    t = t.to(torch.float32)
    # One float64 reduction: any NaN/Inf makes the sum non-finite, and float32 values cannot
    # overflow a float64 sum. Much faster than isfinite() on bf16 tensors.
    if not math.isfinite(float(t.sum(dtype=torch.float64))):
        bad = int((~torch.isfinite(t)).sum())
        raise AdapterLoadError(f"{label} holds {bad} NaN/Inf value(s)")
    return t


def _payload_notes(other: list[str]) -> list[str]:
    if not other:
        return []
    bias = [k for k in other if k.endswith("lora_B.bias")]
    tokens = [k for k in other if "trainable_tokens" in k]
    rest = [k for k in other if k not in bias and k not in tokens]
    notes = []
    if bias:
        notes.append(f"{len(bias)} lora_B.bias tensor(s) are not merged, e.g. {bias[:2]}")
    if tokens:
        notes.append(f"{len(tokens)} trainable-token tensor(s) are not merged, e.g. {tokens[:2]}")
    if rest:
        notes.append(
            f"{len(rest)} tensor(s) that are not LoRA factors (full copies from modules_to_save "
            f"or saved embedding layers) are not merged, e.g. {rest[:2]}"
        )
    return notes


def _refuse_foreign(keys: list[str], where: object) -> None:
    """Explain LoRA files from other tools instead of mis-reading them."""
    lowered = [k.lower() for k in keys]
    if any("lora_down" in k or "lora_up" in k for k in lowered):
        fmt = "a kohya / sd-scripts LoRA (lora_down/lora_up keys with .alpha scalars)"
    elif any(re.search(r"\.lora_[ab]$", k) for k in keys):
        fmt = "an MLX LoRA (lora_a (d_in, r) / lora_b (r, d_out) keys)"
    elif any(re.search(r"lora\.(down|up)\.weight$", k) for k in lowered):
        fmt = "a diffusers attention-processor LoRA (lora.down/lora.up keys)"
    else:
        return
    raise AdapterLoadError(
        f"{where}: this is {fmt}, not a PEFT adapter; convert it to PEFT format "
        f"({CONFIG_NAME} + {WEIGHTS_NAME}) first"
    )


def _natural_key(name: str) -> list[Any]:
    """Sort ``layers.2`` before ``layers.10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split(".")]


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def save_adapter(
    path: str | os.PathLike[str],
    modules: Mapping[str, LoraModule],
    *,
    base_model: str = "",
    task_type: str | None = None,
    target_modules: list[str] | str | None = None,
    overwrite: bool = False,
    extra_files: Mapping[str, str | bytes] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write LoRA factors as a PEFT adapter directory, atomically.

    Space: factors. Each module is stored as ``lora_A.weight (r, d_in)`` and ``lora_B.weight
    (d_out, r)`` (``lora_embedding_A/B`` for embeddings) under ``base_model.model.<module>``;
    ``B`` already holds the scale, so the config sets ``r`` = max rank and a per-module
    ``rank_pattern`` with a matching ``alpha_pattern`` (alpha = rank, scale 1).

    Args:
        path: target directory (created; its parent is created if needed).
        modules: module path (PEFT naming, no ``base_model.model.``) -> factors.
        base_model: ``base_model_name_or_path`` for the config.
        task_type: PEFT task type (e.g. ``"CAUSAL_LM"``) or None.
        target_modules: written as is; inferred from the module names when None.
        overwrite: replace an existing directory (atomically) instead of refusing.
        extra_files: file name -> text or bytes, written next to the adapter (e.g. recipe.json).
        metadata: extra safetensors metadata (string values); ``format`` is always ``"pt"``.

    Returns:
        The path of the written directory.

    Raises:
        ValueError: no modules, non-finite factors, mixed linear layouts, a clashing extra file
            name, or ``path`` exists and ``overwrite`` is False.
        TypeError: a module that is not a ``LoraModule`` or metadata that is not ``str -> str``.
    """
    target = Path(path)
    _check_target(target, overwrite=overwrite)
    fan_in_fan_out = _check_modules_for_save(modules)
    tensors = _tensors_for_save(modules)
    config = _config_for_save(
        modules,
        base_model=base_model,
        task_type=task_type,
        target_modules=target_modules,
        fan_in_fan_out=fan_in_fan_out,
    )
    files: dict[str, bytes] = {
        CONFIG_NAME: (json.dumps(config, indent=2) + "\n").encode(),
        WEIGHTS_NAME: _safetensors_bytes(tensors, _metadata_for_save(metadata)),
    }
    files.update(_extra_files_for_save(extra_files))
    _write_dir_atomically(target, files, overwrite=overwrite)
    return target


def _check_target(target: Path, *, overwrite: bool) -> None:
    if target.exists() and not target.is_dir():
        raise ValueError(
            f"cannot save an adapter to {str(target)!r}: it exists and is not a folder"
        )
    if target.exists() and not overwrite:
        raise ValueError(
            f"cannot save an adapter to {str(target)!r}: the folder already exists "
            "(pass overwrite=True to replace it)"
        )


def _check_modules_for_save(modules: Mapping[str, LoraModule]) -> bool:
    """Validate factors; return the ``fan_in_fan_out`` flag of the linear modules."""
    if not modules:
        raise ValueError("cannot save an adapter with no modules")
    for name, mod in modules.items():
        if not isinstance(mod, LoraModule):
            raise TypeError(f"module {name!r} must be a LoraModule, got {type(mod).__name__}")
        if not (torch.isfinite(mod.A).all() and torch.isfinite(mod.B).all()):
            raise ValueError(f"module {name!r} has NaN or Inf in its factors; refusing to save")
        if mod.rank == 0:
            raise ValueError(f"module {name!r} has rank 0; PEFT needs r >= 1 (drop the module)")
        if mod.kind == "embedding" and not mod.transposed:
            raise ValueError(f"embedding module {name!r} must have transposed=True, got False")
    layouts = {m.transposed for m in modules.values() if m.kind == "linear"}
    if len(layouts) > 1:
        flipped = sorted(n for n, m in modules.items() if m.kind == "linear" and m.transposed)
        raise ValueError(
            "PEFT has one fan_in_fan_out flag per adapter, but these linear modules mix layouts: "
            f"{len(flipped)} transposed (e.g. {flipped[:3]}) and "
            f"{len(modules) - len(flipped)} not; save them as two adapters"
        )
    return layouts == {True}


def _tensors_for_save(modules: Mapping[str, LoraModule]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        A = mod.A.detach().to("cpu", torch.float32).contiguous()  # (r, d_in)
        B = mod.B.detach().to("cpu", torch.float32).contiguous()  # (d_out, r)
        if mod.kind == "embedding":
            tensors[f"{PREFIX}{name}.lora_embedding_A"] = A  # (r, num_embeddings)
            tensors[f"{PREFIX}{name}.lora_embedding_B"] = B  # (dim, r)
        else:
            tensors[f"{PREFIX}{name}.lora_A.weight"] = A
            tensors[f"{PREFIX}{name}.lora_B.weight"] = B
    return tensors


def _config_for_save(
    modules: Mapping[str, LoraModule],
    *,
    base_model: str,
    task_type: str | None,
    target_modules: list[str] | str | None,
    fan_in_fan_out: bool,
) -> dict[str, Any]:
    ranks = {name: mod.rank for name, mod in modules.items()}
    r_max = max(ranks.values())
    pattern = _rank_pattern_for_save(ranks)
    return {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model or None,
        "r": r_max,
        "lora_alpha": r_max,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),  # alpha = rank for every module: scale 1
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": fan_in_fan_out,
        "target_modules": target_modules if target_modules is not None else sorted(modules),
        "lora_dropout": 0.0,
        "bias": "none",
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def _rank_pattern_for_save(ranks: Mapping[str, int]) -> dict[str, int]:
    """Full module names as pattern keys, longest first, so PEFT's first match is the exact one.

    PEFT matches a key as the regex ``(.*\\.)?(key)$``; a module's own name always matches it, but
    so may a shorter name that is a dotted suffix of it. Longest-first order makes the module's
    own key win. Names whose regex reading still resolves elsewhere are escaped.
    """
    keys = sorted(ranks, key=lambda n: (-len(n), n))
    plain = {k: ranks[k] for k in keys}
    try:
        if all(pattern_value(plain, n, default=-1) == r for n, r in ranks.items()):
            return plain
    except re.error:
        pass  # a name that is not a valid regex: fall through to the escaped form
    return {re.escape(k): ranks[k] for k in keys}


def _safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """Serialise float32 tensors to safetensors bytes, deterministically.

    ``safetensors.torch.save`` writes metadata keys in a random order, so the same adapter
    would hash differently run to run. The format is simple (8-byte little-endian header
    length, JSON header padded with spaces to 8 bytes, raw little-endian data), so we write it
    with sorted keys and get identical bytes for identical inputs.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for key in sorted(tensors):
        data = tensors[key].numpy().astype("<f4", copy=False).tobytes()
        header[key] = {
            "dtype": "F32",
            "shape": list(tensors[key].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _metadata_for_save(metadata: Mapping[str, str] | None) -> dict[str, str]:
    out = {"format": "pt"}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str, got {key!r}: {value!r}")
        if key == "format" and value != "pt":
            raise ValueError(f"metadata 'format' must be 'pt' for a PEFT adapter, got {value!r}")
        out[key] = value
    return out


def _extra_files_for_save(extra_files: Mapping[str, str | bytes] | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, content in (extra_files or {}).items():
        if name in (CONFIG_NAME, WEIGHTS_NAME):
            raise ValueError(f"extra file {name!r} would overwrite the adapter itself")
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"extra file names must be plain file names, got {name!r}")
        if isinstance(content, str):
            out[name] = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray):
            out[name] = bytes(content)
        else:
            kind = type(content).__name__
            raise TypeError(f"extra file {name!r} must be str or bytes, got {kind}")
    return out


def _write_dir_atomically(target: Path, files: Mapping[str, bytes], *, overwrite: bool) -> None:
    """Write ``files`` into a temp folder next to ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        _swap_into_place(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path, *, overwrite: bool) -> None:
    if not target.exists():
        os.rename(tmp, target)
        return
    if not overwrite:  # appeared while we were writing
        raise ValueError(f"cannot save an adapter to {str(target)!r}: the folder already exists")
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# PEFT's pattern semantics
# --------------------------------------------------------------------------------------------


def pattern_value(pattern: Mapping[str, Any], module: str, *, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup for one module path.

    A key matches when ``re.match(rf"(.*\\.)?({key})$", module)`` succeeds (a regex that must
    match a dotted suffix of the path); the first matching key in dict order wins; no match
    gives ``default``. Same semantics as ``peft.utils.other.get_pattern_key``.
    """
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _scale(alpha: float, rank: int, *, rslora: bool) -> float:
    """``alpha / r`` or, for rsLoRA, ``alpha / sqrt(r)``."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def load_saved_modules(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The full-weight tensors an adapter saved beside its LoRA factors (``modules_to_save``),
    e.g. a sequence classifier's head: ``{"classifier.weight": (C, d), "classifier.bias": (C,)}``.

    Keys lose PEFT's ``base_model.model.`` prefix and any ``modules_to_save.<adapter>.`` infix;
    LoRA factors are left out. Tensors are read one by one (no pickle, nothing else loaded).

    Raises:
        AdapterLoadError: the weights file is missing or unreadable.
    """
    from safetensors import safe_open

    weights = _adapter_dir(Path(path)) / WEIGHTS_NAME
    try:
        with safe_open(str(weights), framework="pt") as handle:
            out = {}
            for key in handle.keys():
                short = key.removeprefix(PREFIX)
                if _LINEAR_KEY.fullmatch(short) or _EMBEDDING_KEY.fullmatch(short) or "lora_" in short:
                    continue
                short = re.sub(r"\.modules_to_save\.[^.]+\.", ".", short)
                out[short] = handle.get_tensor(key).float()
            return out
    except (OSError, SafetensorError, ValueError) as err:
        raise AdapterLoadError(f"{weights}: cannot read its saved modules ({err})") from err


def state_to_bytes(state: Mapping[str, torch.Tensor]) -> bytes:
    """A learned state (``{name: tensor}``) as deterministic safetensors bytes (float32, CPU)."""
    tensors = {k: torch.as_tensor(v).detach().cpu().float().contiguous() for k, v in state.items()}
    return _safetensors_bytes(tensors, {})


def load_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A learned state written by :func:`state_to_bytes` (safetensors only, never a pickle).

    Raises:
        AdapterLoadError: the file is missing or unreadable.
    """
    from safetensors.torch import load_file

    file = Path(path)
    if not file.is_file():
        raise AdapterLoadError(f"{file}: warm-start state file not found")
    try:
        return load_file(str(file))
    except (OSError, SafetensorError, ValueError) as err:
        raise AdapterLoadError(f"{file}: not a readable safetensors state ({err})") from err
