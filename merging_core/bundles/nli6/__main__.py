"""The nli6 bundle builder's command line.

``python -m merging_core.bundles.nli6 {build,measure,report}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from merging_core.bundles.nli6 import build as B
from merging_core.bundles.nli6.tasks import TASK_NAMES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m merging_core.bundles.nli6")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the bundle from scratch (about 20-40 CPU minutes)")
    b.add_argument("--out", type=Path, default=B.DEFAULT_OUT)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--steps", type=int, default=B.STEPS, help="training steps per adapter (rte: 2x)"
    )
    b.add_argument("--batch", type=int, default=B.BATCH, help="training batch size")
    b.add_argument("--lr", type=float, default=B.LR, help="peak learning rate (LoRA and head)")
    b.add_argument("--n-validation", type=int, default=B.N_VALIDATION)
    b.add_argument("--n-test", type=int, default=B.N_TEST)
    b.add_argument(
        "--tasks",
        nargs="+",
        default=list(TASK_NAMES),
        choices=TASK_NAMES,
        help="retrain only these tasks; the others must already be in --out (same settings)",
    )
    b.add_argument(
        "--rows",
        type=int,
        default=None,
        help="measure on the first ROWS rows of each validation / test file (default: all)",
    )
    m = sub.add_parser("measure", help="re-measure an existing bundle folder (minutes)")
    m.add_argument("--out", type=Path, default=B.DEFAULT_OUT)
    m.add_argument(
        "--rows",
        type=int,
        default=None,
        help="measure on the first ROWS rows of each validation / test file (default: all)",
    )
    r = sub.add_parser("report", help="print a bundle's recorded measurements as markdown")
    r.add_argument("--out", type=Path, default=B.DEFAULT_OUT)
    t = sub.add_parser(
        "time", help="CPU and wall seconds of a slider evaluation, a full one, a TARA-B run"
    )
    t.add_argument("--out", type=Path, default=B.DEFAULT_OUT)
    t.add_argument("--steps", type=int, default=250, help="TARA-B steps (250; 0: no TARA run)")
    t.add_argument("--no-full", action="store_true", help="skip the full test evaluation")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from merging_core import runtime

    os.environ.setdefault(runtime.THREADS_ENV, "2")  # the build owns the (2-core) machine
    runtime.configure()
    t0 = time.perf_counter()

    def show(fraction: float, message: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    if args.command == "time":
        from merging_core.bundles import load_bundle
        from merging_core.bundles.nli6.timing import run_timings

        print("| what | CPU s | wall s |\n|---|---:|---:|")
        for row in run_timings(
            load_bundle(str(args.out)), steps=args.steps, full=not args.no_full
        ):
            print(f"| {row['what']} | {row['cpu_s']:.2f} | {row['wall_s']:.2f} |")
        return 0
    if args.command == "report":
        print(B.report_tables(json.loads((args.out / "manifest.json").read_text())))
        return 0
    if args.command == "measure":
        manifest = json.loads((args.out / "manifest.json").read_text())
        manifest = B.measure(args.out, manifest, rows=args.rows, progress=show)
        manifest = B.measure_slider(args.out, manifest)
    else:
        manifest = B.build(
            args.out,
            seed=args.seed,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            n_validation=args.n_validation,
            n_test=args.n_test,
            task_names=args.tasks,
            measure_rows=args.rows,
            progress=show,
        )
    print(B.report_tables(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
