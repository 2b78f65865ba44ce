"""Build-time evaluator of nli6: base weights + any ΔW, scored per task with that task's head.

Space: ΔW. ``scores(deltas, task, split)`` writes ``W_base + ΔW`` into the targeted linear layers
of one frozen ``BertForSequenceClassification``, runs the task's tokenised rows (sorted by length,
so batches carry little padding), applies the task's own head -- its own pooler
``tanh(h_CLS Wpᵀ + bp)`` then its classifier -- to the [CLS] token's last hidden state and keeps the
first ``len(classes)`` logits (binary tasks mask the third head row).

This is the build's own measuring tool; the app and CLI evaluate through the bundle loader, whose
numbers must agree with the ones recorded here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Scores:
    """Accuracy, mean prediction entropy (nats) and mean top-class confidence of one evaluation."""

    accuracy: float
    entropy: float
    confidence: float

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "entropy": self.entropy, "confidence": self.confidence}


@dataclass
class TaskData:
    """One split of one task, tokenised and sorted by length.

    ``batches`` holds ``(input_ids, attention_mask, token_type_ids, labels)`` tuples.
    """

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    n_classes: int


def tokenise(tokenizer, rows: Sequence[dict], *, n_classes: int, max_length: int, batch: int = 128):
    """Length-sorted, padded batches of ``rows`` (``text``, ``text_pair``, ``label``)."""
    order = sorted(
        range(len(rows)),
        key=lambda i: len(rows[i]["text"]) + len(rows[i].get("text_pair") or ""),
    )
    batches = []
    for start in range(0, len(order), batch):
        chunk = [rows[i] for i in order[start : start + batch]]
        enc = tokenizer(
            [r["text"] for r in chunk],
            [r["text_pair"] for r in chunk],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        labels = torch.tensor([int(r["label"]) for r in chunk])
        batches.append((enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], labels))
    return TaskData(batches=batches, n_classes=n_classes)


class Evaluator:
    """A frozen base classifier whose targeted weights can be replaced by ``W_base + ΔW``.

    Args:
        model: ``BertForSequenceClassification`` (eval mode is set here; never trained).
        heads: task -> ``(pooler weight (hidden, hidden), pooler bias (hidden,), weight
            (num_labels, hidden), bias (num_labels,))``.
        data: ``(task, split) -> TaskData``.
    """

    def __init__(self, model, heads: Mapping[str, tuple[torch.Tensor, ...]], data):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.heads = dict(heads)
        self.data = data
        self._base = {n: p.detach().clone() for n, p in model.named_parameters()}

    def _set(self, deltas: Mapping[str, torch.Tensor]) -> None:
        params = dict(self.model.named_parameters())
        for name, base in self._base.items():
            module = name.removesuffix(".weight")
            value = base + deltas[module] if module in deltas else base
            params[name].data.copy_(value)

    @torch.inference_mode()
    def features(self, deltas: Mapping[str, torch.Tensor], task: str, split: str) -> list:
        """[CLS] hidden states ``(batch, hidden)`` per batch, and the labels, under
        ``W_base + ΔW``."""
        self._set(deltas)
        out = []
        for ids, mask, types, labels in self.data[(task, split)].batches:
            encoded = self.model.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
            out.append((encoded.last_hidden_state[:, 0], labels))
        return out

    def scores(
        self, deltas: Mapping[str, torch.Tensor], task: str, split: str, *, head: str | None = None
    ) -> Scores:
        """Scores of task ``task`` on ``split`` with ``head`` (default: the task's own)."""
        n_classes = self.data[(task, split)].n_classes
        return score_features(self.features(deltas, task, split), self.heads[head or task], n_classes)


def score_features(feats, head: Sequence[torch.Tensor], n_classes: int) -> Scores:
    """Accuracy / mean entropy / mean confidence of ``tanh(h @ Wpᵀ + bp) @ Wᵀ + b`` on the first
    ``n_classes`` logits, ``head = (Wp, bp, W, b)``."""
    pool_weight, pool_bias, weight, bias = head
    correct = entropy = confidence = 0.0
    count = 0
    for cls, labels in feats:
        pooled = torch.tanh(cls @ pool_weight.T + pool_bias)  # (batch, hidden) @ (hidden, hidden)
        logits = (pooled @ weight.T + bias)[:, :n_classes]  # (batch, hidden) @ (hidden, C)
        logp = F.log_softmax(logits, dim=-1)
        probs = logp.exp()
        correct += float((logits.argmax(-1) == labels).sum())
        entropy += float(-(probs * logp).sum(-1).sum())
        confidence += float(probs.max(-1).values.sum())
        count += len(labels)
    return Scores(correct / count, entropy / count, confidence / count)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation of two equal-length sequences; ``None`` when either is constant."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)
