"""``merge-lab geometry DIR... [--json] [--per-layer] [--per-task M]``: merge-geometry tables.

Loads the PEFT adapters in DIR... (task order = argument order), aligns them and prints
:func:`merging_core.geometry.analyse_geometry`'s per-module table (or per-layer means with
``--per-layer``, or a layers × adapters matrix of one per-task metric with ``--per-task``).
``--json`` prints the whole report (tables, per-task rows, column docs, notes) on stdout.
Sign conflicts are estimated from sampled entries with confidence intervals by default
(``--sign-samples``, ``--sign-confidence``, ``--seed``); ``--sign-exact`` counts every entry.
A progress line goes to stderr unless ``--no-progress``. ``--threads`` (default 1) sets torch's
CPU threads for this process.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import torch

from merging_core.adapters import AdapterSet
from merging_core.geometry import COLUMNS, DEFAULT_SAMPLES, TASK_METRICS, analyse_geometry

TABLE_COLUMNS = (
    "erank_task_mean",
    "erank_ta",
    "erank_dw_stack",
    "erank_rank1_stack",
    "coverage_ratio",
    "overlap_B_mean",
    "overlap_A_mean",
    "erank_B_stack",
    "erank_A_stack",
    "cur_misalignment",
    "sign_conflict_rate",
    "sign_conflict_rate_low",
    "sign_conflict_rate_high",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "geometry",
        help="merge-geometry analyses (erank stacks, coverage, crowding, SVD vs CUR, signs)",
        description="Analyse the merge geometry of LoRA adapters in factor space: spectra and "
        "effective ranks, TARA's coverage stacks, Pico's B/A crowding, SVD-vs-CUR subspaces "
        "(reconstructed) and TIES sign conflicts, per module and per layer.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="PEFT adapter folders (tasks)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--per-layer", action="store_true", help="table of per-layer means")
    parser.add_argument("--details", action="store_true", help="with --json: spectra, overlaps")
    parser.add_argument("--k", type=int, default=None, help="SVD-vs-CUR dimension (default r)")
    parser.add_argument(
        "--no-sign-conflicts", action="store_true", help="skip the dense sign-conflict pass"
    )
    parser.add_argument(
        "--sign-density", type=float, default=0.2, help="TIES trim density for trimmed conflicts"
    )
    parser.add_argument(
        "--sign-exact",
        action="store_true",
        help="count sign conflicts on every entry (forms each dense ΔW: minutes on LLM adapters) "
        "instead of estimating them from sampled entries",
    )
    parser.add_argument(
        "--sign-samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"entries sampled per module for the estimates (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument(
        "--sign-confidence", type=float, default=0.95, help="interval level of the estimates"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled positions")
    parser.add_argument(
        "--per-task",
        choices=tuple(TASK_METRICS),
        default=None,
        metavar="METRIC",
        help=f"print a layers x adapters table of one per-task metric ({', '.join(TASK_METRICS)})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the analysis is many small LAPACK problems, and on a "
        "busy machine OpenMP threads spinning on them made it >10x slower; 0 keeps torch's choice)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merging_core.io import load_adapters

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # this process only: the CLI owns it
    adapter_set = AdapterSet.from_adapters(load_adapters(args.dirs))
    for issue in adapter_set.issues:
        print(f"note: {issue}", file=sys.stderr)
    report = analyse_geometry(
        adapter_set,
        k=args.k,
        sign_conflicts=not args.no_sign_conflicts,
        sign_density=args.sign_density,
        sign_exact=args.sign_exact,
        sign_samples=args.sign_samples,
        sign_confidence=args.sign_confidence,
        generator=torch.Generator().manual_seed(args.seed),
        progress=None if args.no_progress else StderrProgress(sys.stderr),
    )
    if args.json:
        print(json.dumps(report.to_dict(details=args.details), indent=2, ensure_ascii=False))
        return 0
    if args.per_task is not None:
        print("\n".join(task_table_lines(report.task_layer_matrix(args.per_task))))
        return 0
    rows = report.per_layer if args.per_layer else report.per_module
    key = "layer" if args.per_layer else "module"
    print("\n".join(table_lines(rows, key, TABLE_COLUMNS)))
    for note in report.notes:
        print(f"note: {note}")
    return 0


def table_lines(
    rows: list[dict[str, Any]], key: str, columns: tuple[str, ...], *, spaces: bool = True
) -> list[str]:
    """A fixed-width text table: ``key`` column then ``columns`` (``-`` for missing values)."""
    width = max([len(key)] + [len(str(r[key])) for r in rows])
    heads = [key.ljust(width)] + [c.rjust(max(len(c), 8)) for c in columns]
    lines = ["  ".join(heads)]
    for r in rows:
        cells = [str(r[key]).ljust(width)]
        cells += [_fmt(r.get(c)).rjust(max(len(c), 8)) for c in columns]
        lines.append("  ".join(cells))
    if spaces:
        lines.append("spaces: " + ", ".join(f"{c}: {COLUMNS[c][0]}" for c in columns))
    return lines


def task_table_lines(matrix: dict[str, Any]) -> list[str]:
    """Layers × adapters text table of one per-task metric (the heatmap's numbers)."""
    rows = [
        {"layer": layer} | {task: matrix["values"][t][i] for t, task in enumerate(matrix["tasks"])}
        for i, layer in enumerate(matrix["layers"])
    ]
    lines = table_lines(rows, "layer", tuple(matrix["tasks"]), spaces=False)
    return lines + [f"metric: {matrix['metric']} of each adapter's ΔW (ΔW space), layer means"]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class StderrProgress:
    """``callback(fraction, message)`` drawing one overwritten progress line on a stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, fraction: float, message: str) -> None:
        filled = int(round(30 * min(max(fraction, 0.0), 1.0)))
        bar = "#" * filled + "." * (30 - filled)
        self.stream.write(f"\r[{bar}] {100 * fraction:5.1f}% {message[:60]:<60}")
        if fraction >= 1.0:
            self.stream.write("\n")
        self.stream.flush()
