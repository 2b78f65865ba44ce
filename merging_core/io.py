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
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, NoReturn

import torch

from merging_core.adapters import Adapter, AdapterConfig, LoraModule
from merging_core.keymatch import (
    PatternRefused,
    first_matching_key,
    peft_fullmatch,
    peft_key_matches,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 16 * 2**20
"""Largest ``adapter_config.json`` read (PEFT writes a few KB); larger ones are refused unread."""
MAX_HEADER_BYTES = 100_000_000
"""Largest safetensors JSON header (the safetensors library's own limit)."""
FLOAT32_SAFE = 2.0**64
"""``sqrt(float32 max)``: factors whose ``‖B‖·‖A‖`` exceeds it overflow float32 algebra."""
SHOWN_CHARS = 80
"""Values echoed into messages are cut to about this many characters (see :func:`short_repr`)."""
_DTYPES = {  # safetensors dtype -> (torch dtype name, bytes per element)
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U64": ("uint64", 8),
    "U32": ("uint32", 4),
    "U16": ("uint16", 2),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "AdapterLoadError",
    "load_adapter",
    "load_adapter_from_files",
    "load_adapters",
    "pattern_value",
    "recover_interrupted_save",
    "save_adapter",
    "short_repr",
    "short_text",
]


class AdapterLoadError(ValueError):
    """An adapter that cannot be loaded faithfully; the message names the file and the problem."""


def short_text(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to about ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}… ({len(text):,} characters)"


def short_repr(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a value from a file (a 100 MB string)
    must never be echoed whole into a message. Long strings are sliced before ``repr``."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[: limit - 24]!r}… ({len(value):,} characters)"
    if isinstance(value, list | tuple | dict) and len(value) > limit:
        return f"{type(value).__name__} of {len(value):,} items"
    return short_text(repr(value), limit)


def _short_list(items: Iterable[str]) -> str:
    return "[" + ", ".join(short_repr(i, 40) for i in items) + "]"


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

    The weights file is streamed: its header is read and checked first (header size, dtypes,
    shapes, offsets, and the file size it implies), then each LoRA factor is read on its own and
    upcast, so the peak memory is about the float32 result, never the whole file twice.

    Args:
        path: the adapter folder (or its ``adapter_config.json`` / ``adapter_model.safetensors``).
        name: display name; defaults to the folder name.

    Returns:
        The adapter; ``sha256`` is the hash of the weights file, ``source`` the folder path, and
        ``warnings`` lists payload that is not merged and settings PEFT would not apply.

    Raises:
        AdapterLoadError: the folder is not a mergeable PEFT LoRA adapter; the message names the
            file and the reason (pickle weights, DoRA, another PEFT type, bad shapes, a file that
            is a folder / FIFO / device, an unreadable file, ...).
    """
    try:
        return _load_dir(Path(path), name)
    except OSError as err:  # permissions, I/O errors, a folder that vanished, ...
        raise AdapterLoadError(_os_message(err, path)) from None


def _load_dir(path: Path, name: str | None) -> Adapter:
    root = _adapter_dir(path)
    config_file, weights_file = root / CONFIG_NAME, root / WEIGHTS_NAME
    notes = _ignored_pickle_notes(p.name for p in root.iterdir() if p.is_file())
    subs = sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())
    if subs:
        notes.append(f"more adapters in sub-folders, not loaded here: {', '.join(subs)}")
    with _open_regular(weights_file) as weights:
        return _build_adapter(
            config=(_read_config_file(config_file), str(config_file)),
            weights=(weights, str(weights_file)),
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
        raise ValueError(f"an uploaded adapter needs a non-empty name, got {short_repr(name)}")
    by_name = {Path(k).name: bytes(v) for k, v in files.items()}
    weights_name = _uploaded_weights_name(by_name)
    weights = BytesIO(by_name[weights_name])
    if CONFIG_NAME not in by_name:
        label = f"uploaded {weights_name}"
        _refuse_foreign(_safetensors_keys(weights, label), label)
        raise AdapterLoadError(
            f"uploaded adapter {short_repr(name)}: {CONFIG_NAME} is missing (got "
            f"{_names(by_name)}); a PEFT adapter needs both its config and its weights"
        )
    config = by_name[CONFIG_NAME]
    _check_config_size(len(config), f"uploaded {CONFIG_NAME}")
    return _build_adapter(
        config=(config, f"uploaded {CONFIG_NAME}"),
        weights=(weights, f"uploaded {weights_name}"),
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
    if not os.path.lexists(path):
        raise AdapterLoadError(f"{path}: no such file or folder")
    if not path.is_dir():
        _refuse_odd_file(path)
        return _dir_of_file(path)
    config, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    has_config, has_weights = os.path.lexists(config), os.path.lexists(weights)
    for present, file in ((has_config, config), (has_weights, weights)):
        if present:
            _refuse_odd_file(file)
    if has_config and has_weights:
        return path
    if has_weights:
        _refuse_foreign(_file_keys(weights), path)
        raise AdapterLoadError(f"{config}: missing; the weights alone cannot be read")
    _refuse_pickles(path)
    if has_config:
        raise AdapterLoadError(f"{weights}: missing (the folder has only its config)")
    _refuse_sub_folders(path)
    for st in sorted(path.glob("*.safetensors")):
        if _odd_kind(st) is None:
            _refuse_foreign(_file_keys(st), st)
    raise AdapterLoadError(f"{config}: missing; {path} is not a PEFT adapter folder")


def _dir_of_file(path: Path) -> Path:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise AdapterLoadError(_pickle_message(str(path)))
    if path.name in (CONFIG_NAME, WEIGHTS_NAME):
        return _adapter_dir(path.parent)
    if path.suffix.lower() == ".safetensors":
        _refuse_foreign(_file_keys(path), path)
    raise AdapterLoadError(
        f"{path}: a PEFT adapter is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}; "
        "pass that folder"
    )


def _odd_kind(path: Path) -> str | None:
    """What ``path`` is when it is not a regular file (or a link to one); None when it is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken symbolic link" if os.path.islink(path) else "missing"
    kinds = (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    kind = next((k for test, k in kinds if test(mode)), "not a regular file")
    if kind is not None and os.path.islink(path):
        kind += f" (a symbolic link to {short_repr(os.readlink(path))})"
    return kind


def _refuse_odd_file(path: Path) -> None:
    kind = _odd_kind(path)
    if kind is not None:
        raise AdapterLoadError(f"{path}: is {kind}, not a regular file; it was not read")


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading without ever blocking (a FIFO swapped in is refused, not read)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AdapterLoadError(f"{path}: is {_odd_kind(path)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_config_file(path: Path) -> bytes:
    with _open_regular(path) as fh:
        _check_config_size(os.fstat(fh.fileno()).st_size, str(path))
        return fh.read(MAX_CONFIG_BYTES + 1)


def _check_config_size(size: int, where: str) -> None:
    if size > MAX_CONFIG_BYTES:
        raise AdapterLoadError(
            f"{where}: {size:,} bytes; a PEFT adapter config is a few KB, and configs over "
            f"{MAX_CONFIG_BYTES // 2**20} MiB are refused unread"
        )


def _file_keys(path: Path) -> list[str]:
    """Tensor names in a safetensors file's header (nothing else is read)."""
    with _open_regular(path) as fh:
        return _safetensors_keys(fh, str(path))


def _os_message(err: OSError, path: object) -> str:
    where = err.filename if err.filename is not None else path
    return f"{where}: cannot be read ({err.strerror or type(err).__name__})"


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
    weights: tuple[BinaryIO, str],
    name: str,
    source: str,
    notes: list[str],
) -> Adapter:
    """Parse the config (``(bytes, label)``) and stream the weights (``(file, label)``)."""
    cfg, cfg_notes = _read_config(_parse_json(*config), config[1])
    fh, where = weights
    header = _read_header(fh, where)
    parts, other = _group_tensors(header.entries, where)
    if not parts:
        _refuse_foreign(list(header.entries), where)
        raise AdapterLoadError(
            f"{where}: no LoRA factors (lora_A/lora_B or lora_embedding_A/B) among "
            f"{len(header.entries)} tensors, e.g. {_short_list(sorted(header.entries)[:3])}"
        )
    tensors, sha = _read_tensors(fh, header, _factor_labels(parts, where), where)
    built = {
        module: _module(module, parts[module], tensors, cfg, where)
        for module in sorted(parts, key=_natural_key)
    }
    del tensors
    modules = {m: mod for m, (mod, _) in built.items()}
    module_notes = _scale_notes({m: s for m, (_, s) in built.items()}, cfg, config[1])
    module_notes += _target_notes(cfg, list(modules), config[1])
    return Adapter(
        name=name,
        modules=modules,
        config=cfg,
        warnings=tuple(notes + cfg_notes + _payload_notes(other) + module_notes),
        source=source,
        sha256=sha,
    )


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise AdapterLoadError(f"{where}: not valid JSON ({short_text(str(err))})") from None
    if not isinstance(raw, dict):
        raise AdapterLoadError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return raw


# --- safetensors, streamed ------------------------------------------------------------------


class _Entry(NamedTuple):
    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets in the data section
    end: int


class _Header(NamedTuple):
    length: int  # 8 + JSON header bytes: where the data section starts
    entries: dict[str, _Entry]


def _read_header(fh: BinaryIO, where: str) -> _Header:
    """Read and check a safetensors header against the file size; no tensor data is read.

    Checks: the 8-byte length fits the file and safetensors' limit, the header is a JSON
    object, every tensor has a known dtype, a shape of non-negative ints and offsets whose span
    is ``numel · itemsize``, and the tensors tile the data section exactly (no gap, no overlap,
    no missing or trailing bytes).
    """
    size = fh.seek(0, os.SEEK_END)
    fh.seek(0)
    if size < 8:
        _corrupt(where, f"{size} bytes, shorter than the 8-byte header length")
    length = int.from_bytes(fh.read(8), "little")
    if length > min(size - 8, MAX_HEADER_BYTES):
        _corrupt(where, f"the header claims {length:,} bytes but the file has {size:,}")
    try:
        raw = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        _corrupt(where, f"the header is not valid JSON ({short_text(str(err))})")
    if not isinstance(raw, dict):
        _corrupt(where, f"the header is a JSON {type(raw).__name__}, not an object")
    entries = {key: _entry(key, info, where) for key, info in raw.items() if key != "__metadata__"}
    _check_tiling(entries, size - 8 - length, where)
    if not entries:
        raise AdapterLoadError(f"{where}: holds no tensors")
    return _Header(8 + length, entries)


def _entry(key: str, info: Any, where: str) -> _Entry:
    label = f"tensor {short_repr(key)}"
    if not isinstance(info, dict):
        _corrupt(where, f"{label}: expected an object, got {short_repr(info)}")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _DTYPES:
        _corrupt(where, f"{label}: unknown dtype {short_repr(dtype)}")
    if not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
        _corrupt(where, f"{label}: bad shape {short_repr(shape)} or offsets {short_repr(offsets)}")
    start, end = offsets
    if end - start != math.prod(shape) * _DTYPES[dtype][1]:
        _corrupt(
            where,
            f"{label}: offsets {start}..{end} hold {end - start:,} bytes, but {dtype} "
            f"{short_repr(shape)} needs {math.prod(shape) * _DTYPES[dtype][1]:,}",
        )
    return _Entry(key, dtype, tuple(shape), start, end)


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    )


def _check_tiling(entries: Mapping[str, _Entry], data_size: int, where: str) -> None:
    offset = 0
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != offset:
            what = "overlaps the previous one" if entry.start < offset else "leaves a gap"
            _corrupt(where, f"tensor {short_repr(entry.key)} {what} (offset {entry.start:,})")
        offset = entry.end
    if offset != data_size:
        _corrupt(
            where,
            f"the header describes {offset:,} bytes of tensor data but the file holds "
            f"{data_size:,}",
        )


def _corrupt(where: str, problem: str) -> NoReturn:
    raise AdapterLoadError(
        f"{where}: not a readable safetensors file (truncated or corrupt?): {problem}"
    )


def _read_tensors(
    fh: BinaryIO, header: _Header, wanted: Mapping[str, str], where: str
) -> tuple[dict[str, torch.Tensor], str]:
    """Read the ``wanted`` tensors (key -> label), each checked and upcast to float32 on its own,
    and the SHA-256 of the whole file, in one sequential pass (other tensors are only hashed)."""
    sha = hashlib.sha256()
    fh.seek(0)
    sha.update(fh.read(header.length))
    tensors: dict[str, torch.Tensor] = {}
    for entry in sorted(header.entries.values(), key=lambda e: e.start):
        size = entry.end - entry.start
        if entry.key not in wanted:
            _hash_through(fh, size, sha, f"{where}: tensor {short_repr(entry.key)}")
            continue
        label = wanted[entry.key]
        try:
            buf = bytearray(size)
            if fh.readinto(buf) != size:
                raise AdapterLoadError(f"{label}: the file ended early (truncated while reading?)")
            sha.update(buf)
            tensors[entry.key] = _checked_float32(_tensor(buf, entry), label)
        except (MemoryError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "alloc" not in str(err):
                raise
            raise AdapterLoadError(
                f"{label}: not enough memory to load this {entry.dtype} tensor of {size:,} "
                "bytes as float32"
            ) from None
        del buf
    return tensors, sha.hexdigest()


def _hash_through(fh: BinaryIO, size: int, sha: Any, label: str) -> None:
    chunk = bytearray(min(size, 1 << 20))
    view = memoryview(chunk)
    while size > 0:
        got = fh.readinto(view[: min(size, len(chunk))])
        if not got:
            raise AdapterLoadError(f"{label}: the file ended early (truncated while reading?)")
        sha.update(view[:got])
        size -= got


def _tensor(buf: bytearray, entry: _Entry) -> torch.Tensor:
    dtype = getattr(torch, _DTYPES[entry.dtype][0])
    if not buf:
        return torch.empty(entry.shape, dtype=dtype)
    flat = torch.frombuffer(buf, dtype=dtype)
    if sys.byteorder != "little":  # pragma: no cover - safetensors data is little-endian
        flat = flat.view(torch.uint8).view(-1, _DTYPES[entry.dtype][1]).flip(1).view(dtype)
    return flat.reshape(entry.shape)


def _safetensors_keys(fh: BinaryIO, where: str) -> list[str]:
    return list(_read_header(fh, where).entries)


def _read_config(raw: Mapping[str, Any], where: str) -> tuple[AdapterConfig, list[str]]:
    """Validate the fields that change ΔW; refuse what cannot be merged; note what is dropped."""
    notes = _refuse_config(raw, where)
    rank_pattern = _pattern(raw, "rank_pattern", where, positive_int=True)
    alpha_pattern = _pattern(raw, "alpha_pattern", where, positive_int=False)
    cfg = AdapterConfig(
        r=_positive_int(raw.get("r", 8), f"{where}: r"),
        lora_alpha=_number(raw.get("lora_alpha", 8), f"{where}: lora_alpha"),
        use_rslora=_flag(raw, "use_rslora", where),
        target_modules=_target_modules(raw.get("target_modules"), where),
        base_model=str(raw.get("base_model_name_or_path") or ""),
        task_type=str(raw.get("task_type") or ""),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        fan_in_fan_out=_flag(raw, "fan_in_fan_out", where),
        raw=dict(raw),
    )
    return cfg, notes + _config_notes(raw)


def _target_modules(value: Any, where: str) -> str | list[str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise AdapterLoadError(
        f"{where}: target_modules must be a string (regex) or a list of names, got "
        f"{short_repr(value)}"
    )


def _refuse_config(raw: Mapping[str, Any], where: str) -> list[str]:
    peft_type = raw.get("peft_type")
    if peft_type is None:
        return ["the config has no peft_type; read as a LoRA adapter"]
    if str(peft_type).upper() != "LORA":
        raise AdapterLoadError(
            f"{where}: peft_type is {short_repr(peft_type)}; only LoRA adapters (peft_type 'LORA') "
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
            f"{where}: target_parameters={short_repr(raw['target_parameters'])}; LoRA on raw "
            "parameters (e.g. fused MoE experts) is not supported"
        )
    return []


def _config_notes(raw: Mapping[str, Any]) -> list[str]:
    notes = []
    if raw.get("modules_to_save"):
        notes.append(
            f"modules_to_save={short_repr(raw['modules_to_save'])}: these layers were trained in "
            "full; their weights are not part of the LoRA update and are not merged"
        )
    if raw.get("trainable_token_indices"):
        notes.append("trainable_token_indices is set: the trained token embeddings are not merged")
    if raw.get("lora_bias"):
        notes.append("lora_bias is true: the adapter's extra lora_B bias is not merged")
    if raw.get("bias") not in (None, "none"):
        notes.append(f"bias={short_repr(raw['bias'])}: trained bias vectors are not merged")
    init = str(raw.get("init_lora_weights", True)).lower()
    if init.startswith(_MUTATING_INITS):
        notes.append(
            f"init_lora_weights={short_repr(raw['init_lora_weights'])} changes the base weights "
            "at init; unless the adapter was converted, its ΔW is relative to that changed base"
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
        raise AdapterLoadError(f"{where}: {field} must be an object, got {short_repr(pattern)}")
    out = {}
    for key, value in pattern.items():
        try:
            peft_key_matches(key, "")  # parses and plans the key once (cached)
        except PatternRefused as err:
            raise AdapterLoadError(f"{where}: {field} key {short_repr(key)}: {err}") from None
        label = f"{where}: {field}[{short_repr(key)}]"
        out[key] = _positive_int(value, label) if positive_int else _number(value, label)
    return out


def _positive_int(value: Any, label: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON writers may emit 8.0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AdapterLoadError(f"{label} must be a positive integer, got {short_repr(value)}")
    return value


def _number(value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdapterLoadError(f"{label} must be a finite number, got {short_repr(value)}")
    return float(value)


def _flag(raw: Mapping[str, Any], field: str, where: str) -> bool:
    value = raw.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise AdapterLoadError(f"{where}: {field} must be true or false, got {short_repr(value)}")
    return value


# --- tensors -> modules ---------------------------------------------------------------------


def _group_tensors(
    entries: Mapping[str, _Entry], where: str
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``module -> {"kind", "A", "B"}`` (header entries) and the keys that are not LoRA factors.

    Everything here is decided from the header, before any tensor data is read.
    """
    parts: dict[str, dict[str, Any]] = {}
    other: list[str] = []
    for key, entry in entries.items():
        short = key.removeprefix(PREFIX)
        if "lora_magnitude_vector" in short:
            raise AdapterLoadError(
                f"{where}: holds DoRA magnitude vectors ({short_repr(key)}); DoRA is not a "
                "plain B·A update"
            )
        match = _LINEAR_KEY.fullmatch(short) or _EMBEDDING_KEY.fullmatch(short)
        if match is None:
            other.append(short)
            continue
        kind = "linear" if match.re is _LINEAR_KEY else "embedding"
        module = match["module"]
        entry_set = parts.setdefault(module, {"kind": kind})
        if entry_set["kind"] != kind:
            raise AdapterLoadError(
                f"{where}: module {short_repr(module)} has both linear and embedding factors"
            )
        if match["side"] in entry_set:
            raise AdapterLoadError(
                f"{where}: module {short_repr(module)} has two lora_{match['side']} tensors "
                "(with and without the base_model.model. prefix?)"
            )
        entry_set[match["side"]] = entry
    for module, part in parts.items():
        for side, label in zip("AB", _factor_names(part), strict=True):
            if side not in part:
                raise AdapterLoadError(
                    f"{where}: module {short_repr(module)} has no {label}; it needs both"
                )
    return parts, other


def _factor_names(part: Mapping[str, Any]) -> tuple[str, str]:
    if part["kind"] == "embedding":
        return ("lora_embedding_A", "lora_embedding_B")
    return ("lora_A.weight", "lora_B.weight")


def _factor_labels(parts: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, str]:
    """Tensor key -> the label its errors carry (``"<file>: <module>.lora_A.weight"``)."""
    labels = {}
    for module, part in parts.items():
        for side, name in zip("AB", _factor_names(part), strict=True):
            labels[part[side].key] = f"{where}: {short_text(module)}.{name}"
    return labels


def _module(
    module: str,
    part: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    cfg: AdapterConfig,
    where: str,
) -> tuple[LoraModule, float]:
    """Check one module's factors against the config, fold the scale into ``B``; return the
    module and its scale."""
    names = _factor_names(part)
    A, B = tensors[part["A"].key], tensors[part["B"].key]  # (r, d_in), (d_out, r)
    shown = short_repr(module)
    if B.shape[1] != A.shape[0]:
        raise AdapterLoadError(
            f"{where}: module {shown}: {names[0]} {tuple(A.shape)} and {names[1]} "
            f"{tuple(B.shape)} disagree on the rank"
        )
    rank = _pattern_lookup(cfg.rank_pattern, module, cfg.r, where)
    if A.shape[0] != rank:
        raise AdapterLoadError(
            f"{where}: module {shown} has rank {A.shape[0]} in the weights but the config "
            f"gives it r={rank} (r / rank_pattern)"
        )
    alpha = _pattern_lookup(cfg.alpha_pattern, module, cfg.lora_alpha, where)
    scale = _scale(alpha, rank, rslora=cfg.use_rslora)
    B = B.mul_(scale)  # (d_out, r), scale folded; B is our own float32 copy
    _refuse_overflow(A, B, f"{where}: module {shown}")
    embedding = part["kind"] == "embedding"
    module_out = LoraModule(B=B, A=A, kind=part["kind"], transposed=embedding or cfg.fan_in_fan_out)
    return module_out, scale


def _pattern_lookup(pattern: Mapping[str, Any], module: str, default: Any, where: str) -> Any:
    try:
        return pattern_value(pattern, module, default=default)
    except PatternRefused as err:
        raise AdapterLoadError(
            f"{where}: module {short_repr(module)}: its rank/alpha pattern cannot be matched in "
            f"bounded time: {err}"
        ) from None


def _refuse_overflow(A: torch.Tensor, B: torch.Tensor, label: str) -> None:
    """Refuse factors whose update is too large for float32 algebra (norms, Grams, SVD square
    their values): ``‖B‖_F · ‖A‖_F`` or either norm beyond ``sqrt(float32 max)`` ≈ 1.8e19."""
    # float32 norms (no copies): one that overflows to inf is above the limit anyway
    norm_a = float(torch.linalg.vector_norm(A))
    norm_b = float(torch.linalg.vector_norm(B))
    if not (norm_a <= FLOAT32_SAFE and norm_b <= FLOAT32_SAFE and norm_a * norm_b <= FLOAT32_SAFE):
        raise AdapterLoadError(
            f"{label}: ‖B‖·‖A‖ = {norm_b:.3g} · {norm_a:.3g} (scale folded) exceeds "
            f"{FLOAT32_SAFE:.2g}, the square root of the float32 maximum: the factors are finite "
            "but their update overflows float32 norms and SVDs; this is not a trained adapter"
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
    # One float32 reduction, no temporary copy: any NaN/Inf makes the sum non-finite; only then
    # (or when huge finite values overflow the sum) are the values checked one by one. A
    # float64 sum would allocate a float64 copy per tensor, and those freed copies fragment the
    # heap so much that the peak doubled on glibc.
    if not math.isfinite(float(t.sum())):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise AdapterLoadError(f"{label} holds {bad} NaN/Inf value(s)")
    return t


def _scale_notes(scales: Mapping[str, float], cfg: AdapterConfig, config_where: str) -> list[str]:
    """Refuse an adapter whose every scale is 0 (ΔW ≡ 0); note modules with scale 0."""
    zero = [m for m, s in scales.items() if s == 0.0]
    if zero and len(zero) == len(scales):
        why = "lora_alpha is 0" if cfg.lora_alpha == 0 else "alpha_pattern sets alpha 0"
        raise AdapterLoadError(
            f"{config_where}: {why} for every module, so every scale alpha / r is 0 and every "
            "ΔW is exactly zero: there is nothing to merge (a zero adapter only dilutes the "
            "others)"
        )
    if not zero:
        return []
    return [
        f"{len(zero)} of {len(scales)} modules have alpha 0 (alpha_pattern), so their ΔW is "
        f"exactly zero, e.g. {_short_list(zero[:2])}"
    ]


def _target_notes(cfg: AdapterConfig, modules: list[str], where: str) -> list[str]:
    """Warn when ``target_modules`` would not select the modules the weights hold: PEFT
    injects LoRA layers by ``target_modules`` and ignores weights for other modules."""
    target = cfg.target_modules
    if target is None or (isinstance(target, str) and target.lower() == "all-linear"):
        return []
    missed = [m for m in modules if not _targeted(target, m, where)]
    if not missed:
        return []
    shown = short_repr(target)
    if len(missed) == len(modules):
        return [
            f"target_modules {shown} matches none of the {len(modules)} modules in the weights "
            f"(e.g. {_short_list(modules[:2])}): PEFT would apply this adapter to no layer; "
            "merged here by the weights' own module names"
        ]
    return [
        f"target_modules {shown} does not match {len(missed)} of the {len(modules)} modules in "
        f"the weights (e.g. {_short_list(missed[:2])}): PEFT would not apply those"
    ]


def _targeted(target: str | list[str], module: str, where: str) -> bool:
    """PEFT's rule: a string is a regex that must match the whole module path; a list entry
    matches the path itself or its last dotted components."""
    if isinstance(target, str):
        try:
            return peft_fullmatch(target, module)
        except PatternRefused as err:
            raise AdapterLoadError(
                f"{where}: target_modules {short_repr(target)} cannot be matched in bounded "
                f"time: {err}"
            ) from None
    return any(module == t or module.endswith(f".{t}") for t in target)


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
    recover_interrupted_save(target)
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
            raise TypeError(
                f"module {short_repr(name)} must be a LoraModule, got {type(mod).__name__}"
            )
        if not (torch.isfinite(mod.A).all() and torch.isfinite(mod.B).all()):
            raise ValueError(
                f"module {short_repr(name)} has NaN or Inf in its factors; refusing to save"
            )
        if mod.rank == 0:
            raise ValueError(
                f"module {short_repr(name)} has rank 0; PEFT needs r >= 1 (drop the module)"
            )
        if mod.kind == "embedding" and not mod.transposed:
            raise ValueError(
                f"embedding module {short_repr(name)} must have transposed=True, got False"
            )
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
    except PatternRefused:
        pass  # a name that is not a valid (or bounded) regex: fall through to the escaped form
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
            raise TypeError(
                "safetensors metadata must map str to str, got "
                f"{short_repr(key)}: {short_repr(value)}"
            )
        if key == "format" and value != "pt":
            raise ValueError(
                f"metadata 'format' must be 'pt' for a PEFT adapter, got {short_repr(value)}"
            )
        out[key] = value
    return out


def _extra_files_for_save(extra_files: Mapping[str, str | bytes] | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, content in (extra_files or {}).items():
        if name in (CONFIG_NAME, WEIGHTS_NAME):
            raise ValueError(f"extra file {short_repr(name)} would overwrite the adapter itself")
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"extra file names must be plain file names, got {short_repr(name)}")
        if isinstance(content, str):
            out[name] = content.encode("utf-8")
        elif isinstance(content, bytes | bytearray):
            out[name] = bytes(content)
        else:
            kind = type(content).__name__
            raise TypeError(f"extra file {short_repr(name)} must be str or bytes, got {kind}")
    return out


def _write_dir_atomically(target: Path, files: Mapping[str, bytes], *, overwrite: bool) -> None:
    """Write ``files`` into a temp folder next to ``target``, then rename it into place.

    The temp folder is ``.<name>.tmp-<pid>-<random>`` (and the folder an overwrite moves aside
    ``.<name>.old-<pid>-<random>``), so a later save can tell a dead writer's leftovers from a
    live one's (:func:`recover_interrupted_save`).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
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
        _rename_new(tmp, target)
        return
    if not overwrite:  # appeared while we were writing
        raise ValueError(_raced(target))
    old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(target, old)
    except FileNotFoundError:  # another save is swapping the same target right now
        _rename_new(tmp, target)
        return
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _rename_new(tmp: Path, target: Path) -> None:
    """``tmp -> target`` where ``target`` should not exist; a racing save that got there first
    is the documented refusal, not ``OSError: Directory not empty``."""
    try:
        os.rename(tmp, target)
    except OSError:
        if target.exists():
            raise ValueError(_raced(target)) from None
        raise


def _raced(target: Path) -> str:
    return (
        f"cannot save an adapter to {str(target)!r}: the folder already exists (another save "
        "wrote it while this one was writing); nothing was changed"
    )


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>\d+)-)?[^-]+")
STALE_SECONDS = 3600
"""A leftover temp folder older than this is stale even if its writer's process id is in use."""


def recover_interrupted_save(path: str | os.PathLike[str]) -> list[str]:
    """Repair what a killed save to ``path`` left next to it; say what was done, in plain words.

    * ``.<name>.old-*`` without ``path``: an overwrite was killed between its two renames; the
      previous adapter is renamed back to ``path`` (the new one never got confirmed).
    * ``.<name>.old-*`` next to an existing ``path``: only the clean-up was lost; removed.
    * ``.<name>.tmp-*``: a half-written or never-swapped save; removed.

    Only leftovers whose writer is gone are touched: the process id in the name is not running
    on this machine, or the folder is older than :data:`STALE_SECONDS` (folders named by an
    older version carry no process id and count as gone once a minute old).

    Returns:
        One note per folder restored or removed.
    """
    target = Path(path)
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return []  # no parent yet (or unreadable): nothing to recover, the save will say why
    notes = []
    leftovers = [(p, m) for p in siblings if (m := _LEFTOVER.fullmatch(p.name))]
    for folder, match in sorted(leftovers, key=lambda pm: pm[0].name):
        if match["name"] != target.name or folder.is_symlink() or not folder.is_dir():
            continue
        if not _writer_gone(folder, match["pid"]):
            continue
        if match["kind"] == "old" and not os.path.lexists(target):
            try:
                os.rename(folder, target)
            except OSError:
                continue
            notes.append(f"restored {target} from {folder.name}, left by an interrupted overwrite")
            continue
        shutil.rmtree(folder, ignore_errors=True)
        notes.append(f"removed {folder.name}, left next to {target.name} by an interrupted save")
    return notes


def _writer_gone(folder: Path, pid: str | None) -> bool:
    try:
        age = time.time() - folder.stat().st_mtime
    except OSError:
        return False
    if age > STALE_SECONDS:
        return True
    if pid is None:
        return age > 60
    if int(pid) == os.getpid() or os.name != "posix":
        return False  # our own (another thread's) save, or no cheap liveness test here
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


# --------------------------------------------------------------------------------------------
# PEFT's pattern semantics
# --------------------------------------------------------------------------------------------


def pattern_value(pattern: Mapping[str, Any], module: str, *, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup for one module path.

    A key matches when ``re.match(rf"(.*\\.)?({key})$", module)`` would succeed (a regex that
    must match a dotted suffix of the path); the first matching key in dict order wins; no match
    gives ``default``. Same semantics as ``peft.utils.other.get_pattern_key``, but evaluated
    without backtracking (:mod:`merging_core.keymatch`), so a hostile key cannot hang the load.

    Raises:
        PatternRefused: a key that is not a valid regex or cannot be matched in bounded time.
    """
    key = first_matching_key(pattern, module)
    return default if key is None else pattern[key]


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
