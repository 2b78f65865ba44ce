"""``merge-lab sweep`` / ``sweep collect`` / ``merge-lab search``: many merges from one spec.

    merge-lab sweep SPEC --out DIR [--executor local|ray|serial] [--workers N] [--address ADDR]
                               [--cpus-per-worker C]
    merge-lab sweep collect DIR [--tasks a,b] [--split test|validation] [--json]
    merge-lab search SPEC --trials N --out DIR [--executor serial|local|ray] [--workers N]

SPEC is YAML or JSON (see :mod:`merging_core.sweep.spec`). Every point is written to
``DIR/points/<recipe hash>.json`` as soon as it is done; re-running the same command runs only
the points that have no file yet (resume after Ctrl-C, a crash or a lost node). ``collect``
writes ``DIR/collect/{table.csv, front.json, report.html}`` from the files alone.

A 100-point ρ line on a GPU cluster (one resident actor per GPU, the line cut into 8 warm-start
chains)::

    # rho100.yaml
    bundle: path/to/my_bundle          # a bundle folder (merge-lab bundle init)
    method: tara_b
    params: {steps: 250}
    grid: {rho: {line: [task_a, task_b], points: 100}}
    warm_start: true
    warm_steps: 50
    warm_segments: 8
    device: cuda

    merge-lab sweep rho100.yaml --out runs/rho100 --executor ray --address auto --workers 0
    merge-lab sweep collect runs/rho100 --tasks task_a,task_b
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from merging_core.sweep.runner import EXECUTORS, SweepProgress


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "sweep",
        help="run a grid of merges from a spec (resumable), or `sweep collect DIR`",
        description="Run every point of a sweep spec on local worker processes or a Ray "
        "cluster, one result file per point; `merge-lab sweep collect DIR` builds the table, "
        "the Pareto front and the plots from a sweep folder.",
    )
    sweep.add_argument("spec", help="the spec (YAML/JSON), or the word collect")
    sweep.add_argument("folder", nargs="?", help="with collect: the sweep folder")
    sweep.add_argument("--out", help="the sweep folder (created; finished points are skipped)")
    sweep.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local process pool (default), ray, or serial (this process)",
    )
    sweep.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes / Ray actors (2; Ray: 0 = one per GPU or core)",
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto or host:port); default: start a local one",
    )
    sweep.add_argument(
        "--cpus-per-worker",
        type=int,
        default=None,
        help="cores (torch threads) per worker (default: cores / workers)",
    )
    sweep.add_argument("--tasks", default=None, help="collect: front over these tasks (a,b)")
    sweep.add_argument("--split", default="test", choices=("test", "validation"))
    sweep.add_argument("--json", action="store_true", help="print the summary as JSON")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sweep.set_defaults(func=run_sweep_cmd)
    search = subparsers.add_parser(
        "search",
        help="tune a spec's search parameters with Optuna on the validation split",
        description="Optuna search over the parameters named in the spec's search section, "
        "scored on the validation split; reports the best recipe and its test score. The "
        "study is stored in DIR/search.sqlite: re-running adds only the missing trials.",
    )
    search.add_argument("spec", help="the spec (YAML/JSON) with a search section")
    search.add_argument("--trials", type=int, required=True, help="trials the study should hold")
    search.add_argument("--out", required=True, help="the search folder")
    search.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="serial",
        help="where trials run: serial (default), local or ray (one trial per worker at a time)",
    )
    search.add_argument("--workers", type=int, default=1, help="trials run at once (1)")
    search.add_argument("--address", default=None, help="Ray cluster to join (with ray)")
    search.add_argument("--json", action="store_true", help="print the summary as JSON")
    search.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    search.set_defaults(func=run_search_cmd)


def load_spec(path: str):
    from merging_core.sweep.spec import parse_spec, read_spec_text

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"sweep spec {path!r} does not exist")
    data = read_spec_text(file.read_text(encoding="utf-8"), source=path)
    return parse_spec(data, base=file.parent)


def run_sweep_cmd(args: argparse.Namespace) -> int:
    if args.spec == "collect":
        return _collect(args)
    from merging_core.sweep.runner import run_sweep

    if not args.out:
        raise ValueError("merge-lab sweep SPEC needs --out DIR")
    spec = load_spec(args.spec)
    bar = None if args.no_progress else SweepBar(sys.stderr)
    try:
        summary = run_sweep(
            spec,
            args.out,
            executor=args.executor,
            workers=args.workers,
            address=args.address,
            cpus_per_worker=args.cpus_per_worker,
            on_progress=bar,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished points are in {args.out}; re-run to finish the rest",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    out = {
        "folder": str(summary.folder),
        "total": summary.total,
        "skipped": summary.skipped,
        "done": summary.done,
        "failed": summary.failed,
        "seconds": round(summary.seconds, 3),
        "executor": summary.executor,
        "workers": summary.workers,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"{summary.total} points: {summary.skipped} already done, {summary.done} done now, "
            f"{summary.failed} failed, in {summary.seconds:.1f}s ({summary.executor}) -> "
            f"{summary.folder}"
        )
    return 1 if summary.failed else 0


def _collect(args: argparse.Namespace) -> int:
    from merging_core.sweep.collect import collect_folder, table_csv, write_report

    if not args.folder:
        raise ValueError("merge-lab sweep collect needs the sweep folder")
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    collected = collect_folder(args.folder, tasks=tasks, split=args.split)
    written = write_report(args.folder, collected)
    if args.json:
        print(json.dumps({**collected.to_dict(), "written": [str(p) for p in written]}, indent=2))
        return 0
    print(table_csv(collected), end="")
    keys = ", ".join(collected.rows[i]["label"] for i in collected.front)
    print(f"Pareto front over {', '.join(collected.front_tasks)}: {keys}")
    for f in collected.failed:
        print(f"failed {f['key']}: {f['error']}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def run_search_cmd(args: argparse.Namespace) -> int:
    import optuna

    from merging_core.sweep.search import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(args.spec)

    def on_trial(done: int, target: int, best: float | None) -> None:
        if not args.no_progress:
            shown = "-" if best is None else f"{100 * best:.2f}%"
            print(f"\rtrial {done}/{target}, best validation {shown}", end="", file=sys.stderr)

    summary = run_search(
        spec,
        args.out,
        trials=args.trials,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        on_trial=on_trial,
    )
    if not args.no_progress:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    print(f"best of {summary.trials} trials ({summary.ran} run now): {summary.best_params}")
    print(
        f"validation {summary.objective}: {100 * summary.best_value:.2f}%, test average "
        f"{100 * summary.best_test['average_normalized']:.2f}% (point {summary.best_key})"
    )
    return 0


class SweepBar:
    """``[#####     ] 12/40 done, 2 running, 1 failed, ETA 1m05s`` redrawn in place."""

    def __init__(self, stream: TextIO, width: int = 24) -> None:
        self.stream, self.width, self.drawn, self.last = stream, width, False, 0.0

    def __call__(self, p: SweepProgress) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and p.finished < p.total:
            return
        self.last, self.drawn = now, True
        frac = p.finished / p.total if p.total else 1.0
        filled = "#" * int(self.width * frac)
        eta = "-" if p.eta_s is None else _duration(p.eta_s)
        self.stream.write(
            f"\r[{filled:<{self.width}}] {p.finished}/{p.total} done, {p.running} "
            f"running, {p.failed} failed, ETA {eta}   "
        )
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
