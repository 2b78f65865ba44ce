"""Merge + export benchmark on LLaMA-3-8B-shaped synthetic LoRA adapters, against PEFT.

Ours: 6 tasks, r = 16, q/k/v/o_proj in 32 layers (q/o 4096 × 4096, k/v 1024 × 4096), merged with
TA, KnOTS-TA, TSV-M (low-rank), Iso-C (low-rank), Pico-TA, Core Space (TA, TIES, DARE-TIES, TSV,
CART rules) and LoRA-LEGO, then exported as a PEFT adapter at
rank 16 (each method timed on its own: merge, then SVD-truncate and write to a temp folder).

PEFT: ``add_weighted_adapter(combination_type="svd")`` (its TA + dense SVD to rank 16, the same
output as our TA export) on a torch model with the same layer shapes but only ``--peft-layers``
layers (dense SVDs of 4096 × 4096 take long); its per-layer time is extrapolated to 32 layers and
labelled as such. On the measured layers the two rank-16 results are compared.

Dense route: Core Space's TIES and DARE-TIES rules act on the R×R cores; their full-space
namesakes act on every dense ΔW_t. Those are timed (merge only) on ``--dense-layers`` layers and
extrapolated; the ratio is dense merge time / core merge time.

TIES and DARE (element-wise) stream: their modules are merged one at a time when the export
reads them (the fused engine: row blocks of each ΔW_t formed once per pass, exact thresholds from
a sampled bracket), and large dense modules are exported through a seeded randomized SVD whose
error is the one reported. ``--isolate`` runs every row in a fresh process and adds its peak RSS
(what the streaming bounds); ``--svd-check`` compares the randomized rank-k error with the exact
dense SVD's on one k_proj module of the TIES result; ``--module-check`` times the fused TIES
against the previous (unfused) route on one q_proj module of the six tasks, phase by phase, and
checks that both give the same bytes.

Run:  python benchmarks/merge.py [--layers 32] [--peft-layers 2] [--no-peft] [--isolate]
      python benchmarks/merge.py --dense-layers 1
      python benchmarks/merge.py --only TIES DARE --isolate --no-peft --svd-check --module-check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.export import export_merge
from merging_core.merge import merge
from merging_core.methods import available_methods

SHAPES = {
    "q_proj": (4096, 4096),
    "k_proj": (1024, 4096),
    "v_proj": (1024, 4096),
    "o_proj": (4096, 4096),
}  # (d_out, d_in) of LLaMA-3-8B attention
METHODS = (  # (label, method id, params)
    ("TA", "task_arithmetic", {"scaling": 0.4}),
    ("KnOTS-TA", "knots", {"variant": "ta", "scaling": 0.4}),
    ("TSV-M (low-rank)", "tsv_m", {"mode": "low_rank"}),
    ("Iso-C (low-rank)", "iso_c", {"mode": "low_rank"}),
    ("Pico-TA", "pico", {"base": "task_arithmetic"}),
    ("Core-TA", "core_space", {"rule": "ta", "scaling": 0.4}),
    ("Core-TIES", "core_space", {"rule": "ties"}),
    ("Core-DARE-TIES", "core_space", {"rule": "dare_ties"}),
    ("Core-TSV", "core_space", {"rule": "tsv"}),
    ("Core-CART", "core_space", {"rule": "cart"}),
    ("LoRA-LEGO", "lora_lego", {}),
    ("TIES", "ties", {"density": 0.2}),  # element-wise: streamed, randomized-SVD export
    ("DARE", "dare", {"drop_rate": 0.9}),
)
# Element-wise rules also exist on the dense ΔW: (core row, dense label, method id, params).
# Merge only (a dense result's rank-16 export needs a dense SVD per module), on --dense-layers
# layers, extrapolated to all layers and labelled as such.
DENSE_ROUTES = (
    ("Core-TIES", "TIES on ΔW", "ties", {"threshold": "per_tensor"}),
    ("Core-DARE-TIES", "DARE-TIES on ΔW", "dare", {"variant": "ties", "drop_rate": 0.3}),
)
ELEMENT_WISE = ("TIES", "DARE")


def module_path(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.self_attn.{proj}"


def synthetic_adapters(*, tasks: int, rank: int, layers: int, seed: int = 0) -> AdapterSet:
    """``tasks`` random rank-``rank`` adapters: ``B (d_out, r)``, ``A (r, d_in)`` ~ N(0, 1/d)."""
    g = torch.Generator().manual_seed(seed)
    adapters = []
    for t in range(tasks):
        mods = {}
        for layer in range(layers):
            for proj, (d_out, d_in) in SHAPES.items():
                B = torch.randn(d_out, rank, generator=g) / rank**0.5
                A = torch.randn(rank, d_in, generator=g) / d_in**0.5
                mods[module_path(layer, proj)] = LoraModule(B=B, A=A)
        adapters.append(Adapter(name=f"task{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)


def time_ours(aset: AdapterSet, method: str, params: dict, rank: int, tmp: Path) -> dict:
    """Merge, then export at ``rank`` into ``tmp``; seconds for each and the result."""
    folder = "_".join([method, *(f"{k}-{v}" for k, v in sorted(params.items()))])
    t0, c0 = time.perf_counter(), time.process_time()
    result = merge(aset, method, **params)
    t1, c1 = time.perf_counter(), time.process_time()
    report = export_merge(result, tmp / folder, rank=rank)
    t2, c2 = time.perf_counter(), time.process_time()
    return {
        "cpu": c2 - c0,
        "export_cpu": c2 - c1,
        "merge": t1 - t0,
        "export": t2 - t1,
        "total": t2 - t0,
        "result": result,
        "max_err": report.max_rel_error,
        "path": tmp / folder,
    }


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for proj, (d_out, d_in) in SHAPES.items():
            setattr(self, proj, nn.Linear(d_in, d_out, bias=False))


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = Attention()


class TinyLlama(nn.Module):
    """Only the attention projections, so PEFT's module paths match ours."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([Layer() for _ in range(layers)])


