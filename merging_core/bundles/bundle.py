"""Bundle kind ``tiny-vit-zero-shot`` (vision8): a tiny CLIP-style ViT, cosine zero-shot heads,
adapters, image data, batched evaluation, and the task-data source merges learn from.

Evaluation acts on ΔW: it adds each dense per-module update to the base weight
(``W + ΔW``, base layout ``(d_out, d_in)``) and runs the test (or validation) inputs of the chosen
tasks through the encoder in one batched pass, then scores each task with its frozen head. The
patch embedding is not touched by attention LoRA, so the tokens entering block 0 are computed
once per split and cached; with no update at all, the final features are cached too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call

from merging_core.adapters import AdapterSet
from merging_core.bundles import files
from merging_core.bundles.cosine import CosineTaskData
from merging_core.bundles.vit import TinyViT, ViTConfig
from merging_core.lowrank_forward import require_unpatched

KIND = "tiny-vit-zero-shot"

EVAL_SPLITS = ("validation", "test")
EVAL_CHUNK = 128  # images per forward: fastest on a 2-core CPU (cache-sized activations)
NORMALISER = {"test": "individual_accuracy", "validation": "individual_validation_accuracy"}


@dataclass
class Bundle:
    """A loaded bundle. Build with :func:`load_bundle`; do not mutate.

    Attributes:
        name: bundle id. root: its folder. manifest: the parsed ``manifest.json``.
        task_names: task names in order (= adapter names = adapter folder names).
        adapter_dirs: task name -> adapter folder (PEFT format).
    """

    name: str
    root: Path
    manifest: dict[str, Any]
    task_names: tuple[str, ...]
    adapter_dirs: dict[str, Path]
    encoder: TinyViT
    heads: dict[str, torch.Tensor]
    arrays: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def logit_scale(self) -> float:
        return float(self.manifest["base_model"]["logit_scale"])

    def _entry(self, task: str) -> dict[str, Any]:
        for entry in self.manifest["tasks"]:
            if entry["name"] == task:
                return entry
        raise KeyError(
            f"bundle {self.name!r} has no task {task!r}; tasks are {list(self.task_names)}"
        )

    def images(self, task: str, split: str = "test") -> torch.Tensor:
        """``(N, 3, H, W)`` float inputs in [0, 1] of one task's split (cached)."""
        key = ("images", task, _check_split(split))
        if key not in self._cache:
            self._entry(task)
            raw = torch.from_numpy(self.arrays[f"{task}/{split}/images"])
            self._cache[key] = raw.float() / 255
        return self._cache[key]

    def labels(self, task: str, split: str = "test") -> torch.Tensor:
        """``(N,)`` int64 labels of one task's split (never handed to merges)."""
        self._entry(task)
        return torch.from_numpy(self.arrays[f"{task}/{_check_split(split)}/labels"]).long()

    def adapter_set(self) -> AdapterSet:
        """The adapters in task order, read by :func:`merging_core.io.load_adapter`."""
        from merging_core.io import load_adapter

        return AdapterSet.from_adapters(
            [load_adapter(self.adapter_dirs[t], name=t) for t in self.task_names]
        )

    def task_data(self, device: torch.device | str | None = None) -> CosineTaskData:
        """What data-driven merges get: frozen encoder, heads, unlabeled validation inputs."""
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if ("task_data", str(dev)) in self._cache:  # one per device: its fingerprint is hashed once
            return self._cache[("task_data", str(dev))]
        encoder = self.encoder if dev.type == "cpu" else _frozen_copy(self.encoder).to(dev)
        data = self._cache[("task_data", str(dev))] = CosineTaskData(
            name=self.name,
            task_names=self.task_names,
            device=dev,
            encoder=encoder,
            heads={t: self.heads[t].to(dev) for t in self.task_names},
            logit_scale=self.logit_scale,
            entropy_scale=float(self.manifest["base_model"].get("entropy_scale", 1.0)),
            inputs={t: self.images(t, "validation").to(dev) for t in self.task_names},
        )
        return data

    @property
    def slider_rows(self) -> int | None:
        """Rows per task for interactive evaluation: None, every test row (128 per task)."""
        return None

    def fingerprint(self) -> str:
        """Content hash of what merges read (see :meth:`CosineTaskData.fingerprint`)."""
        return self.task_data().fingerprint()

    def zero_shot_accuracy(self) -> dict[str, float]:
        """Per task, the base model's test accuracy with its zero-shot head (from the manifest)."""
        return {e["name"]: float(e["zero_shot_accuracy"]) for e in self.manifest["tasks"]}

    def individual_accuracy(self) -> dict[str, float]:
        """Per task, its own adapter's test accuracy (the normalisers, from the manifest)."""
        return {e["name"]: float(e["individual_accuracy"]) for e in self.manifest["tasks"]}

    def evaluate(
        self,
        deltas: Mapping[str, torch.Tensor] | Any,
        *,
        tasks: Sequence[str] | None = None,
        split: str = "test",
        rows: int | None = None,
    ) -> dict[str, Any]:
        """Accuracy of base + ``deltas`` on each task, and accuracy normalised by the individual
        fine-tuned accuracy on the same split (the paper's metric, as a fraction).

        Space: ΔW (dense per-module updates added to the base weights).

        Args:
            deltas: module path -> dense ΔW ``(d_out, d_in)`` in base layout, or a ``MergeResult``
                (its ``.deltas()`` is used). Paths are ``encoder`` Linear paths. Empty = base model.
            tasks: task names to score (default: all, in bundle order).
            split: ``"test"`` (reporting) or ``"validation"``.
            rows: score only the first ``rows`` inputs of each task (None or 0 = all; the
                normalisers stay the whole split's).

        Returns:
            ``{"tasks": {name: {"accuracy": a, "normalized": a / individual}},
            "average_normalized": mean}``; normalised values are None in a bundle whose manifest
            has no individual accuracies yet (during its build).
        """
        out: dict[str, Any] = {"tasks": {}}
        for name, f in self.features(deltas, tasks=tasks, split=split).items():
            head = self.heads[name]
            preds = (torch.nn.functional.normalize(f[: rows or None], dim=-1) @ head.T).argmax(-1)
            acc = float((preds == self.labels(name, split)[: rows or None]).float().mean())
            ref = self._entry(name).get(NORMALISER[split])
            out["tasks"][name] = {"accuracy": acc, "normalized": acc / ref if ref else None}
        norms = [t["normalized"] for t in out["tasks"].values()]
        out["average_normalized"] = None if None in norms else sum(norms) / len(norms)
        return out

    def features(
        self,
        deltas: Mapping[str, torch.Tensor] | Any,
        *,
        tasks: Sequence[str] | None = None,
        split: str = "test",
    ) -> dict[str, torch.Tensor]:
        """Per task, the ``(N, embed_dim)`` features of base + ``deltas`` (unnormalised).

        Space: ΔW, as :meth:`evaluate` (which scores exactly these features).
        """
        names = self._task_list(tasks)
        weights = self._merged_weights(_as_deltas(deltas))
        feats = self._features(names, _check_split(split), weights)
        return dict(zip(names, feats.split(self._sizes(names, split)), strict=True))

    def _task_list(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return list(self.task_names)
        if isinstance(tasks, str):
            raise TypeError(f"tasks must be a list of task names, got the string {tasks!r}")
        for t in tasks:
            self._entry(t)
        return list(tasks)

    def _sizes(self, names: Iterable[str], split: str) -> list[int]:
        return [len(self.arrays[f"{n}/{split}/labels"]) for n in names]

    def _merged_weights(self, deltas: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{path.weight: W + ΔW}`` for every updated Linear; validates paths and shapes."""
        weights = {}
        for path, dw in deltas.items():
            try:
                module = self.encoder.get_submodule(path)
            except AttributeError:
                raise KeyError(f"bundle {self.name!r} encoder has no module {path!r}") from None
            if not isinstance(module, torch.nn.Linear):
                raise ValueError(f"module {path!r} is a {type(module).__name__}, not nn.Linear")
            if tuple(dw.shape) != tuple(module.weight.shape):
                raise ValueError(
                    f"ΔW for {path!r} has shape {tuple(dw.shape)}, the weight is "
                    f"{tuple(module.weight.shape)}"
                )
            weights[f"{path}.weight"] = module.weight.detach() + dw.detach().float()
        return weights

    @torch.inference_mode()
    def _features(self, names: list[str], split: str, weights: dict[str, torch.Tensor]):
        """``(N_total, embed_dim)`` features of the tasks' inputs, concatenated in task order."""
        require_unpatched(self.encoder)
        if not weights:
            return torch.cat([self._base_features(n, split) for n in names])
        tokens = torch.cat([self._tokens(n, split) for n in names])  # (N_total, 1 + P, d)
        chunks = [
            functional_call(self.encoder, weights, (chunk,), {"embedded": True})
            for chunk in tokens.split(EVAL_CHUNK)
        ]
        return torch.cat(chunks)

    def _tokens(self, task: str, split: str) -> torch.Tensor:
        key = ("tokens", task, split)
        if key not in self._cache:
            with torch.inference_mode():
                self._cache[key] = self.encoder.embed(self.images(task, split))
        return self._cache[key]

    def _base_features(self, task: str, split: str) -> torch.Tensor:
        key = ("features", task, split)
        if key not in self._cache:
            with torch.inference_mode():
                self._cache[key] = self.encoder(self._tokens(task, split), embedded=True)
        return self._cache[key]


def _check_split(split: str) -> str:
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {list(EVAL_SPLITS)}, got {split!r}")
    return split


def _as_deltas(deltas: Any) -> Mapping[str, torch.Tensor]:
    if hasattr(deltas, "deltas") and callable(deltas.deltas):
        return deltas.deltas()
    if isinstance(deltas, Mapping):
        return deltas
    raise TypeError(
        f"deltas must be a mapping module path -> ΔW or a MergeResult, got {type(deltas).__name__}"
    )


def _frozen_copy(encoder: TinyViT) -> TinyViT:
    clone = TinyViT(encoder.config)
    clone.load_state_dict(encoder.state_dict())
    return _freeze(clone)


def _freeze(encoder: TinyViT) -> TinyViT:
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


def load_vision_bundle(root: Path, manifest: dict[str, Any]) -> Bundle:
    """Load a ``tiny-vit-zero-shot`` bundle in folder ``root`` (see its README)."""
    base = manifest["base_model"]
    encoder = TinyViT(ViTConfig(**base["config"]))
    encoder.load_state_dict(files.read_tensors(root, base["weights"]))
    names = tuple(e["name"] for e in manifest["tasks"])
    heads_file = {e["head"].split(":")[0] for e in manifest["tasks"]}
    heads: dict[str, torch.Tensor] = {}
    for hf in sorted(heads_file):
        heads.update(files.read_tensors(root, hf))
    return Bundle(
        name=manifest["name"],
        root=root,
        manifest=manifest,
        task_names=names,
        adapter_dirs={e["name"]: files.inside(root, e["adapter"]) for e in manifest["tasks"]},
        encoder=_freeze(encoder),
        heads={e["name"]: heads[e["head"].split(":")[1]] for e in manifest["tasks"]},
        arrays=files.read_arrays(root, manifest["data"]),
    )


def task_arithmetic_grid(bundle: Any, grid: Sequence[float]) -> dict[str, Any]:
    """Task Arithmetic over all adapters for each λ in ``grid``: per-task normalised accuracy
    and its average (the bundle's reference difficulty numbers)."""
    from merging_core.merge import merge

    adapters = bundle.adapter_set()
    rows = []
    for lam in grid:
        res = bundle.evaluate(merge(adapters, "task_arithmetic", scaling=float(lam)))
        rows.append(
            {
                "lambda": float(lam),
                "accuracy": {n: t["accuracy"] for n, t in res["tasks"].items()},
                "normalized": {n: t["normalized"] for n, t in res["tasks"].items()},
                "average_normalized": res["average_normalized"],
            }
        )
    best = max(rows, key=lambda r: r["average_normalized"] or 0.0)
    return {
        "grid": rows,
        "best_lambda": best["lambda"],
        "best_average_normalized": best["average_normalized"],
    }
