"""Headless entry point ``merge-lab``: one sub-module per command, each with ``register(sub)``.

Every command module defines ``register(subparsers)`` which adds its parser and sets
``func=run`` where ``run(args) -> int``. Output is JSON with ``--json`` (machine-readable, on
stdout) or a plain table; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from merging_core import runtime

COMMANDS = (
    "inspect",
    "geometry",
    "methods",
    "merge",
    "evaluate",
    "tara",
    "tradeoff",
    "sensitivity",
    "bundle",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merge-lab", description="LoRA Merge Lab, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"merging_core.cli.{name}_cmd")
        except ModuleNotFoundError as err:
            if err.name != f"merging_core.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.configure()
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"merge-lab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
