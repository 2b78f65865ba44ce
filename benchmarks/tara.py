"""TARA benchmark on a sample bundle (vision8 by default): timings and the paper's Table-1 layout.

    python benchmarks/tara.py [--bundle vision8|nli6|FOLDER] [--seeds 3] [--skip-timings]
                              [--skip-table] [--steps 0] [--device auto] [--entropy-scale S|bundle]
                              [--rows-out FILE] [--combine FILE ...]

Prints (stdout, Markdown):

1. The compute floor of a TARA-B / TARA-A / AdaMerging step (FLOPs, matmul throughput) beside
   the measured step in float32 and bfloat16 at 1 and 2 threads; the Merge page's slider path
   (merge + per-task accuracy); CPU (or CUDA) timings: a full TARA-A / TARA-B run, a
   warm-started re-run after a ρ change, 250 TARA-B steps, an 11-point two-task sweep per
   method (targets 20 s / 5 s / 25 s / 60 s on CPU).
2. Per-task and average normalised test accuracy for the data-free baselines (scaling chosen on
   the validation split from a small grid, as the paper's baselines are), AdaMerging and TARA-A/B
   (mean ± sd over seeds), then which of the paper's orderings reproduce (against its vision
   table, or its NLI table for the six NLI tasks). A long table can run in parts (say
   ``--rows none`` in one process, ``--skip-baselines`` in another, each with ``--rows-out``)
   and be printed as one with ``--combine``.

Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from merging_core.adaptive.cache import AdaptiveCache  # noqa: E402
from merging_core.merge import merge  # noqa: E402
from merging_core.methods import get_method  # noqa: E402
from merging_core.tradeoff import DEFAULT_SWEEP, two_task_sweep  # noqa: E402

# (row label, method id, fixed params, scale parameter to grid-search or None)
BASELINES: tuple[tuple[str, str, dict[str, Any], str | None], ...] = (
    ("TA", "task_arithmetic", {}, "scaling"),
    ("TIES", "ties", {}, "scaling"),
    ("DARE-TIES", "dare", {"variant": "ties"}, "scaling"),
    ("TSV-M", "tsv_m", {}, "scaling"),
    ("Iso-C", "iso_c", {}, "scaling"),
    ("KnOTS-TIES", "knots", {"variant": "ties"}, "scaling"),
    ("Pico-TA", "pico", {"base": "task_arithmetic"}, None),
    ("Pico-TIES", "pico", {"base": "ties"}, None),
    ("Pico-TSV-M", "pico", {"base": "tsv_m"}, None),
    ("SVD+CUR", "svd_cur", {}, "scaling"),
    ("Core-TA", "core_space", {"rule": "ta"}, "scaling"),
    ("Core-TIES", "core_space", {"rule": "ties"}, "scaling"),
    ("Core-DARE-TIES", "core_space", {"rule": "dare_ties"}, "scaling"),
    ("Core-TSV", "core_space", {"rule": "tsv"}, "scaling"),
    ("Core-CART", "core_space", {"rule": "cart"}, "scaling"),
    ("LoRA-LEGO", "lora_lego", {}, None),
)
SCALE_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# The paper's average normalised accuracies (tara.md §6): its vision table (ViT-B/32, 8 tasks) and
# its NLI table (LLaMA-3-8B, 6 tasks; no TIES row there).
PAPER_AVG = {
    "vision": {"TA": 63.8, "TIES": 64.9, "AdaMerging": 70.0, "KnOTS-TIES": 68.0, "TARA-A": 74.0,
               "TARA-B": 76.3},
    "nli": {"TA": 74.6, "AdaMerging": 78.7, "KnOTS-TIES": 75.2, "TARA-A": 79.7, "TARA-B": 80.3},
}  # fmt: skip
NLI_TASKS = {"mnli", "qnli", "snli", "rte", "sick", "scitail"}


def paper_table(names) -> str:
    """Which of the paper's tables a bundle mirrors: ``nli`` for its six NLI tasks, else vision."""
    return "nli" if set(names) == NLI_TASKS else "vision"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.combine:
        combine(args.combine)
        return 0
    from merging_core.bundles import load_bundle

    torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    bundle = load_bundle(args.bundle)
    adapters, context = bundle.adapter_set(), bundle.task_data(device)
    print(f"# TARA benchmark: {args.bundle}, device {device}, torch threads "
          f"{torch.get_num_threads()}\n")  # fmt: skip
    if not args.skip_proxy:
        proxy_check(bundle, adapters, context)
    if not args.skip_floor:
        floor(adapters, context, steps=args.steps,
              threads=tuple(int(t) for t in args.floor_threads.split(",")))  # fmt: skip
    if not args.skip_slider:
        slider(bundle, adapters)
    if not args.skip_timings:
        timings(bundle, adapters, context, steps=args.steps, warm=args.warm_steps,
                precision=args.precision, sweeps=not args.skip_sweeps)  # fmt: skip
    if not args.skip_table:
        table(bundle, adapters, context, seeds=args.seeds, steps=args.steps,
              ada_steps=args.ada_steps or None, baselines=not args.skip_baselines,
              only=_rows(args.rows),
              scale=_scale_kwargs(args.entropy_scale), rows_out=args.rows_out)  # fmt: skip
    return 0


