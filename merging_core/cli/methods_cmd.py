"""``merge-lab methods [--json]``: the registered merge methods and their parameter specs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from merging_core.methods import MethodInfo, Param, available_methods


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list merge methods with their parameters",
        description="List every registered merge method: id, name, space (factors = exact "
        "low-rank route, delta = element-wise on dense ΔW), whether it needs a bundle's data, "
        "its parameters (default and bounds, settable with `merge --set k=v`) and paper link.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = [method_row(info) for info in available_methods()]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:
        print("\n".join(method_lines(row)))
    return 0


def method_row(info: MethodInfo) -> dict[str, Any]:
    """A JSON-able description of one method."""
    return {
        "id": info.name,
        "name": info.pretty_name,
        "space": info.space,
        "needs_data": info.needs_data,
        "reconstructed": info.reconstructed,
        "reference_url": info.reference_url,
        "summary": info.summary,
        "params": [param_row(p) for p in info.params],
    }


def param_row(param: Param) -> dict[str, Any]:
    default = list(param.default) if isinstance(param.default, tuple) else param.default
    row: dict[str, Any] = {"name": param.name, "kind": param.kind, "default": default}
    for key in ("low", "high", "step"):
        if getattr(param, key) is not None:
            row[key] = getattr(param, key)
    if param.choices:
        row["choices"] = list(param.choices)
    row["help"] = param.help
    return row


def method_lines(row: dict[str, Any]) -> list[str]:
    """Plain-text block for one method: header line, then one line per parameter."""
    flags = [row["space"]] + (["needs data"] if row["needs_data"] else [])
    flags += ["our reconstruction"] if row["reconstructed"] else []
    lines = [f"{row['id']:<18} {row['name']}  [{', '.join(flags)}]  {row['reference_url']}"]
    for p in row["params"]:
        lines.append(f"    --set {p['name']}={_fmt(p['default'])}  {_domain(p)}  {p['help']}")
    return lines


def _domain(p: dict[str, Any]) -> str:
    if "choices" in p:
        return "{" + "|".join(str(c) for c in p["choices"]) + "}"
    if p["kind"] == "bool":
        return "(true|false)"
    low, high = p.get("low"), p.get("high")
    bounds = (
        f"[{_fmt(low) if low is not None else '-inf'}, {_fmt(high) if high is not None else 'inf'}]"
    )
    return (
        f"({p['kind']}{', one per adapter, comma list' if p['kind'] == 'weights' else ''} {bounds})"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(_fmt(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
