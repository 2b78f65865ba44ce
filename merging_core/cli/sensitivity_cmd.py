"""``merge-lab sensitivity``: directional sensitivity J, κ(J) and preference misalignment ξ.

    merge-lab sensitivity --bundle vision8 [--variant a|b] [--unit-norm] [--preferences K]
                          [--batch-size B] [--json]

J is taken at Task Arithmetic λ = 0.4 (φ = 0.4 everywhere) on a fixed batch of each task's
unlabeled validation inputs; ξ is summarised over the uniform preference, the N one-task-heavy
preferences (0.7 on one task) and K Dirichlet draws. κ's definition is reconstructed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from merging_core.cli.tara_cmd import add_bundle_args, load, run_with_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sensitivity",
        help="directional sensitivity J, condition number κ(J) and misalignment ξ",
        description="Task-loss sensitivity to each merge direction (TARA §2.6, reconstructed).",
    )
    add_bundle_args(parser)
    parser.add_argument("--variant", choices=("a", "b"), default="b", help="direction bank (b)")
    parser.add_argument("--unit-norm", action="store_true", help="per unit-Frobenius direction")
    parser.add_argument("--preferences", type=int, default=8, help="Dirichlet draws for ξ (8)")
    parser.add_argument("--batch-size", type=int, default=64, help="inputs per task (64)")
    parser.add_argument("--alpha", type=float, default=1.0, help="STCH smoothing α (1.0)")
    parser.set_defaults(func=run)


def preference_set(num_tasks: int, draws: int, seed: int) -> torch.Tensor:
    """Uniform, N one-task-heavy (0.7 on one task) and ``draws`` Dirichlet rows, ``(P, N)``."""
    from merging_core.preference import sample_preferences

    rows = [torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)]
    if num_tasks > 1:
        for i in range(num_tasks):
            row = torch.full((num_tasks,), 0.3 / (num_tasks - 1), dtype=torch.float64)
            row[i] = 0.7
            rows.append(row)
    if draws > 0:
        gen = torch.Generator().manual_seed(seed)
        rows.extend(sample_preferences(draws, num_tasks=num_tasks, generator=gen))
    return torch.stack(rows)


def run(args: argparse.Namespace) -> int:
    from merging_core.sensitivity import directional_jacobian, summarise

    _, adapters, task_data = load(args)
    sens = run_with_bar(args, lambda bar: directional_jacobian(
        adapters, task_data, variant=args.variant, unit_norm=args.unit_norm,
        batch_size=args.batch_size, seed=args.seed, progress=bar,
    ))  # fmt: skip
    rhos = preference_set(len(adapters), args.preferences, args.seed)
    summary = summarise(sens, rhos, alpha=args.alpha)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print("\n".join(_lines(summary, sens)))
    return 0


def _lines(summary: dict[str, Any], sens: Any) -> list[str]:
    lines = [
        f"variant {summary['variant']}, {summary['num_directions']} directions"
        f"{', unit-norm' if summary['unit_norm'] else ''}, at Task Arithmetic λ = 0.4",
        f"κ(J) = σ_max/σ_min = {summary['kappa']:.3g}   (reconstructed definition)",
        f"ξ over preferences: mean {summary['xi_mean']:.3f}, max {summary['xi_max']:.3f}",
        f"{'task':<12} {'H':>7} {'anchor':>7} {'max|J|/min|J|':>14}  top direction",
    ]
    for i, name in enumerate(sens.task_names):
        top = summary["top_directions"][name][0]
        lines.append(
            f"{name:<12} {summary['entropies'][i]:7.3f} {summary['anchors'][i]:7.3f} "
            f"{summary['per_task_anisotropy'][name]:14.3g}  {top['module']}[{top['index']}] "
            f"({top['owner']}) J={top['J']:.3g}"
        )
    return lines
