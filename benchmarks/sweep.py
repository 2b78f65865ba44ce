"""Sweep executors side by side: the same vision8 sweep run serially, on 2 local worker
processes and on 2 Ray actors (a local Ray instance), each into a fresh folder; wall time
includes starting the workers (and Ray). The scores of the three runs must be identical.

With ``--tara`` the sweep is a cold TARA-B ρ line over two tasks (``--steps`` steps per point).

Run:  python benchmarks/sweep.py [--points 12] [--tara] [--steps 20] [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from merging_core import runtime
from merging_core.sweep import parse_spec, run_sweep, store


def scores(folder: str) -> dict[str, object]:
    return {r["key"]: r["scores"] for r in store.iter_points(folder)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--tara", action="store_true", help="a TARA-B ρ line instead of TA λ")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    runtime.configure()
    if args.tara:
        what = f"{args.points}-point TARA-B ρ line (mnist, svhn), {args.steps} steps per point"
        spec = parse_spec({
            "bundle": "vision8", "tasks": ["mnist", "svhn"], "method": "tara_b",
            "params": {"steps": args.steps}, "device": "cpu",
            "grid": {"rho": {"line": ["mnist", "svhn"], "points": args.points}},
        })  # fmt: skip
    else:
        what = f"{args.points}-point Task Arithmetic λ sweep (8 tasks scored per point)"
        spec = parse_spec({
            "bundle": "vision8", "method": "task_arithmetic",
            "grid": {"scaling": {"start": 0.05, "stop": 1.0, "num": args.points}},
        })  # fmt: skip
    runs = [("serial", 1), ("local", 2)] + ([] if args.no_ray else [("ray", 2)])
    rows, reference = [], None
    for executor, workers in runs:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            run_sweep(spec, folder, executor=executor, workers=workers)
            seconds = time.perf_counter() - start
            got = scores(folder)
        reference = reference or got
        rows.append((f"{executor}-{workers}", seconds, got == reference))
    print(f"vision8, {what}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"{'executor':<10} {'wall s':>8} {'vs serial':>10} {'same scores':>12}")
    for name, seconds, same in rows:
        print(f"{name:<10} {seconds:8.2f} {seconds / rows[0][1]:9.2f}x {str(same):>12}")


if __name__ == "__main__":
    main()