def _rows(text: str | None) -> list[str] | None:
    """``--rows``: None = the default rows, ``none`` = no data-driven rows (baselines only)."""
    if not text:
        return None
    return [] if text == "none" else text.split(",")


def _scale_kwargs(text: str | None) -> dict[str, Any]:
    """``--entropy-scale`` -> the methods' keyword ({} = their default; 'bundle' = 0)."""
    if text is None:
        return {}
    return {"entropy_scale": 0.0 if text == "bundle" else float(text)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="vision8")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=0, help="TARA steps (0: the official schedule)")
    p.add_argument("--warm-steps", type=int, default=50, help="steps of warm-started re-runs")
    p.add_argument("--ada-steps", type=int, default=0, help="original AdaMerging (0: its 500)")
    p.add_argument(
        "--entropy-scale",
        default=None,
        help="logit scale inside the entropy objective of the data-driven rows: a number, or "
        "'bundle' for the bundle's own logit_scale (default: the methods' default)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--skip-timings", action="store_true")
    p.add_argument("--skip-table", action="store_true")
    p.add_argument("--skip-proxy", action="store_true")
    p.add_argument("--skip-floor", action="store_true")
    p.add_argument("--skip-slider", action="store_true")
    p.add_argument("--skip-sweeps", action="store_true", help="timings without the sweeps")
    p.add_argument(
        "--precision",
        default="bfloat16",
        choices=("float32", "bfloat16"),
        help="precision of the TARA runs in the timings (default: the methods' own)",
    )
    p.add_argument("--floor-threads", default="1", help="floor table's thread counts, e.g. 1,2")
    p.add_argument("--skip-baselines", action="store_true")
    p.add_argument("--rows-out", default=None, help="also write the table's rows to this JSON file")
    p.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="FILE",
        help="print one table from several --rows-out files, and nothing else",
    )
    p.add_argument(
        "--rows",
        default=None,
        help="comma list of data-driven rows: ada_original,ada_repo,tara_a,tara_b,tara_b_abs,"
        "nsc,nsc_official, or none (default: the first four)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: the team shares two cores; 2 threads under load "
        "spin-wait and run several times slower)",
    )
    return p


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Is the unlabeled entropy a usable proxy on this bundle?


