"""``merge-lab tara``: learn TARA-Merging weights on a sample bundle and score the merge.

    merge-lab tara --bundle vision8 --variant {a,b} [--rho R1,R2,...] [--alpha A] [--steps N]
                   [--scalarisation stch|stch_abs|linear] [--lr LR] [--seed S]
                   [--device auto|cpu|cuda] [--out DIR] [--json]

Runs :func:`merging_core.methods.tara.run_tara` on the bundle's unlabeled validation inputs
(CUDA when present, else CPU), then reports per-task test accuracy, normalised accuracy, the
anchors and the loss curve's ends. ``--out`` exports the merge as a PEFT adapter.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from merging_core.cli.merge_cmd import TextBar
from merging_core.methods.tara import DEFAULT_ENTROPY_SCALE
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
    parser.add_argument("--steps", type=int, default=250, help="optimisation steps (250)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (1e-3)")
    parser.add_argument(
        "--entropy-scale", type=float, default=DEFAULT_ENTROPY_SCALE,
        help=f"logit scale inside the entropy objective ({DEFAULT_ENTROPY_SCALE:g}; official: 1)",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="export the merge as a PEFT adapter here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)


def add_bundle_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by the tara / tradeoff / sensitivity commands."""
    parser.add_argument("--bundle", default="vision8", help="sample bundle name (vision8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order (0)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """``(bundle, adapter_set, context)`` on the chosen device."""
    from merging_core.bundles import load_bundle

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {args.device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA device is available")
    bundle = load_bundle(args.bundle)
    return bundle, bundle.adapter_set(), bundle.context(device)


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
    from merging_core.methods.tara import run_tara

    bundle, adapters, context = load(args)
    rho = [float(v) for v in args.rho.split(",")] if args.rho else None
    tara = run_with_bar(args, lambda bar: run_tara(
        adapters, context, variant=args.variant, rho=rho, alpha=args.alpha,
        scalarisation=args.scalarisation, steps=args.steps, lr=args.lr, seed=args.seed,
        entropy_scale=args.entropy_scale, progress=bar,
    ))  # fmt: skip
    scores = bundle.evaluate(tara.result)
    summary = _summary(tara, scores, str(context.device))
    if args.out:
        summary["export"] = _export(tara.result, args.out, args.overwrite)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(_lines(summary, bundle)))
    return 0


def _summary(tara: Any, scores: dict[str, Any], device: str) -> dict[str, Any]:
    return {
        "method": tara.method, "rho": list(tara.rho), "alpha": tara.alpha,
        "scalarisation": tara.scalarisation, "steps": tara.steps_done, "seconds": tara.seconds,
        "device": device, "anchors": list(tara.anchors),
        "loss_first": tara.losses[0] if tara.losses else None,
        "loss_last": tara.losses[-1] if tara.losses else None,
        "scores": scores,
    }  # fmt: skip


def _export(result: Any, out: str, overwrite: bool) -> str:
    from merging_core.export import export_merge

    export_merge(result, out, overwrite=overwrite)
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
