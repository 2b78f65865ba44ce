"""Bundle kind ``transformers-classification``: a transformers sequence classifier (BERT-, LLaMA-,
Mistral-, Qwen-family), PEFT ``SEQ_CLS`` LoRA adapters each with its own trained head, and JSONL
task data.

``manifest.json``::

    {"name": ..., "kind": "transformers-classification", "format_version": 1,
     "base_model": {"path": DIR | "package": NAME, "num_labels": 3, "max_length": 128,
                    "extra_weights": "base/extra.safetensors"?},
     "tasks": [{"name": "mnli", "classes": [...], "adapter": DIR,
                "data": {"validation": FILE, "test": FILE?},
                "individual_accuracy"?: ..., "base_head_accuracy"?: ...}, ...]}

Paths are relative to the bundle folder (shipped bundles) or absolute (``merge-lab bundle init``
references the user's files in place). A task with ``C < num_labels`` classes uses head rows
``0 … C−1`` (the KnOTS protocol masks the rest). JSONL rows: ``{"text", "text_pair"?, "label"?}``.

A task's logits are its head (read from the adapter's ``modules_to_save``) applied to the head's
input features: BERT's pooler output, or a decoder's hidden state at the last non-pad token. The
forward runs the model's own ``forward`` (so any family works) with the classifier's input captured.
An adapter may also save its own BERT pooler (``modules_to_save=["classifier", "pooler"]``, a
valid PEFT ``SEQ_CLS`` setup); the pooler is then part of that task's head, ``tanh(h_CLS Wpᵀ + bp)``,
and the captured features are the pooler's input at the first token (tasks whose adapter saved no
pooler use the base model's).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from merging_core.adapters import AdapterSet
from merging_core.lowrank_forward import patched, require_unpatched
from merging_core.taskdata import LowRankUpdate, task_position

KIND = "transformers-classification"
SPLITS = ("validation", "test")
NORMALISER = {"test": "individual_accuracy", "validation": "individual_validation_accuracy"}
BASE_ROW = {"test": "base_head_accuracy", "validation": "base_head_validation_accuracy"}
EVAL_CHUNK = 64


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the task and the file."""


