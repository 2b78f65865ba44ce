"""``merge-lab evaluate``: merge a sample bundle's adapters and score the merge on its tasks.

    merge-lab evaluate --bundle vision8 --method NAME [--set k=v ...] [--tasks a,b,...]
                       [--split test|validation] [--seed S] [--json]

The bundle's adapters (or those of ``--tasks``, in that order) are merged with
:func:`merging_core.merge.merge`; data-driven methods get the bundle's context (frozen encoder,
zero-shot heads, unlabeled validation inputs). Prints per-task accuracy and accuracy normalised by
each adapter's own (individual fine-tuned) accuracy, and their average.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from merging_core.cli.merge_cmd import TextBar, add_set_option, parse_sets
from merging_core.merge import merge
from merging_core.methods import get_method


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="merge a sample bundle's adapters and report per-task (normalised) accuracy",
        description="Merge the adapters of a shipped sample bundle with a registered method and "
        "report each task's test accuracy, the accuracy normalised by that task's individual "
        "fine-tuned adapter, and the average normalised accuracy (the TARA/KnOTS metric).",
    )
    parser.add_argument("--bundle", default="vision8", help="sample bundle name (default vision8)")
    parser.add_argument("--method", required=True, help="method id (see `merge-lab methods`)")
    add_set_option(parser, example="scaling=0.3")
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated subset of tasks to merge and score (default all)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("test", "validation"),
        help="which labelled split to score (default test)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for stochastic methods")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merging_core.bundles import load_bundle

    info = get_method(args.method)
    params = parse_sets(info, args.sets)
    bundle = load_bundle(args.bundle)
    tasks = _task_subset(args.tasks, bundle.task_names)
    adapters = bundle.adapter_set()
    if tasks is not None:
        adapters = adapters.subset([bundle.task_names.index(t) for t in tasks])
    task_data = bundle.task_data() if info.needs_data else None
    bar = None if args.no_progress else TextBar(sys.stderr)
    try:
        result = merge(
            adapters, info.name, seed=args.seed, progress=bar, task_data=task_data, **params
        )
    finally:
        if bar is not None:
            bar.close()
    scores = bundle.evaluate(result, tasks=tasks, split=args.split)
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print("\n".join(score_lines(scores, bundle, info.name)))
    return 0


def _task_subset(text: str | None, known: tuple[str, ...]) -> list[str] | None:
    if text is None:
        return None
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise KeyError(f"--tasks {text!r}: unknown task(s) {unknown}; the bundle has {list(known)}")
    return tasks


def score_lines(scores: dict[str, Any], bundle: Any, method: str) -> list[str]:
    """A plain table: task, merged / zero-shot / individual accuracy, normalised accuracy."""
    zero, own = bundle.zero_shot_accuracy(), bundle.individual_accuracy()
    lines = [
        f"{bundle.name}: {method}",
        f"{'task':<12} {'merged':>7} {'zero-shot':>9} {'individual':>10} {'normalized':>10}",
    ]
    for name, row in scores["tasks"].items():
        lines.append(
            f"{name:<12} {100 * row['accuracy']:6.1f}% {100 * zero[name]:8.1f}% "
            f"{100 * own[name]:9.1f}% {100 * row['normalized']:9.1f}%"
        )
    lines.append(
        f"{'average':<12} {'':>7} {'':>9} {'':>10} {100 * scores['average_normalized']:9.1f}%"
    )
    return lines
