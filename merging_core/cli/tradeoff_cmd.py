"""``merge-lab tradeoff``: two-task preference sweep (TARA-A/B, AdaMerging) and baselines.

    merge-lab tradeoff --bundle vision8 --tasks I J [--points K] [--methods tara_b,adamerging_layer]
                       [--steps N] [--warm-steps M] [--no-baselines] [--json]

Merges only the two tasks' adapters, sweeps ρ = (t, 1 − t) with continuation, adds the
data-free baselines' operating points, and prints every point with its normalised test accuracy
on both tasks; points on the Pareto front are starred.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from merging_core.cli.tara_cmd import add_bundle_args, load, normalised_scores, run_with_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tradeoff",
        help="two-task preference sweep with TARA/AdaMerging plus baselines, Pareto front",
        description="Sweep the preference between two tasks and trace each method's trade-off.",
    )
    add_bundle_args(parser)
    parser.add_argument("--tasks", nargs=2, required=True, metavar=("I", "J"),
                        help="two task names or 0-based indices")  # fmt: skip
    parser.add_argument("--points", type=int, default=11, help="grid points in t (11)")
    parser.add_argument("--methods", default="tara_a,tara_b,adamerging_layer",
                        help="comma list of registered preference methods (tara_a, tara_b, "
                             "adamerging_layer: layer-wise, TARA-repo variant)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None,
                        help="steps of the first point (default: the sweep's own schedule, "
                             "tradeoff.SWEEP_STEPS; 0 = the method's schedule)")  # fmt: skip
    parser.add_argument("--warm-steps", type=int, default=None,
                        help="steps per warm-started point (default: tradeoff.SWEEP_WARM_STEPS; "
                             "0 = the method's default)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=1.0, help="STCH smoothing α (1.0)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (1e-3)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merging_core.tradeoff import SWEEP_STEPS, SWEEP_WARM_STEPS, two_task_sweep

    steps = SWEEP_STEPS if args.steps is None else args.steps
    warm_steps = SWEEP_WARM_STEPS if args.warm_steps is None else args.warm_steps
    bundle, adapters, task_data = load(args)
    tasks = [int(t) if t.isdigit() else t for t in args.tasks]
    methods = {m.strip(): sweep_params(m.strip(), args) for m in args.methods.split(",") if m.strip()}
    result = run_with_bar(args, lambda bar: two_task_sweep(
        adapters, task_data, normalised_scores(bundle), tasks=tasks, points=args.points,
        methods=methods, steps=steps, warm_steps=warm_steps,
        baselines=not args.no_baselines, seed=args.seed, progress=bar,
    ))  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(_lines(result)))
    return 0


def sweep_params(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fixed parameters of a swept method: lr for all, α for TARA, AdaMerging's ρ-weighted variant."""
    from merging_core.tradeoff import DEFAULT_SWEEP

    params: dict[str, Any] = {**DEFAULT_SWEEP.get(method, {}), "lr": args.lr}
    if method.startswith("tara_"):
        params["alpha"] = args.alpha
    return params


def _lines(result: Any) -> list[str]:
    a, b = result.tasks
    lines = [
        f"trade-off {a} vs {b} (normalised test accuracy; * = Pareto front)",
        f"{'method':<18} {'point':<8} {a[:10]:>10} {b[:10]:>10} {'mean':>7} {'sec':>6}",
    ]
    front = set(result.front)
    for i, p in enumerate(result.points):
        star = "*" if i in front else " "
        lines.append(
            f"{star}{p.method:<17} {p.label:<8} {100 * p.scores[0]:9.1f}% "
            f"{100 * p.scores[1]:9.1f}% {50 * sum(p.scores):6.1f}% {p.seconds:6.1f}"
        )
    for label, reason in result.skipped.items():
        lines.append(f"skipped {label}: {reason}")
    return lines
