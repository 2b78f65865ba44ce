"""``merge-lab inspect DIR... [--json]``: one row per PEFT adapter folder.

Each row shows name, rank(s), alpha, rsLoRA, target modules, #modules, #params, base model and
the loader's warnings. An adapter that cannot be loaded is a row carrying its error; the exit
code is then 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from merging_core.adapters import Adapter
from merging_core.io import load_adapter, pattern_value

COLUMNS = (
    ("name", "name"),
    ("rank", "rank"),
    ("alpha", "alpha"),
    ("rslora", "rsLoRA"),
    ("targets", "targets"),
    ("num_modules", "#modules"),
    ("num_params", "#params"),
    ("base_model", "base model"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise PEFT LoRA adapters (ranks, alpha, targets, warnings)",
        description="Load each PEFT adapter folder and print one row per adapter: rank(s), "
        "alpha, rsLoRA, target modules, #modules, #params, base model and anything that will "
        "not be merged. Adapters that cannot be loaded show their error (exit code 1).",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="PEFT adapter folders")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = [inspect_path(d) for d in args.dirs]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        print("\n".join(table_lines(rows)))
    return 0 if all(row["ok"] for row in rows) else 1


def inspect_path(path: str | Path) -> dict[str, Any]:
    """Load one folder and describe it; a refusal becomes ``{"ok": False, "error": ...}``."""
    try:
        adapter = load_adapter(path)
    except (ValueError, OSError, MemoryError) as err:
        message = str(err) if isinstance(err, ValueError) else _failure(err, path)
        row = dict.fromkeys(ROW_KEYS)
        row.update(name=Path(path).name, path=str(path), ok=False, error=message, warnings=[])
        return row
    return adapter_row(adapter)


def _failure(err: OSError | MemoryError, path: str | Path) -> str:
    if isinstance(err, MemoryError):
        return f"{path}: not enough memory to load this adapter"
    where = err.filename if err.filename is not None else path
    return f"{where}: {err.strerror or err or type(err).__name__}"


def adapter_row(adapter: Adapter) -> dict[str, Any]:
    """A JSON-able summary of a loaded adapter."""
    cfg = adapter.config
    alphas = [pattern_value(cfg.alpha_pattern, m, default=cfg.lora_alpha) for m in adapter.modules]
    ranks = list(adapter.ranks.values())
    scales = _scales(adapter)
    return {
        "name": adapter.name,
        "path": adapter.source,
        "ok": True,
        "error": None,
        "rank": _span(ranks),
        "rank_min": min(ranks),
        "rank_max": max(ranks),
        "alpha": _span(alphas),
        "scale": _span(scales),
        "rslora": cfg.use_rslora,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in adapter.modules}),
        "num_modules": len(adapter.modules),
        "num_params": adapter.num_params,
        "base_model": cfg.base_model,
        "task_type": cfg.task_type,
        "sha256": adapter.sha256,
        "warnings": list(adapter.warnings),
    }


ROW_KEYS = (
    "name",
    "path",
    "ok",
    "error",
    "rank",
    "rank_min",
    "rank_max",
    "alpha",
    "scale",
    "rslora",
    "target_modules",
    "num_modules",
    "num_params",
    "base_model",
    "task_type",
    "sha256",
    "warnings",
)


def _scales(adapter: Adapter) -> list[float]:
    """The LoRA scale the config gives each module (already folded into ``B``)."""
    cfg = adapter.config
    out = []
    for name, mod in adapter.modules.items():
        alpha = pattern_value(cfg.alpha_pattern, name, default=cfg.lora_alpha)
        out.append(alpha / (mod.rank**0.5 if cfg.use_rslora else mod.rank))
    return out


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A fixed-width table; warnings and errors go on indented lines under their row."""
    cells = [[_cell(row, key) for key, _ in COLUMNS] for row in rows if row["ok"]]
    headers = [title for _, title in COLUMNS]
    widths = [max(len(c) for c in col) for col in zip(headers, *cells, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    ok_rows = iter(cells)
    for row in rows:
        if not row["ok"]:
            lines.append(f"{row['name']}  REFUSED: {row['error']}")
            continue
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(next(ok_rows), widths, strict=True)).rstrip()
        )
        lines += [f"    ! {w}" for w in row["warnings"]]
    return lines


def _cell(row: dict[str, Any], key: str) -> str:
    if key == "targets":
        return ",".join(row["target_modules"])
    if key == "rslora":
        return "yes" if row["rslora"] else "no"
    if key == "num_params":
        return f"{row['num_params']:,}"
    return str(row[key] or "-")


def _span(values: list[float]) -> str:
    """``"16"`` for one value, ``"8–16"`` for a range."""
    low, high = _num(min(values)), _num(max(values))
    return low if low == high else f"{low}–{high}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