def peft_model(aset: AdapterSet, layers: int, rank: int):
    """A PEFT model over ``layers`` layers carrying every adapter (alpha = r: scale 1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=list(SHAPES), lora_dropout=0.0)
    model = None
    for adapter in aset:
        if model is None:
            model = get_peft_model(TinyLlama(layers), config, adapter_name=adapter.name)
        else:
            model.add_adapter(adapter.name, config)
    root = model.base_model.model
    with torch.no_grad():
        for adapter in aset:
            for layer in range(layers):
                for proj in SHAPES:
                    name = module_path(layer, proj)
                    target = root.get_submodule(name)
                    target.lora_A[adapter.name].weight.copy_(adapter.modules[name].A)
                    target.lora_B[adapter.name].weight.copy_(adapter.modules[name].B)
    return model


def time_peft(
    aset: AdapterSet, layers: int, rank: int, scaling: float
) -> tuple[float, float, object]:
    """Wall and CPU seconds of PEFT's svd merge over ``layers`` layers, and the model."""
    model = peft_model(aset, layers, rank)
    t0, c0 = time.perf_counter(), time.process_time()
    model.add_weighted_adapter(
        adapters=aset.names,
        weights=[scaling] * len(aset),
        adapter_name="merged_svd",
        combination_type="svd",
    )
    return time.perf_counter() - t0, time.process_time() - c0, model


