"""Peak memory of ``load_adapter`` on a large bf16 adapter, as a multiple of the file size.

Writes a synthetic PEFT adapter (bf16 factors, ``--size-mb`` of weights; 512 modules of
``r = 64``) into a temporary folder, then loads it in a fresh subprocess and reads the peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, POSIX only) before and after
the load; the parent never imports torch, so the child's peak starts small. Prints the file
size, the peak after imports (baseline), the peak after loading, and both ``peak / size`` and
``(peak - baseline) / size``. A float32 copy of bf16 factors is 2× the file by itself, so 2×
(above the baseline) is the floor for a loader that returns float32.

Usage: ``python benchmarks/load_memory.py [--size-mb 1024] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
import torch  # noqa: F401
from merging_core.io import load_adapter
scale = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux, bytes on macOS
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
adapter = load_adapter(sys.argv[1])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
print(json.dumps({"base": base, "peak": peak, "modules": len(adapter.modules)}))
"""


def write_adapter(folder: Path, size_mb: int, *, modules: int = 512, rank: int = 64) -> Path:
    """A PEFT folder whose bf16 weights file is about ``size_mb`` MiB."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    per_module = size_mb * 2**20 // modules // 2  # bf16 elements per module (A + B)
    dim = max(per_module // (2 * rank), 1)
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(modules):
        key = f"base_model.model.layers.{i}.proj"
        tensors[f"{key}.lora_A.weight"] = torch.randn(rank, dim, generator=gen).bfloat16()
        tensors[f"{key}.lora_B.weight"] = torch.randn(dim, rank, generator=gen).bfloat16()
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--keep", type=Path, default=None, help="write (or reuse) the adapter here")
    parser.add_argument("--write-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write_adapter(args.write_only, args.size_mb)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "big"
        if not (folder / "adapter_model.safetensors").is_file():
            # in its own process: a parent holding the tensors would raise the child's
            # ru_maxrss, which Linux carries across fork + exec
            cmd = [sys.executable, __file__, "--size-mb", str(args.size_mb), "--write-only"]
            subprocess.run([*cmd, str(folder)], check=True)
        size = (folder / "adapter_model.safetensors").stat().st_size
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(folder)], check=True, capture_output=True, text=True
        )
        got = json.loads(out.stdout)
    gib = 2**30
    print(f"weights file       {size / gib:.3f} GiB ({got['modules']} modules, bf16)")
    print(f"peak after imports {got['base'] / gib:.3f} GiB")
    print(f"peak after load    {got['peak'] / gib:.3f} GiB")
    print(f"peak / size        {got['peak'] / size:.2f}x")
    print(f"(peak - base)/size {(got['peak'] - got['base']) / size:.2f}x")


if __name__ == "__main__":
    main()
