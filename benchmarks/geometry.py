"""Geometry benchmark: factor-space analysis vs the dense route on LLaMA-3-8B LoRA shapes.

Synthetic adapters: 6 tasks, r = 16, q/k/v/o_proj × 32 layers (q/o 4096×4096, k/v 1024×4096),
B with a shared component across tasks (so the overlaps are not trivially zero). Measured side by
side in one run:

* ours, default: ``analyse_geometry()`` over all 128 modules (spectra of every ΔW_t and of the TA
  sum, per-task metrics, coverage stacks, crowding, SVD vs CUR from the factors only, and the
  sign-conflict rates *estimated* from 65 536 sampled entries per module with 95% intervals);
* ours without signs: ``analyse_geometry(sign_conflicts=False)``;
* dense route: ``torch.linalg.svdvals`` of dense ΔW_t or of the dense TA sum (float32) for a few
  matrices, timed per shape and **extrapolated** to 7 SVDs (6 tasks + sum) × 128 modules;
* the exact sign-conflict pass (``sign_exact=True``: dense, element-wise) on a few modules,
  extrapolated likewise; on those modules the exact rates are checked against the estimates'
  intervals (printed as a coverage count).

Import and adapter generation are outside every timed block (the CLI's own import is ≈1.4 s).

Usage: ``python benchmarks/geometry.py [--dense-samples 1] [--sign-samples 1] [--threads N]``.
Prints a plain table of wall and process-CPU seconds (no files are written). On a busy machine
the CPU column is the steadier one; with more runnable threads than cores, OpenMP's spinning
inflates both columns, so compare runs made with the same ``--threads``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.geometry import analyse_geometry, effective_rank, sign_conflict_rates

SIGN_RATES = ("sign_conflict_rate", "sign_conflict_rate_trimmed")
SHAPES = {
    "q_proj": (4096, 4096),
    "k_proj": (1024, 4096),
    "v_proj": (1024, 4096),
    "o_proj": (4096, 4096),
}


def synthetic_set(*, tasks: int, layers: int, rank: int, seed: int) -> AdapterSet:
    """LLaMA-shaped LoRA adapters with a partly shared B subspace (scale folded, float32)."""
    gen = torch.Generator().manual_seed(seed)
    shared = {p: torch.randn(m, rank, generator=gen) for p, (m, _) in SHAPES.items()}
    adapters = []
    for t in range(tasks):
        mods = {}
        for layer in range(layers):
            for proj, (m, n) in SHAPES.items():
                mix = torch.randn(rank, rank, generator=gen) / rank**0.5
                B = 0.02 * (shared[proj] @ mix + torch.randn(m, rank, generator=gen))  # (m, r)
                A = torch.randn(rank, n, generator=gen) / n**0.5  # (r, n)
                mods[f"model.layers.{layer}.self_attn.{proj}"] = LoraModule(B=B, A=A)
        adapters.append(Adapter(name=f"task{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)


class Clock:
    """Wall and process-CPU seconds of a block (CPU time is less sensitive to a busy machine)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def time_analysis(
    aset: AdapterSet, repeats: int, *, signs: bool
) -> tuple[tuple[float, float], object]:
    """Best-of-``repeats`` (wall, cpu) seconds of ``analyse_geometry`` (signs sampled or off)."""
    best, report = (float("inf"), float("inf")), None
    for _ in range(repeats):
        with Clock() as clock:
            report = analyse_geometry(aset, sign_conflicts=signs)
        best = (min(best[0], clock.wall), min(best[1], clock.cpu))
    return best, report