def peft_vs_ours(model, ours, layers: int) -> float:
    """Max relative difference of PEFT's rank-r ΔW and our TA export's, on the PEFT layers."""
    from safetensors.torch import load_file

    tensors = load_file(str(ours / "adapter_model.safetensors"))
    root = model.base_model.model
    worst = 0.0
    for layer in range(layers):
        for proj in SHAPES:
            name = module_path(layer, proj)
            theirs = root.get_submodule(name).get_delta_weight("merged_svd")
            key = f"base_model.model.{name}"
            mine = tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]
            worst = max(worst, float((theirs - mine).norm() / mine.norm()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank of each task adapter")
    parser.add_argument("--export-rank", type=int, default=16)
    parser.add_argument("--peft-layers", type=int, default=2)
    parser.add_argument("--no-peft", action="store_true")
    parser.add_argument("--dense-layers", type=int, default=1, help="0 skips the dense route")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="method labels to run (default all)"
    )
    parser.add_argument(
        "--isolate", action="store_true", help="each row in a fresh process, with its peak RSS"
    )
    parser.add_argument("--svd-check", action="store_true", help="randomized vs exact SVD error")
    parser.add_argument(
        "--module-check", action="store_true", help="fused vs unfused TIES on one q_proj module"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: JSON path
    args = parser.parse_args()
    if args.child:
        return run_child(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (1-min load "
        f"{os.getloadavg()[0]:.1f} before the run), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"adapters: {args.tasks} tasks, r={args.rank}, q/k/v/o_proj x {args.layers} layers "
        f"(q/o 4096x4096, k/v 1024x4096); every export at rank {args.export_rank}\n"
    )
    aset = synthetic_adapters(tasks=args.tasks, rank=args.rank, layers=args.layers)
    registered = {m.name for m in available_methods()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, method, params in METHODS:
            if args.only is not None and label not in args.only:
                continue
            if args.isolate and method in registered:
                rows.append((label, isolated_row(label, args, Path(tmp)), ""))
                continue
            if method not in registered:
                rows.append((label, None, f"skipped: method {method!r} is not registered"))
                continue
            try:
                rows.append(
                    (label, time_ours(aset, method, params, args.export_rank, Path(tmp)), "")
                )
            except (ValueError, KeyError) as err:
                rows.append((label, None, f"skipped: {err}"))
        peft = None if args.no_peft else run_peft(aset, args, rows)
        print_table(rows, peft, args)
    if args.dense_layers > 0:
        print_dense_routes(rows, args)
    if args.module_check:
        print_module_check(args)


def isolated_row(label: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Run one row in a fresh interpreter; its timings plus peak RSS (GiB) of that process."""
    out = tmp / f"{label}.json"
    cmd = [sys.executable, __file__, "--child", str(out), "--only", label]
    cmd += ["--layers", str(args.layers), "--tasks", str(args.tasks), "--rank", str(args.rank)]
    cmd += ["--export-rank", str(args.export_rank)] + (["--svd-check"] if args.svd_check else [])
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    row = json.loads(out.read_text())
    row["path"] = None
    return row


def run_child(args: argparse.Namespace) -> None:
    """``--child``: one method, timings + peak RSS as JSON (adapters are generated first and
    count towards the RSS: 6 × 8B-shaped r=16 adapters are ~312 MiB)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    (label, method, params) = next(m for m in METHODS if m[0] == args.only[0])
    aset = synthetic_adapters(tasks=args.tasks, rank=args.rank, layers=args.layers)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        row = time_ours(aset, method, params, args.export_rank, Path(tmp))
        check = svd_check(row["result"], args.export_rank) if args.svd_check else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    row = {k: v for k, v in row.items() if k not in ("result", "path")}
    row.update(rss_gib=peak, inputs_rss_gib=base, svd_check=check)
    Path(args.child).write_text(json.dumps(row))


def svd_check(result, rank: int) -> dict:
    """Rank-``rank`` relative error of one k_proj module: randomized export route vs exact SVD."""
    from merging_core.export import spectrum, truncation_stats

    name = next(n for n in result.modules if n.endswith("k_proj"))
    module = result.modules[name]
    t0 = time.process_time()
    spec = spectrum(module, rank=rank)
    fast = truncation_stats(spec.S, rank, residual=spec.residual)[2]
    t1 = time.process_time()
    exact = torch.linalg.svdvals(module.linear_delta())
    best = truncation_stats(exact.double(), rank)[2]
    t2 = time.process_time()
    return {
        "module": name,
        "randomized": fast,
        "exact": best,
        "cpu_fast": t1 - t0,
        "cpu_exact": t2 - t1,
    }


def print_module_check(args: argparse.Namespace) -> None:
    """Fused vs unfused TIES (density 0.2, global trim) on one q_proj module of ``args.tasks``
    tasks: CPU seconds per phase, bit equality, and the randomized SVD against the exact one."""
    from merging_core.elementwise.fused import factor_deltas, fused_thresholds, fused_ties_module
    from merging_core.elementwise.streaming import linear_delta, task_thresholds, ties_merge_parts
    from merging_core.export import SKETCH_POWER_ITERS, randomized_spectrum, truncation_stats

    name = module_path(0, "q_proj")
    full = synthetic_adapters(tasks=args.tasks, rank=args.rank, layers=1)
    one = AdapterSet.from_adapters(
        [Adapter(name=a.name, modules={name: a.modules[name]}) for a in full]
    )
    clock = time.process_time
    delta = lambda i, t: linear_delta(one.factors(one.modules[i])[t])  # noqa: E731
    t0 = clock()
    thresholds = task_thresholds(delta, num_parts=1, num_tasks=len(one), density=0.2)
    t1 = clock()
    (old,), _ = ties_merge_parts(delta, num_parts=1, num_tasks=len(one), density=0.2,
                                 weights=[1.0] * len(one))  # fmt: skip
    t2 = clock()
    source = factor_deltas(one)
    fused = fused_thresholds(source, density=0.2)
    t3 = clock()
    new = fused_ties_module(source, 0, thresholds=fused, sign_method="total",
                            weights=[1.0] * len(one), scaling=1.0)  # fmt: skip
    t4 = clock()
    spec = randomized_spectrum(new, width=args.export_rank + 20)
    t5 = clock()
    fast = truncation_stats(spec.S, args.export_rank, residual=spec.residual)[2]
    exact = truncation_stats(torch.linalg.svdvals(new).double(), args.export_rank)[2]
    t6 = clock()
    same = torch.equal(old.view(torch.int32), new.view(torch.int32)) and thresholds == fused
    m, n = new.shape
    print(f"\nOne {m}x{n} module, {len(one)} tasks, TIES density 0.2 (CPU s):")
    print(f"{'phase':<34}{'unfused':>9}{'fused':>9}{'ratio':>8}")
    for label, before, after in (
        ("thresholds (radix / bracket)", t1 - t0, t3 - t2),
        ("trim, elect, disjoint mean", (t2 - t1) - (t1 - t0), t4 - t3),
    ):
        print(f"{label:<34}{before:>9.2f}{after:>9.2f}{before / after:>7.1f}x")
    print(f"{'merge in all':<34}{t2 - t1:>9.2f}{t4 - t2:>9.2f}{(t2 - t1) / (t4 - t2):>7.1f}x")
    print(f"bit-identical results and thresholds: {same}")
    print(
        f"randomized SVD ({SKETCH_POWER_ITERS} power iterations, width {args.export_rank + 20}): "
        f"{t5 - t4:.2f} CPU s, rank-{args.export_rank} error {fast:.4f} vs exact SVD "
        f"{exact:.4f} ({t6 - t5:.1f} CPU s, +{(fast / exact - 1) * 100:.2f} %)"
    )


def run_peft(aset: AdapterSet, args: argparse.Namespace, rows: list) -> dict | None:
    try:
        import peft  # noqa: F401
    except ImportError as err:
        print(f"PEFT baseline skipped: {err}")
        return None
    wall, cpu, model = time_peft(aset, args.peft_layers, args.rank, scaling=0.4)
    ta = next((r for label, r, _ in rows if label == "TA" and r is not None), None)
    diff = peft_vs_ours(model, ta["path"], args.peft_layers) if ta and ta["path"] else float("nan")
    per = args.layers / args.peft_layers
    return {"wall": wall, "cpu": cpu, "wall32": wall * per, "cpu32": cpu * per, "diff": diff}


def print_table(rows: list, peft: dict | None, args: argparse.Namespace) -> None:
    head = f"{'method':<18}{'merge s':>9}{'export s':>10}{'total s':>9}{'CPU s':>8}"
    head += f"{'export CPU s':>14}{'max err':>11}"
    isolated = any(r is not None and "rss_gib" in r for _, r, _ in rows)
    head += f"{'peak RSS GiB':>14}" if isolated else ""
    head += f"{'PEFT/ours wall':>16}{'PEFT/ours CPU':>15}" if peft else ""
    print(head)
    print("-" * len(head))
    for label, r, note in rows:
        if r is None:
            print(f"{label:<18}{note}")
            continue
        line = (
            f"{label:<18}{r['merge']:>9.2f}{r['export']:>10.2f}{r['total']:>9.2f}"
            f"{r['cpu']:>8.2f}{r['export_cpu']:>14.2f}{r['max_err']:>11.3e}"
        )
        if isolated:
            line += f"{r['rss_gib']:>14.2f}"
        if peft:
            line += f"{peft['wall32'] / r['total']:>15.0f}x{peft['cpu32'] / r['cpu']:>14.0f}x"
        print(line)
    print_checks(rows)
    if peft:
        print(
            f"\nPEFT add_weighted_adapter(combination_type='svd'): measured on "
            f"{args.peft_layers} layer(s): {peft['wall']:.1f} s wall, {peft['cpu']:.1f} s CPU; "
            f"EXTRAPOLATED x{args.layers / args.peft_layers:g} to {args.layers} layers: "
            f"{peft['wall32']:.0f} s wall, {peft['cpu32']:.0f} s CPU (merge only, no write)."
        )
        print(
            f"PEFT-svd vs our TA export (both rank {args.export_rank}) on those layers: max "
            f"relative ΔW difference {peft['diff']:.2e}"
        )


def print_dense_routes(rows: list, args: argparse.Namespace) -> None:
    """Merge time of each element-wise method on dense ΔW against its Core Space rule."""
    core = {label: r for label, r, _ in rows if r is not None}
    small = synthetic_adapters(tasks=args.tasks, rank=args.rank, layers=args.dense_layers)
    per = args.layers / args.dense_layers
    print(
        f"\nDense route (merge only; measured on {args.dense_layers} layer(s), EXTRAPOLATED "
        f"x{per:g} to {args.layers} layers):"
    )
    head = f"{'dense method':<18}{'merge s':>9}{'CPU s':>8}{'vs':>16}{'dense/core wall':>17}"
    head += f"{'dense/core CPU':>16}"
    print(head + "\n" + "-" * len(head))
    for core_label, label, method, params in DENSE_ROUTES:
        if core_label not in core:
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        merge(small, method, **params)
        wall, cpu = (time.perf_counter() - t0) * per, (time.process_time() - c0) * per
        ratio = wall / core[core_label]["merge"]
        cpu_ratio = cpu / (core[core_label]["cpu"] - core[core_label]["export_cpu"])
        print(
            f"{label:<18}{wall:>9.1f}{cpu:>8.1f}{core_label:>16}{ratio:>16.0f}x{cpu_ratio:>15.0f}x"
        )


def print_checks(rows: list) -> None:
    """Notes for isolated / element-wise rows: RSS of the inputs alone, randomized-SVD error."""
    for label, r, _ in rows:
        if r is None or "rss_gib" not in r:
            continue
        note = f"{label}: peak RSS {r['rss_gib']:.2f} GiB (inputs alone {r['inputs_rss_gib']:.2f})"
        check = r.get("svd_check")
        if check:
            note += (
                f"; rank-k error on {check['module']}: randomized {check['randomized']:.4f} "
                f"({check['cpu_fast']:.2f} CPU s) vs exact SVD {check['exact']:.4f} "
                f"({check['cpu_exact']:.1f} CPU s)"
            )
        print(note)


if __name__ == "__main__":
    main()
