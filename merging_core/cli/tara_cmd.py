"""``merge-lab tara``: learn TARA-Merging weights on a bundle and score the merge.

    merge-lab tara --bundle vision8|nli6|FOLDER --variant {a,b} [--rho R1,R2,...] [--alpha A]
                   [--steps N] [--scalarisation stch|stch_abs|linear] [--lr LR] [--seed S]
                   [--device auto|cpu|cuda] [--out DIR] [--json]

Runs ``merge(adapters, "tara_a"|"tara_b", task_data=bundle.task_data(device), ...)`` on the
bundle's unlabeled validation inputs (CUDA when present, else CPU), then reports per-task test
accuracy, normalised accuracy, the anchors and the loss curve's ends. ``--out`` exports the merge
as a PEFT adapter whose recipe replays it (``merge-lab merge --recipe R --bundle B --out D``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

from merging_core.cli.merge_cmd import TextBar
from merging_core.preference import SCALARISATIONS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tara",
        help="learn TARA-A/B merge weights on a sample bundle and report accuracy",
        description="TARA-Merging: per-direction LoRA merge weights learned by smooth-Tchebycheff "
        "entropy minimisation on unlabeled validation inputs (https://arxiv.org/abs/2603.26299).",
    )
    add_bundle_args(parser)
    parser.add_argument("--variant", choices=("a", "b"), default="b", help="TARA variant (b)")
    parser.add_argument("--rho", default=None, help="preference, comma list (normalised; 1/N)")
    parser.add_argument("--alpha", type=float, default=1.0, help="STCH smoothing α (1.0)")
    parser.add_argument("--scalarisation", choices=SCALARISATIONS, default="stch")
    parser.add_argument("--steps", type=int, default=0,
                        help="optimisation steps (0 = official schedule: 5 epochs × min(50, "
                             "validation batches))")  # fmt: skip
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    parser.add_argument(
        "--entropy-scale", type=float, default=0.0,
        help="scale inside the entropy objective (0 = the bundle's own; 1 = un-scaled logits)",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="export the merge as a PEFT adapter here")
    parser.add_argument(
        "--history", default=os.environ.get("MERGE_LAB_HISTORY"),
        help="record the run in this history folder (default $MERGE_LAB_HISTORY)",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)


def add_bundle_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by the tara / tradeoff / sensitivity commands."""
    parser.add_argument("--bundle", default="vision8",
                        help="shipped bundle name (vision8, nli6) or a bundle folder (vision8)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order (0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(bundle, adapter_set, task_data)`` on the chosen device."""
    from merging_core.bundles import load_bundle

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle)
    return bundle, bundle.adapter_set(), bundle.task_data(device)


def pick_device(device: str) -> str:
    """``auto`` -> cuda when present else cpu; checks an explicit choice."""
    requested = device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {requested!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    return device


def normalised_scores(bundle: Any):
    """``evaluate(result, names) -> [normalised test accuracy per task]`` for the sweeps."""

    def evaluate(result, names):
        scores = bundle.evaluate(result, tasks=list(names))
        return [scores["tasks"][n]["normalized"] for n in names]

    return evaluate


def run_with_bar(args: argparse.Namespace, work):
    """Call ``work(progress)`` with a stderr bar unless ``--no-progress``."""
    bar = None if args.no_progress else TextBar(sys.stderr)
    try:
        return work(bar)
    finally:
        if bar is not None:
            bar.close()


def run(args: argparse.Namespace) -> int:
    from merging_core.merge import merge

    bundle, adapters, task_data = load(args)
    rho = [float(v) for v in args.rho.split(",")] if args.rho else None
    result = run_with_bar(args, lambda bar: merge(
        adapters, f"tara_{args.variant}", task_data=task_data, rho=rho, alpha=args.alpha,
        scalarisation=args.scalarisation, steps=args.steps, lr=args.lr, seed=args.seed,
        entropy_scale=args.entropy_scale, progress=bar,
    ))  # fmt: skip
    scores = bundle.evaluate(result)
    summary = _summary(result, scores)
    if args.history:
        from merging_core.sweep.history import record_bundle_run

        record_bundle_run(args.history, result, bundle, {"test": scores}, result.run["seconds"])
    if args.out:
        summary["export"] = _export(result, args.out, args.overwrite, bundle)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(_lines(summary, bundle)))
    return 0


def _summary(result: Any, scores: dict[str, Any]) -> dict[str, Any]:
    run, diag = result.run, result.diagnostics
    return {
        "method": result.method, "rho": diag["rho"], "alpha": diag["alpha"],
        "scalarisation": result.params["scalarisation"], "steps": run["steps_done"],
        "seconds": run["seconds"], "device": run["device"], "anchors": diag["anchors"],
        "loss_first": diag["loss_first"], "loss_last": diag["loss_last"], "scores": scores,
    }  # fmt: skip


def _export(result: Any, out: str, overwrite: bool, bundle: Any) -> str:
    """Export with a replayable recipe (inputs = the bundle's adapter folders)."""
    from merging_core.export import export_merge
    from merging_core.recipe import build_recipe, recipe_inputs

    recipe = build_recipe(result, inputs=recipe_inputs(bundle.adapter_set()))
    export_merge(result, out, overwrite=overwrite, recipe=recipe)
    return out


def _lines(summary: dict[str, Any], bundle: Any) -> list[str]:
    lines = [
        f"{summary['method']} on {bundle.name} ({summary['device']}): {summary['steps']} steps "
        f"in {summary['seconds']:.1f}s, loss {summary['loss_first']:.4f} -> "
        f"{summary['loss_last']:.4f}",
        f"{'task':<12} {'rho':>6} {'anchor':>7} {'accuracy':>8} {'normalized':>10}",
    ]
    tasks = summary["scores"]["tasks"]
    for (name, row), r, z in zip(tasks.items(), summary["rho"], summary["anchors"], strict=True):
        lines.append(
            f"{name:<12} {r:6.3f} {z:7.3f} {100 * row['accuracy']:7.1f}% "
            f"{100 * row['normalized']:9.1f}%"
        )
    lines.append(f"{'average':<12} {'':>6} {'':>7} {'':>8} "
                 f"{100 * summary['scores']['average_normalized']:9.1f}%")  # fmt: skip
    if "export" in summary:
        lines.append(f"exported to {summary['export']}")
    return lines
