"""The benchmarks on a CUDA device, side by side with the CPU, with the device named.

    python benchmarks/gpu.py [--bundles vision8,nli6] [--layers 32] [--skip-tara]

Without CUDA it says so and exits 0 (nothing is timed). With CUDA it prints:

1. TARA on each bundle (``benchmarks/tara.py --device cuda``: the step's FLOPs, the device's
   measured matmul rate and the floor, float32 vs bfloat16, full run / warm re-run / sweeps);
2. geometry (the default analysis, sampled sign conflicts) on LLaMA-3-8B-shaped adapters whose
   factors live on the GPU, against the same analysis on the CPU;
3. merges (TA, KnOTS-TA, TSV-M, Core-TIES) on those adapters, GPU vs CPU, merge only.

Each row that fails on the GPU prints its error instead of a time, so the table shows which paths
are device-agnostic today. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from merge import synthetic_adapters  # noqa: E402

from merging_core.adapters import Adapter, AdapterSet  # noqa: E402
from merging_core.geometry import analyse_geometry  # noqa: E402
from merging_core.merge import merge  # noqa: E402

MERGES = (
    ("Task Arithmetic", "task_arithmetic", {"scaling": 0.4}),
    ("KnOTS-TA", "knots", {"variant": "ta"}),
    ("TSV-M (low-rank)", "tsv_m", {"mode": "low_rank"}),
    ("Core-TIES", "core_space", {"rule": "ties"}),
)


def on(adapters: AdapterSet, device: str) -> AdapterSet:
    """The same adapters with every factor on ``device``."""
    moved = []
    for a in adapters.adapters:
        mods = {n: m.with_factors(m.B.to(device), m.A.to(device)) for n, m in a.modules.items()}
        moved.append(Adapter(name=a.name, modules=mods, config=a.config))
    return AdapterSet.from_adapters(moved)


def timed(fn, device: str) -> tuple[float | None, str]:
    """Wall seconds of ``fn()`` (synchronised on CUDA), or None and the error."""
    try:
        fn()  # warm (kernels, caches)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, ""
    except Exception as err:  # noqa: BLE001 (a benchmark row reports any failure and goes on)
        return None, f"{type(err).__name__}: {str(err)[:80]}"


def table(title: str, rows: list[tuple[str, tuple, tuple]]) -> None:
    print(f"## {title}\n\n| what | CPU s | {torch.cuda.get_device_name(0)} s | CPU / GPU |")
    print("|---|---:|---:|---:|")
    for what, (cpu, cpu_err), (gpu, gpu_err) in rows:
        ratio = f"{cpu / gpu:.1f}×" if cpu and gpu else "n/a"
        c = f"{cpu:.2f}" if cpu is not None else f"failed ({cpu_err})"
        g = f"{gpu:.2f}" if gpu is not None else f"failed ({gpu_err})"
        print(f"| {what} | {c} | {g} | {ratio} |")
    print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", default="vision8,nli6")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--skip-tara", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA device here: nothing was timed. Run this script on a machine with a GPU.")
        return 0
    torch.set_num_threads(1)
    print(f"# GPU benchmarks on {torch.cuda.get_device_name(0)} (CPU side: 1 torch thread)\n")
    if not args.skip_tara:
        for bundle in args.bundles.split(","):
            cmd = [sys.executable, str(HERE / "tara.py"), "--bundle", bundle, "--device", "cuda",
                   "--skip-table"]  # fmt: skip
            subprocess.run(cmd, check=False)
    cpu_set = synthetic_adapters(tasks=6, rank=16, layers=args.layers)
    gpu_set = on(cpu_set, "cuda")
    table(f"Geometry, 6 adapters, r = 16, {args.layers} layers × q/k/v/o (8B shapes)", [
        ("analyse_geometry (defaults)", timed(lambda: analyse_geometry(cpu_set), "cpu"),
         timed(lambda: analyse_geometry(gpu_set), "cuda")),
    ])  # fmt: skip
    rows = []
    for label, method, params in MERGES:
        rows.append((label, timed(lambda m=method, k=params: merge(cpu_set, m, **k), "cpu"),
                     timed(lambda m=method, k=params: merge(gpu_set, m, **k), "cuda")))  # fmt: skip
    table("Merges on the same adapters (merge only)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