def time_dense(aset: AdapterSet, report, samples: int):
    """Mean (wall, cpu) per dense svdvals by shape, and the largest erank disagreement seen.

    Samples alternate between task 0's ΔW and the TA sum of successive modules of each shape.
    """
    per_shape: dict[str, list[tuple[float, float]]] = {}
    worst = 0.0
    for proj in ("q_proj", "k_proj"):
        names = [n for n in aset.modules if n.endswith(proj)]
        for i in range(samples):
            name = names[i // 2 % len(names)]
            mods = aset.factors(name)
            if i % 2 == 0:
                dw, ref = mods[0].B @ mods[0].A, report.details[name].task_sigma[0]
            else:
                dw = sum(m.B @ m.A for m in mods)  # (m, n) dense TA sum
                ref = report.details[name].ta_sigma
            with Clock() as clock:
                sigma = torch.linalg.svdvals(dw)
            per_shape.setdefault(proj, []).append((clock.wall, clock.cpu))
            ours = float(effective_rank(torch.tensor(ref)))
            worst = max(worst, abs(float(effective_rank(sigma)) - ours))
    mean = {p: tuple(sum(x) / len(v) for x in zip(*v, strict=True)) for p, v in per_shape.items()}
    return mean, worst


def time_signs(aset: AdapterSet, samples: int, report) -> tuple[dict, list[tuple]]:
    """Mean (wall, cpu) per module of the exact sign-conflict pass by shape, and per module
    checked ``(name, column, exact, low, high)`` against the default report's estimates."""
    out, checks = {}, []
    rows = {r["module"]: r for r in report.per_module}
    for proj in ("q_proj", "k_proj"):
        names = [n for n in aset.modules if n.endswith(proj)][: max(1, samples)]
        spent = [0.0, 0.0]
        for name in names:
            mods = aset.factors(name)
            with Clock() as clock:
                exact = sign_conflict_rates(
                    [m.B for m in mods], [m.A for m in mods], densities=(1.0, 0.2)
                )
            spent = [spent[0] + clock.wall, spent[1] + clock.cpu]
            r = rows[name]
            for col, value in zip(SIGN_RATES, exact, strict=True):
                checks.append((name, col, value, r[f"{col}_low"], r[f"{col}_high"]))
        out[proj] = (spent[0] / len(names), spent[1] / len(names))
    return out, checks


def extrapolate(per_call: dict[str, tuple[float, float]], counts: dict[str, int], calls: int):
    """(wall, cpu) for ``calls`` per module over all modules, from per-shape samples."""
    total = [0.0, 0.0]
    for proj, count in counts.items():
        wall, cpu = per_call["q_proj" if proj in ("q_proj", "o_proj") else "k_proj"]
        total = [total[0] + count * calls * wall, total[1] + count * calls * cpu]
    return tuple(total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dense-samples", type=int, default=1, help="dense SVDs timed per shape")
    parser.add_argument("--sign-samples", type=int, default=1, help="modules per shape")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both routes (0: torch default)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    aset = synthetic_set(tasks=args.tasks, layers=args.layers, rank=args.rank, seed=0)
    n_mod = len(aset.modules)
    counts = {p: sum(n.endswith(p) for n in aset.modules) for p in SHAPES}
    ours, report = time_analysis(aset, args.repeats, signs=True)
    nosign, _ = time_analysis(aset, args.repeats, signs=False)
    dense, worst = time_dense(aset, report, args.dense_samples)
    signs, checks = time_signs(aset, args.sign_samples, report)
    svds = args.tasks + 1
    dense_signs = extrapolate(signs, counts, 1)
    dense_total = (nosign[0] + dense_signs[0], nosign[1] + dense_signs[1])
    rows = [
        ("ours, default: all metrics + sampled signs (measured)", ours),
        ("ours without sign conflicts (measured)", nosign),
        (
            f"dense svdvals, {svds} per module x {n_mod} (EXTRAPOLATED)",
            extrapolate(dense, counts, svds),
        ),
        ("exact sign-conflict pass, all modules (EXTRAPOLATED)", dense_signs),
        ("previous default: no-sign analysis + exact signs (EXTRAP.)", dense_total),
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"adapters: {args.tasks} tasks, r={args.rank}, {n_mod} modules "
        "(q/o 4096x4096, k/v 1024x4096)"
    )
    print(f"\n{'route':<60} {'wall s':>9} {'cpu s':>9} {'wall/ours':>10} {'cpu/ours':>9}")
    for label, (wall, cpu) in rows:
        print(
            f"{label:<60} {wall:>9.2f} {cpu:>9.2f} {wall / ours[0]:>9.0f}x {cpu / ours[1]:>8.0f}x"
        )
    print("\nsampled per-call times (measured, wall / cpu seconds):")
    for p in ("q_proj", "k_proj"):
        print(
            f"  {p} {SHAPES[p]}: dense svdvals {dense[p][0]:.2f} / {dense[p][1]:.2f}, "
            f"sign pass {signs[p][0]:.2f} / {signs[p][1]:.2f} per module"
        )
    print(
        f"ours per module: {1e3 * ours[0] / n_mod:.1f} ms wall; "
        f"max |erank ours - erank dense| over the sampled matrices: {worst:.1e}"
    )
    inside = sum(lo <= v <= hi for _, _, v, lo, hi in checks)
    print(
        f"sampled sign conflicts: default analysis is {dense_total[0] / ours[0]:.0f}x faster "
        f"(wall) than the previous exact default; exact rate inside the estimate's 95% interval "
        f"on {inside}/{len(checks)} checked (module, rate) pairs:"
    )
    for name, col, value, lo, hi in checks:
        print(f"  {name} {col}: exact {value:.4f}, estimate interval [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