@dataclass
class Head:
    """A task's classifier: ``logits = f @ weight[:C]ᵀ + bias[:C]`` (bias may be None), where
    ``f = tanh(h @ pooler_weightᵀ + pooler_bias)`` when the task has its own pooler (``h``: the
    first token's hidden state) and the captured features otherwise."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    classes: int
    pooler: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooler is not None:
            pw, pb = (t.to(features.device, features.dtype) for t in self.pooler)
            features = torch.tanh(features @ pw.T + pb)  # (N, d) @ (d, d)
        w = self.weight[: self.classes].to(features.device, features.dtype)
        out = features @ w.T
        if self.bias is not None:
            out = out + self.bias[: self.classes].to(features.device, features.dtype)
        return out


@dataclass
class Encoded:
    """Tokenised rows of one split: ``input_ids``/``attention_mask`` ``(N, L)``, labels or None,
    and ``token_type_ids`` ``(N, L)`` for models that take segment ids (BERT's text pairs)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    token_type_ids: torch.Tensor | None = None

    def by_length(self, count: int) -> torch.Tensor:
        """Indices of the first ``count`` rows, sorted by token count (stable)."""
        lengths = self.attention_mask[:count].sum(dim=1)
        return torch.sort(lengths, stable=True).indices

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self.attention_mask[index]
        length = max(int(mask.sum(dim=1).max()), 1) if mask.numel() else 1
        out = {"input_ids": self.input_ids[index, :length], "attention_mask": mask[:, :length]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[index, :length]
        return out


class ModelRunner:
    """Runs the classifier and returns the head's input features (never its own logits).

    ``pooler_path``: capture the input of that module (BERT's pooler) at the first token instead,
    for heads that carry their own pooler.
    """

    def __init__(self, model: nn.Module, head_path: str, pooler_path: str | None = None) -> None:
        self.model, self.head_path, self.pooler_path = model, head_path, pooler_path
        self.head = model.get_submodule(pooler_path or head_path)

    def features(self, inputs: Mapping[str, torch.Tensor], weights=None) -> torch.Tensor:
        """``(N, d)`` head inputs; ``weights``: ``{param path: tensor}`` to run with instead."""
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            if weights:
                functional_call(self.model, dict(weights), args=(), kwargs=dict(inputs))
            else:
                self.model(**inputs)
        finally:
            handle.remove()
        if self.pooler_path is not None:
            return captured[0][:, 0]  # (N, L, d) -> the [CLS] token, as BERT's pooler reads it
        return _pool(captured[0], inputs["attention_mask"])


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT heads see ``(N, d)`` already; decoders' ``(N, L, d)`` -> the last non-pad token."""
    if hidden.dim() == 2:
        return hidden
    last = (mask.sum(dim=1) - 1).clamp_min(0).to(hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@dataclass
class TransformersBundle:
    """A loaded ``transformers-classification`` bundle (see the module docstring)."""

    name: str
    root: Path
    manifest: dict[str, Any]
    task_names: tuple[str, ...]
    adapter_dirs: dict[str, Path]
    runner: ModelRunner
    heads: dict[str, Head]
    data: dict[tuple[str, str], Encoded]
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> nn.Module:
        return self.runner.model

    def _entry(self, task: str) -> dict[str, Any]:
        for entry in self.manifest["tasks"]:
            if entry["name"] == task:
                return entry
        raise KeyError(
            f"bundle {self.name!r} has no task {task!r}; tasks are {list(self.task_names)}"
        )

    def adapter_set(self) -> AdapterSet:
        """The adapters in task order, read by :func:`merging_core.io.load_adapter`."""
        from merging_core.io import load_adapter

        return AdapterSet.from_adapters(
            [load_adapter(self.adapter_dirs[t], name=t) for t in self.task_names]
        )

    def task_data(self, device: torch.device | str | None = None) -> TextTaskData:
        """What data-driven merges get (unlabeled validation rows, frozen model, heads)."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if ("task_data", str(dev)) in self._cache:  # one per device: its fingerprint is hashed once
            return self._cache[("task_data", str(dev))]
        runner = self.runner
        if dev.type != "cpu":
            runner = ModelRunner(
                _frozen_copy(self.model).to(dev), self.runner.head_path, self.runner.pooler_path
            )
        data = self._cache[("task_data", str(dev))] = TextTaskData(
            name=self.name, task_names=self.task_names, device=dev, runner=runner,
            heads=self.heads, inputs={t: self.data[(t, "validation")] for t in self.task_names},
            entropy_scale=float(self.manifest["base_model"].get("entropy_scale", 1.0)),
        )  # fmt: skip
        return data

    def fingerprint(self) -> str:
        return self.task_data().fingerprint()

    def zero_shot_accuracy(self, split: str = "test") -> dict[str, float]:
        """Per task, base model + that task's trained head (the row in place of zero-shot)."""
        if all(BASE_ROW[split] in e for e in self.manifest["tasks"]):
            return {e["name"]: float(e[BASE_ROW[split]]) for e in self.manifest["tasks"]}
        return self._measured(
            "base", split, lambda: self._raw_accuracy({}, self.task_names, split, self.eval_rows)
        )

    def individual_accuracy(self, split: str = "test") -> dict[str, float]:
        """Per task, its own adapter's accuracy (the normalisers)."""
        if all(NORMALISER[split] in e for e in self.manifest["tasks"]):
            return {e["name"]: float(e[NORMALISER[split]]) for e in self.manifest["tasks"]}
        return self._measured("individual", split, lambda: self._individual(split))

    def _measured(self, key: str, split: str, compute) -> dict[str, float]:
        if (key, split) not in self._cache:
            self._cache[(key, split)] = compute()
        return self._cache[(key, split)]

    def _individual(self, split: str) -> dict[str, float]:
        adapters = self.adapter_set()
        out = {}
        for i, task in enumerate(self.task_names):
            own = {m: (f.B, f.A) for m, f in adapters.adapters[i].modules.items()}  # B (A x)
            out[task] = self._raw_accuracy({}, [task], split, self.eval_rows, own)[task]
        return out

    def labels(self, task: str, split: str = "test") -> torch.Tensor:
        enc = self._encoded(task, split)
        if enc.labels is None:
            raise BundleError(f"task {task!r} has no labels in its {split} split")
        return enc.labels

    def _encoded(self, task: str, split: str) -> Encoded:
        self._entry(task)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        if (task, split) not in self.data:
            raise BundleError(f"task {task!r} has no {split} split in bundle {self.name!r}")
        return self.data[(task, split)]

    @property
    def eval_rows(self) -> int | None:
        """Rows per task and split that evaluation scores by default (the manifest's
        ``measured_rows``, on which its normalisers were measured; None = every row)."""
        rows = self.manifest.get("measured_rows")
        return int(rows) if rows else None

    @property
    def slider_rows(self) -> int | None:
        """Rows per task for interactive evaluation (``evaluate(..., rows=slider_rows)``): the
        manifest's ``slider.rows``, the first rows of each file, a fixed subset with its own
        normalisers; None when the manifest names none (then evaluate every row)."""
        rows = (self.manifest.get("slider") or {}).get("rows")
        return int(rows) if rows else None

    def normalisers(self, split: str, rows: int | None) -> dict[str, float]:
        """Individual accuracies to divide by when scoring the first ``rows`` rows of ``split``:
        the slider subset's own when ``rows`` is its size, else the manifest's."""
        slider = self.manifest.get("slider") or {}
        if rows is not None and rows == slider.get("rows") and NORMALISER[split] in slider:
            return {t: float(v) for t, v in slider[NORMALISER[split]].items()}
        return self.individual_accuracy(split)

    def evaluate(
        self,
        deltas: Mapping[str, torch.Tensor] | Any,
        *,
        tasks: Sequence[str] | None = None,
        split: str = "test",
        rows: int | None = None,
    ) -> dict[str, Any]:
        """Accuracy of base + ``deltas`` on each task with its own head, and normalised accuracy
        (accuracy / the task's individual accuracy on the same split and rows).

        Space: ΔW. A ``MergeResult``'s factored modules run as low-rank updates ``B (A x)``
        inside the forward (no ``d_out × d_in`` matrix); dense modules (element-wise methods)
        and plain ΔW mappings are added to the base weights, functionally.

        Args:
            rows: score the first ``rows`` rows of each task (default :attr:`eval_rows`, the
                subset the manifest's normalisers were measured on; 0 = every row;
                :attr:`slider_rows` = the slider subset, normalised by its own individual
                accuracies).
        """
        names = list(self.task_names if tasks is None else tasks)
        limit = self.eval_rows if rows is None else (rows or None)
        dense, updates = self._split(deltas)
        raw = self._raw_accuracy(dense, names, split, limit, updates)
        ref = self.normalisers(split, limit) if split in NORMALISER else {}
        out: dict[str, Any] = {"tasks": {}}
        for name in names:
            acc = raw[name]
            base = ref.get(name)
            out["tasks"][name] = {"accuracy": acc, "normalized": acc / base if base else None}
        norms = [t["normalized"] for t in out["tasks"].values()]
        out["average_normalized"] = None if None in norms else sum(norms) / len(norms)
        return out

    def _split(self, deltas: Any) -> tuple[Mapping[str, torch.Tensor], dict[str, LowRankUpdate]]:
        """``(dense ΔW by path, low-rank (B, A) by path)`` of a result or a ΔW mapping."""
        modules = getattr(deltas, "modules", None)
        if modules is None or not hasattr(deltas, "deltas"):
            return _as_deltas(deltas), {}
        dense, updates = {}, {}
        for path, merged in modules.items():
            if merged.factors is not None and not merged.transposed:
                updates[path] = self._checked_update(path, merged.factors.B, merged.factors.A)
            else:
                dense[path] = merged.delta()
        return dense, updates

    def _checked_update(self, path: str, B: torch.Tensor, A: torch.Tensor) -> LowRankUpdate:
        shape = tuple(self._module(path).weight.shape)
        if (B.shape[0], A.shape[1]) != shape:
            raise ValueError(
                f"ΔW for {path!r} has shape {(B.shape[0], A.shape[1])}, the weight is {shape}"
            )
        return B.float(), A.float()

    @torch.inference_mode()
    def _raw_accuracy(
        self,
        deltas: Mapping[str, torch.Tensor],
        names,
        split,
        limit: int | None = None,
        updates: Mapping[str, LowRankUpdate] | None = None,
    ) -> dict[str, float]:
        require_unpatched(self.model)
        weights = self._merged_weights(deltas)
        out = {}
        with patched(self.model, updates or {}):
            for name in names:
                enc = self._encoded(name, split)
                labels = self.labels(name, split)[:limit]
                order = enc.by_length(labels.shape[0])  # similar lengths share a chunk
                correct = 0
                for index in order.split(EVAL_CHUNK):
                    feats = self.runner.features(enc.rows(index), weights)
                    correct += int((self.heads[name](feats).argmax(-1) == labels[index]).sum())
                out[name] = correct / max(labels.shape[0], 1)
        return out

    def _module(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            raise KeyError(f"bundle {self.name!r} model has no module {path!r}") from None

    def _merged_weights(self, deltas: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = {}
        for path, dw in deltas.items():
            module = self._module(path)
            if tuple(dw.shape) != tuple(module.weight.shape):
                raise ValueError(
                    f"ΔW for {path!r} has shape {tuple(dw.shape)}, the weight is "
                    f"{tuple(module.weight.shape)}"
                )
            weights[f"{path}.weight"] = module.weight.detach() + dw.detach().to(module.weight.dtype)
        return weights


@dataclass
class TextTaskData:
    """The :class:`merging_core.taskdata.TaskData` of a transformers bundle."""

    name: str
    task_names: tuple[str, ...]
    device: torch.device
    runner: ModelRunner
    heads: dict[str, Head]
    inputs: dict[str, Encoded]
    entropy_scale: float = 1.0
    _fingerprint: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """BLAKE2 of task names, model weights, heads and the unlabeled token ids."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(repr((KIND, self.task_names)).encode())
            tensors = list(self.runner.model.state_dict().values())
            for t in self.task_names:
                head = self.heads[t]
                tensors += [head.weight, *([] if head.bias is None else [head.bias])]
                tensors += list(head.pooler or ())
                enc = self.inputs[t]
                tensors += [enc.input_ids, enc.attention_mask]
                tensors += [] if enc.token_type_ids is None else [enc.token_type_ids]
            for t in tensors:
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _task(self, task: str) -> str:
        return self.task_names[task_position(self, task)]

    def num_unlabeled(self, task: str) -> int:
        return int(self.inputs[self._task(task)].input_ids.shape[0])

    def unlabeled(self, task: str, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.inputs[self._task(task)].rows(index.cpu())

    def features(
        self,
        batches: Sequence[Mapping[str, torch.Tensor]],
        updates: Mapping[str, LowRankUpdate] | None = None,
        capture: MutableMapping[str, list[torch.Tensor]] | None = None,
    ) -> list[torch.Tensor]:
        inputs = _concat_padded(batches, self.device)
        with patched(self.runner.model, updates or {}, capture=capture):
            feats = self.runner.features(inputs)
        return list(feats.split([int(b["input_ids"].shape[0]) for b in batches]))

    def logits(
        self, task: str, features: torch.Tensor, *, scale: float | None = None
    ) -> torch.Tensor:
        out = self.heads[self._task(task)](features)
        return out if scale is None else float(scale) * out


def _concat_padded(batches, device) -> dict[str, torch.Tensor]:
    """Right-pad every batch to the longest and stack them (one forward for all tasks)."""
    length = max(int(b["input_ids"].shape[1]) for b in batches)
    out: dict[str, list[torch.Tensor]] = {key: [] for key in batches[0]}
    for b in batches:
        pad = length - int(b["input_ids"].shape[1])
        for key in out:
            out[key].append(nn.functional.pad(b[key], (0, pad)))
    return {key: torch.cat(parts).to(device) for key, parts in out.items()}


def _as_deltas(deltas: Any) -> Mapping[str, torch.Tensor]:
    if hasattr(deltas, "deltas") and callable(deltas.deltas):
        return deltas.deltas()
    if isinstance(deltas, Mapping):
        return deltas
    raise TypeError(
        f"deltas must be a mapping module path -> ΔW or a MergeResult, got {type(deltas).__name__}"
    )


def _frozen_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


# ---------------------------------------------------------------------------------------------
# Loading.


def resolve_path(root: Path, value: str) -> Path:
    """A manifest path: absolute as given (user bundles), relative to ``root`` otherwise and
    then never outside it."""
    path = Path(value)
    if path.is_absolute():
        return path
    resolved = (root / path).resolve()
    if root.resolve() not in resolved.parents and resolved != root.resolve():
        raise BundleError(f"bundle path {value[:80]!r} points outside the bundle folder {root}")
    return resolved


def base_model_dir(root: Path, base: Mapping[str, Any]) -> Path:
    """The base model folder: ``path``, or ``package`` (a module with ``get_model_path()``)."""
    if bool(base.get("path")) == bool(base.get("package")):
        raise BundleError(
            f"{root / 'manifest.json'}: base_model needs exactly one of path or package"
        )
    if base.get("package"):
        try:
            module = importlib.import_module(str(base["package"]))
        except ImportError as err:
            raise BundleError(
                f"base model package {str(base['package'])[:80]!r} is not installed ({err}); see "
                "requirements-models.txt"
            ) from None
        return Path(module.get_model_path())
    return resolve_path(root, str(base["path"]))


def load_model(model_dir: Path, num_labels: int) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` from a local folder, offline, in eval mode with frozen weights."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not (model_dir / "config.json").is_file():
        raise BundleError(f"{model_dir}: not a transformers model folder (no config.json)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" notice: heads come from adapters
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=num_labels, local_files_only=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.config.pad_token_id = tokenizer.pad_token_id
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tokenizer


def head_path(model: nn.Module, num_labels: int) -> str:
    """The classifier module: the last ``nn.Linear`` whose output size is ``num_labels``."""
    found = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == num_labels
    ]
    if not found:
        raise BundleError(f"the model has no classifier layer with {num_labels} outputs")
    return found[-1]


def pooler_path(model: nn.Module) -> str | None:
    """BERT's pooler (a module named ``…pooler`` with a linear ``dense``), or None."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "pooler" and isinstance(getattr(module, "dense", None), nn.Linear):
            return name
    return None


def read_pooler(adapter_dir: Path, path: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pooler an adapter saved (``<path>.dense.weight`` and ``.bias``), or None."""
    from merging_core.io import load_saved_modules

    if path is None:
        return None
    saved = load_saved_modules(adapter_dir)
    weight, bias = saved.get(f"{path}.dense.weight"), saved.get(f"{path}.dense.bias")
    if weight is None:
        return None
    if bias is None:
        raise BundleError(f"adapter {adapter_dir} saved {path}.dense.weight without its bias")
    return weight, bias


def read_head(adapter_dir: Path, path: str, num_labels: int, classes: int, task: str) -> Head:
    """The task's head from the adapter's saved modules (``<path>.weight`` [+ ``.bias``])."""
    from merging_core.io import load_saved_modules

    saved = load_saved_modules(adapter_dir)
    weight = saved.get(f"{path}.weight")
    if weight is None:
        raise BundleError(
            f"task {task!r}: adapter {adapter_dir} has no classifier head {path!r} (train it with "
            f"modules_to_save=[{path.split('.')[-1]!r}]); it saved {sorted(saved)[:4] or 'none'}"
        )
    if weight.shape[0] != num_labels:
        raise BundleError(
            f"task {task!r}: head {path!r} in {adapter_dir} has {weight.shape[0]} rows, the "
            f"bundle's num_labels is {num_labels}"
        )
    return Head(weight=weight, bias=saved.get(f"{path}.bias"), classes=classes)


def read_jsonl(file: Path, task: str, classes: int, *, need_labels: bool) -> list[dict[str, Any]]:
    """Rows of a JSONL task file, checked: ``text`` string, optional ``text_pair``, ``label`` in
    ``[0, classes)``."""
    if not file.is_file():
        raise BundleError(f"task {task!r}: data file {file} does not exist")
    rows = []
    with file.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BundleError(f"task {task!r}: {file} line {n} is not JSON ({err})") from None
            _check_row(row, file, n, task, classes, need_labels)
            rows.append(row)
    if not rows:
        raise BundleError(f"task {task!r}: {file} holds no rows")
    return rows


def _check_row(row, file, n, task, classes, need_labels) -> None:
    where = f"task {task!r}: {file} line {n}"
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise BundleError(f"{where} needs a string field 'text'")
    if "text_pair" in row and not isinstance(row["text_pair"], str):
        raise BundleError(f"{where}: 'text_pair' must be a string")
    if "label" in row:
        label = row["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < classes:
            raise BundleError(f"{where}: label {str(label)[:20]} is not in [0, {classes})")
    elif need_labels:
        raise BundleError(f"{where} has no 'label' (the test split is for reporting accuracy)")


def encode(tokenizer: Any, rows: list[dict[str, Any]], max_length: int, *, types: bool) -> Encoded:
    """Tokenise ``rows`` (pairs when every row has ``text_pair``); ``types``: keep segment ids."""
    texts = [r["text"] for r in rows]
    pairs = [r.get("text_pair") for r in rows]
    kwargs = dict(truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    if all(p is not None for p in pairs):
        enc = tokenizer(texts, pairs, **kwargs)
    else:
        enc = tokenizer(texts, **kwargs)
    labels = None
    if all("label" in r for r in rows):
        labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    segments = enc.get("token_type_ids") if types else None
    return Encoded(enc["input_ids"], enc["attention_mask"], labels, segments)


def takes_segments(model: nn.Module) -> bool:
    """Whether the model's forward takes ``token_type_ids`` (BERT does, LLaMA does not)."""
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def load_transformers_bundle(root: Path, manifest: dict[str, Any]) -> TransformersBundle:
    """Load a ``transformers-classification`` bundle in folder ``root``.

    Raises:
        BundleError: a problem naming the task and the file (missing head, bad data row, label out
            of range, adapter module not in the model, ...).
    """
    base = manifest.get("base_model") or {}
    num_labels = int(base.get("num_labels", 0))
    if num_labels < 2:
        raise BundleError(f"{root / 'manifest.json'}: base_model.num_labels must be >= 2")
    model, tokenizer = load_model(base_model_dir(root, base), num_labels)
    if base.get("extra_weights"):
        _load_extra(model, resolve_path(root, str(base["extra_weights"])))
    path = head_path(model, num_labels)
    types = takes_segments(model)
    tasks = manifest.get("tasks") or []
    if not tasks:
        raise BundleError(f"{root / 'manifest.json'}: no tasks")
    names, dirs, heads, data = [], {}, {}, {}
    max_length = int(base.get("max_length", 128))
    for entry in tasks:
        task = str(entry["name"])
        classes = len(entry.get("classes") or range(num_labels))
        names.append(task)
        dirs[task] = resolve_path(root, str(entry["adapter"]))
        heads[task] = read_head(dirs[task], path, num_labels, classes, task)
        for split, file in (entry.get("data") or {}).items():
            if split not in SPLITS:
                raise BundleError(
                    f"task {task!r}: unknown split {str(split)[:20]!r} (use {list(SPLITS)})"
                )
            rows = read_jsonl(
                resolve_path(root, str(file)), task, classes, need_labels=split == "test"
            )
            data[(task, split)] = encode(tokenizer, rows, max_length, types=types)
        if (task, "validation") not in data:
            raise BundleError(f"task {task!r}: no validation data (unlabeled inputs for merges)")
    pooler = _own_poolers(model, dirs, heads)
    bundle = TransformersBundle(
        name=str(manifest.get("name") or root.name), root=root, manifest=manifest,
        task_names=tuple(names), adapter_dirs=dirs, runner=ModelRunner(model, path, pooler),
        heads=heads, data=data,
    )  # fmt: skip
    _check_modules(bundle)
    return bundle


def _own_poolers(model: nn.Module, dirs: Mapping[str, Path], heads: dict[str, Head]) -> str | None:
    """Attach each adapter's saved pooler to its head; the pooler's path when any adapter saved
    one (tasks without get the base model's pooler), else None (heads read the pooler output)."""
    path = pooler_path(model)
    own = {task: read_pooler(folder, path) for task, folder in dirs.items()}
    if path is None or all(p is None for p in own.values()):
        return None
    dense = model.get_submodule(f"{path}.dense")
    base = (dense.weight.detach().float(), dense.bias.detach().float())
    for task, pooler in own.items():
        heads[task].pooler = pooler if pooler is not None else base
    return path


def _load_extra(model: nn.Module, file: Path) -> None:
    from safetensors.torch import load_file

    extra = load_file(str(file))
    missing = [k for k in extra if k not in model.state_dict()]
    if missing:
        raise BundleError(f"{file}: weights {missing[:3]} are not in the base model")
    model.load_state_dict(extra, strict=False)


def _check_modules(bundle: TransformersBundle) -> None:
    """Every adapter module must be a linear layer of the model with the same shape."""
    from merging_core.io import load_adapter

    for task in bundle.task_names:
        adapter = load_adapter(bundle.adapter_dirs[task], name=task)
        for module, factors in adapter.modules.items():
            try:
                layer = bundle.model.get_submodule(module)
            except AttributeError:
                raise BundleError(
                    f"task {task!r}: adapter {bundle.adapter_dirs[task]} targets {module!r}, which "
                    "is not a module of the base model"
                ) from None
            shape = tuple(getattr(layer, "weight", torch.empty(0)).shape)
            if shape != tuple(factors.shape):
                raise BundleError(
                    f"task {task!r}: module {module!r} has weight {shape} but the adapter's ΔW is "
                    f"{tuple(factors.shape)}"
                )