def proxy_check(bundle, adapters, context) -> None:
    """Mean validation entropy vs validation accuracy along Task Arithmetic's λ (λ = 0: base)."""
    from merging_core.adaptive.banks import build_banks
    from merging_core.adaptive.objective import entropy_over_split

    banks = build_banks(adapters, variant="a", device=context.device)
    print("## Entropy proxy along Task Arithmetic (validation split)\n")
    print("| λ | mean entropy H | avg normalised acc |\n|---:|---:|---:|")
    for lam in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        updates = {p: (b.B, lam * b.A) for p, b in banks.items()}
        H = [entropy_over_split(context, t, updates, scale=None) for t in adapters.names]
        acc = bundle.evaluate(merge(adapters, "task_arithmetic", scaling=lam), split="validation")
        print(f"| {lam:.1f} | {statistics.mean(H):.3f} | {100 * acc['average_normalized']:.1f} |")
    print()


# ---------------------------------------------------------------------------------------------
# The compute floor of a TARA step.


FLOOR_RUNS = (
    ("TARA-B", "tara_b", {}),
    ("TARA-A", "tara_a", {}),
    ("AdaMerging layer-wise", "adamerging_layer", {"variant": "tara_repo"}),
)


def floor(adapters, context, *, steps: int, threads: tuple[int, ...], repeat: int = 10) -> None:
    """Per method: FLOPs of one step (forward + backward, counted by torch), this device's
    matmul throughput, the floor time of a step and of 40 / 250 steps; then the measured time
    per step in float32 and bfloat16 autocast at each thread count, and 40 / 250 steps at that
    rate (wall; CPU seconds beside it: on a shared machine wall time includes waiting)."""
    from torch.utils.flop_counter import FlopCounterMode

    kw = dict(task_data=context, cache=AdaptiveCache())
    before = torch.get_num_threads()
    rates = {}
    for n in threads:
        torch.set_num_threads(n)
        rates[n] = _matmul_rate(context.device)
    torch.set_num_threads(before)
    print("## Compute floor of a step (vision8: 8 tasks × 16 images, forward + backward)\n")
    print("matmul throughput (512², float32, per wall second / per CPU second): " + ", ".join(
        f"{rates[n][0] / 1e9:.1f} / {rates[n][1] / 1e9:.1f} GFLOP/s at {n} thread(s)"
        for n in threads) + f" on {context.device}. Floor = FLOPs / the rate per CPU second "
        "(CPU-s); the wall floor at n threads is that over n.\n")  # fmt: skip
    print(
        "| method | GFLOP/step | precision | threads | floor CPU-s/step | CPU-s/step | "
        "CPU / floor | wall s/step | 40 steps wall (s) | 250 steps wall (s) |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, method, fixed in FLOOR_RUNS:
        merge(adapters, method, should_stop=lambda: True, **fixed, **kw)  # anchors + banks
        counter = FlopCounterMode(display=False)
        counter.mod_tracker = _NoModuleTracking()
        with counter:
            merge(adapters, method, steps=1, **fixed, **kw)
        flops = counter.get_total_flops()
        for n in threads:
            torch.set_num_threads(n)
            for precision in ("float32", "bfloat16"):
                merge(adapters, method, steps=1, precision=precision, **fixed, **kw)  # warm
                cpu0, wall0 = time.process_time(), time.perf_counter()
                merge(adapters, method, steps=repeat, precision=precision, **fixed, **kw)
                wall = (time.perf_counter() - wall0) / repeat
                cpu = (time.process_time() - cpu0) / repeat
                low = flops / rates[n][1]
                print(f"| {label} | {flops / 1e9:.2f} | {precision} | {n} | {low:.3f} | "
                      f"{cpu:.3f} | {cpu / low:.2f}× | {wall:.3f} | {40 * wall:.1f} | "
                      f"{250 * wall:.1f} |")  # fmt: skip
            torch.set_num_threads(before)
    print()


class _NoModuleTracking:
    """Stands in for ``FlopCounterMode``'s module tracker, whose global module hooks would send
    the tiny ViT down its plain path (it steps aside for anyone watching its modules): counts
    then go to "Global" only, which is all the floor needs."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args) -> bool:
        return False


def _matmul_rate(device) -> tuple[float, float]:
    """FLOP per wall second and per CPU second (all threads together) of a 512 × 512 float32
    matmul loop on ``device``, each the best of five. On a shared CPU the wall rate drops with
    the load; the CPU rate is what the process gets while it runs."""
    a = torch.randn(512, 512, device=device)
    work = 20 * 2 * 512**3
    wall, cpu = 0.0, 0.0
    for _ in range(5):
        start, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(20):
            a @ a
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        wall = max(wall, work / (time.perf_counter() - start))
        cpu = max(cpu, work / max(time.process_time() - cpu0, 1e-9))
    return wall, cpu


# ---------------------------------------------------------------------------------------------
# The Merge page's Task Arithmetic slider: one evaluation per task, as the app calls it.


def slider(bundle, adapters, *, repeat: int = 5) -> None:
    """Merge + test-split accuracy of every task (one ``evaluate`` call per task, as the Merge
    page scores them) for a Task Arithmetic slider move; best and median of ``repeat`` moves,
    beside the floor: the evaluation's FLOPs (counted by torch) over this CPU's matmul rate."""
    from torch.utils.flop_counter import FlopCounterMode

    lam = 0.3
    rows = bundle.slider_rows  # the fixed subset the app scores (None: every row)
    bundle.evaluate(merge(adapters, "task_arithmetic", scaling=lam), rows=rows)  # tokens cached
    walls, cpus = [], []
    for i in range(repeat):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = merge(adapters, "task_arithmetic", scaling=lam + 0.01 * (i + 1))
        for task in bundle.task_names:
            bundle.evaluate(result, tasks=[task], split="test", rows=rows)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with counter:
        for task in bundle.task_names:
            bundle.evaluate(result, tasks=[task], split="test", rows=rows)
    flops = counter.get_total_flops()
    rate = _matmul_rate("cpu")[1]
    images = sum(len(bundle.labels(t, "test")[: rows or None]) for t in bundle.task_names)
    print("## Slider path: Task Arithmetic move, merge + accuracy of every task\n")
    print(f"{len(bundle.task_names)} tasks, {images} test inputs, {torch.get_num_threads()} "
          f"thread(s): best {min(walls):.3f} s wall / {min(cpus):.3f} CPU-s, median "
          f"{statistics.median(walls):.3f} s wall / {statistics.median(cpus):.3f} CPU-s. "
          f"Floor: {flops / 1e9:.1f} GFLOP (matmuls, counted) at {rate / 1e9:.1f} GFLOP per "
          f"CPU-second = {flops / rate:.3f} CPU-s; best / floor = "
          f"{min(cpus) / (flops / rate):.2f}×\n")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Timings.


def timings(bundle, adapters, context, *, steps: int, warm: int, precision: str = "bfloat16",
            sweeps: bool = True) -> None:  # fmt: skip
    """Full run, warm re-run after a ρ change, 250 TARA-B steps, 11-point two-task sweep (per
    method)."""
    rows = []
    cache = AdaptiveCache()  # anchors + banks cached, as in the app
    kw = dict(task_data=context, cache=cache, precision=precision)
    merge(adapters, "tara_b", steps=1, **kw)
    merge(adapters, "tara_a", steps=1, **kw)
    n = len(adapters)
    skewed = [2.0 if i == 0 else 1.0 for i in range(n)]
    for variant in ("a", "b"):
        method = f"tara_{variant}"
        first = _timed(lambda m=method: merge(adapters, m, steps=steps, **kw))
        done = first[0].run["steps_done"]
        rows.append((f"TARA-{variant.upper()} full run ({done} steps)", first[1:], 20.0))
        rerun = _timed(lambda m=method, r=first[0]: merge(
            adapters, m, steps=warm, rho=skewed, warm_start=r, **kw))  # fmt: skip
        rows.append((f"TARA-{variant.upper()} warm re-run after ρ change ({warm} steps)",
                     rerun[1:], 5.0))  # fmt: skip
    long = _timed(lambda: merge(adapters, "tara_b", steps=250, **kw))
    rows.append(("TARA-B 250 steps", long[1:], 25.0))
    evaluate = _normalised(bundle)
    pair = (bundle.task_names[0], bundle.task_names[1])
    for method in ("tara_a", "tara_b", "adamerging_layer") if sweeps else ():
        sweep = _timed(lambda m=method: two_task_sweep(
            adapters, context, evaluate, tasks=pair, points=11,
            methods={m: DEFAULT_SWEEP[m]}, steps=steps, warm_steps=warm, baselines=False,
            cache=cache))  # fmt: skip
        rows.append((f"11-point sweep {pair[0]}/{pair[1]}, {method} ({steps or 'default'} + "
                     f"10×{warm} steps)", sweep[1:], 60.0))  # fmt: skip
    print(f"## Timings ({torch.get_num_threads()} thread(s), {precision})\n\n"
          "| what | wall s | CPU s | target (wall) | ok |\n|---|---:|---:|---:|:--:|")  # fmt: skip
    for what, (sec, cpu), target in rows:
        print(f"| {what} | {sec:.1f} | {cpu:.1f} | ≤ {target:g} | "
              f"{'yes' if sec <= target else 'no'} |")  # fmt: skip
    print()


def _timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def _normalised(bundle, split: str = "test"):
    def evaluate(result, names):
        scores = bundle.evaluate(result, tasks=list(names), split=split)
        return [scores["tasks"][name]["normalized"] for name in names]

    return evaluate


# ---------------------------------------------------------------------------------------------
# Table 1.


def table(
    bundle, adapters, context, *, seeds: int, steps: int, ada_steps: int | None,
    baselines: bool = True, only: list[str] | None = None, scale: dict[str, Any] | None = None,
    rows_out: str | None = None,
) -> None:  # fmt: skip
    names = list(bundle.task_names)
    rows: dict[str, list[list[float]]] = {}
    notes: list[str] = []
    for label, method, fixed, scale in BASELINES if baselines else ():
        row, note = _baseline_row(bundle, adapters, method, fixed, scale)
        if row is None:
            notes.append(f"{label}: skipped ({note})")
            continue
        rows[label] = [row]
        notes.append(f"{label}: {note}")
        log(f"{label}: {100 * sum(row) / len(row):.1f}")
    kw = dict(scale or {}, task_data=context, cache=AdaptiveCache())
    runners = {
        "AdaMerging (layer, original)": lambda s: merge(
            adapters, "adamerging_layer", variant="original", seed=s, steps=ada_steps or 0, **kw),
        "AdaMerging (layer, TARA repo)": lambda s: merge(
            adapters, "adamerging_layer", variant="tara_repo", seed=s, **kw),
        "TARA-A": lambda s: merge(adapters, "tara_a", seed=s, steps=steps, **kw),
        "TARA-B": lambda s: merge(adapters, "tara_b", seed=s, steps=steps, **kw),
        "TARA-B (|H−z|, ablation)": lambda s: merge(
            adapters, "tara_b", seed=s, steps=steps, scalarisation="stch_abs", **kw),
        "NSC-Merging (all modules)": lambda s: merge(
            adapters, "nsc", seed=s, task_data=context, cache=kw["cache"]),
        "NSC-Merging (official: last-quarter v_proj)": lambda s: merge(
            adapters, "nsc", seed=s, loss_modules="last_quarter_v_proj", task_data=context,
            cache=kw["cache"]),
    }  # fmt: skip
    evaluate = _normalised(bundle)
    ids = ("ada_original", "ada_repo", "tara_a", "tara_b", "tara_b_abs", "nsc", "nsc_official")
    keys = dict(zip(ids, runners, strict=True))
    chosen = [keys[k] for k in only] if only is not None else list(runners)[:4]
    for label in chosen:
        runner = runners[label]
        rows[label] = []
        for seed in range(seeds):
            run = runner(seed)
            rows[label].append([float(v) for v in evaluate(run, names)])
            log(f"ROW {label!r} seed {seed}: {rows[label][-1]}")
            log(f"{label} seed {seed}: {100 * statistics.mean(rows[label][-1]):.1f} "
                f"({run.run['seconds']:.0f}s, {run.run['steps_done']} steps)")  # fmt: skip
    if rows_out:
        Path(rows_out).write_text(json.dumps({"names": names, "rows": rows, "notes": notes}))
    _print_table(names, rows)
    print("\n".join(f"* {n}" for n in notes))
    print()
    _print_orderings(rows, paper_table(names))


def combine(files: list[str]) -> None:
    """One table (and the orderings) from the ``--rows-out`` files of several partial runs
    (e.g. the baselines in one process, the data-driven rows in another)."""
    parts = [json.loads(Path(f).read_text()) for f in files]
    names = parts[0]["names"]
    if any(p["names"] != names for p in parts):
        raise SystemExit("--combine: the files are runs over different tasks")
    rows = {k: v for p in parts for k, v in p["rows"].items()}
    _print_table(names, rows)
    print("\n".join(f"* {n}" for p in parts for n in p["notes"]))
    print()
    _print_orderings(rows, paper_table(names))


def _baseline_row(bundle, adapters, method, fixed, scale):
    try:
        info = get_method(method)
    except KeyError as err:
        return None, str(err)
    grid = [None]
    if scale is not None and scale in info.param_names:
        default = float(info.param(scale).default)
        grid = [round(default * f, 4) for f in SCALE_FACTORS]
    best, best_val, best_value = None, -1.0, None
    for value in grid:
        params = dict(fixed) if value is None else {**fixed, scale: value}
        try:
            result = merge(adapters, method, **params)
        except ValueError as err:
            return None, str(err)
        val = bundle.evaluate(result, split="validation")["average_normalized"]
        if val > best_val:
            best, best_val, best_value = result, val, value
    row = _normalised(bundle)(best, list(bundle.task_names))
    chosen = "defaults" if best_value is None else f"{scale}={best_value:g} (validation)"
    return row, f"{method} {fixed or ''} {chosen}".replace("  ", " ")


def _print_table(names, rows) -> None:
    short = [n[:9] for n in names]
    print("## Normalised test accuracy (%)\n")
    print("| method | " + " | ".join(short) + " | avg |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, runs in rows.items():
        cells = []
        for k in range(len(names)):
            cells.append(_fmt([100 * r[k] for r in runs]))
        cells.append(_fmt([100 * statistics.mean(r) for r in runs]))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _print_orderings(rows, paper: str) -> None:
    avg = {k: statistics.mean(statistics.mean(r) for r in v) * 100 for k, v in rows.items()}
    ada = avg.get("AdaMerging (layer, TARA repo)")
    mapping = {"TA": avg.get("TA"), "TIES": avg.get("TIES"), "AdaMerging": ada,
               "KnOTS-TIES": avg.get("KnOTS-TIES"), "TARA-A": avg.get("TARA-A"),
               "TARA-B": avg.get("TARA-B")}  # fmt: skip
    reported = PAPER_AVG[paper]
    names = [m for m in ("TARA-B", "TARA-A", "AdaMerging", "KnOTS-TIES", "TIES", "TA")
             if m in reported]  # fmt: skip
    pairs = [(a, b) if reported[a] > reported[b] else (b, a)
             for i, a in enumerate(names) for b in names[i + 1:]]  # fmt: skip
    print(f"## The paper's orderings ({paper} table, average normalised accuracy)\n")
    print("| paper says | paper | ours | reproduces |\n|---|---|---|:--:|")
    for hi, lo in pairs:
        a, b = mapping.get(hi), mapping.get(lo)
        if a is None or b is None:
            print(f"| {hi} > {lo} | {reported[hi]} > {reported[lo]} | n/a | n/a |")
            continue
        ok = "yes" if a > b else "no"
        print(f"| {hi} > {lo} | {reported[hi]} > {reported[lo]} | {a:.1f} vs {b:.1f} | {ok} |")
    print()


if __name__ == "__main__":
    sys.exit(main())
