"""Value types for LoRA adapters: one module's factors, one adapter, an aligned set of adapters.

Space: factors. A LoRA update is ``ΔW = s · B · A`` with PEFT's shapes ``A: (r, d_in)`` and
``B: (d_out, r)``. We fold the scale ``s`` (``alpha / r``, or ``alpha / sqrt(r)`` for rsLoRA) into
``B`` once, at load time, so every downstream function sees ``ΔW = B @ A`` in the *linear* layout
``(d_out, d_in)``. Modules whose base weight is stored transposed (GPT-2 ``Conv1D`` with
``fan_in_fan_out``, and ``nn.Embedding`` whose weight is ``(num_embeddings, dim)``) carry
``transposed=True``; :meth:`LoraModule.delta` then returns ``(B @ A).T`` so that the result has the
base weight's own shape and layout. Spectra, norms and merges are unaffected by that transpose.

Nothing here reads or writes files (that is :mod:`merging_core.io`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

ModuleKind = Literal["linear", "embedding"]


@dataclass(frozen=True)
class LoraModule:
    """The LoRA factors of one targeted weight, scale folded into ``B``.

    Attributes:
        B: ``(d_out, r)`` float32, already multiplied by the LoRA scale.
        A: ``(r, d_in)`` float32.
        kind: ``"linear"`` or ``"embedding"``.
        transposed: True when the base weight's layout is ``(d_in, d_out)`` (fan_in_fan_out
            Conv1D, embeddings); :meth:`delta` then returns ``(B @ A).T``.
    """

    B: torch.Tensor
    A: torch.Tensor
    kind: ModuleKind = "linear"
    transposed: bool = False

    def __post_init__(self) -> None:
        if self.B.ndim != 2 or self.A.ndim != 2:
            raise ValueError(
                f"LoRA factors must be 2-D, got B {tuple(self.B.shape)} and A {tuple(self.A.shape)}"
            )
        if self.B.shape[1] != self.A.shape[0]:
            raise ValueError(
                f"rank mismatch: B is {tuple(self.B.shape)} but A is {tuple(self.A.shape)}"
            )

    @property
    def rank(self) -> int:
        """The stored rank r (columns of B)."""
        return int(self.A.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.B.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.A.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of :meth:`delta`, i.e. of the base weight."""
        return (self.d_in, self.d_out) if self.transposed else (self.d_out, self.d_in)

    def delta(self) -> torch.Tensor:
        """Dense ΔW in the base weight's layout, float32.

        Returns:
            ``(d_out, d_in)`` (or its transpose when ``transposed``): ``(d_out, r) @ (r, d_in)``.
        """
        dw = self.B.float() @ self.A.float()  # (d_out, r) @ (r, d_in) -> (d_out, d_in)
        return dw.T.contiguous() if self.transposed else dw

    def with_factors(self, B: torch.Tensor, A: torch.Tensor) -> LoraModule:
        """Same module (kind, layout), new factors."""
        return LoraModule(B=B, A=A, kind=self.kind, transposed=self.transposed)


@dataclass(frozen=True)
class AdapterConfig:
    """What we keep of a PEFT ``adapter_config.json`` (the raw dict is kept too).

    Attributes:
        r: default rank. lora_alpha: default alpha. use_rslora: scale is alpha/sqrt(r).
        target_modules: as written in the config (list or regex string).
        base_model: ``base_model_name_or_path`` (may be empty).
        task_type: PEFT task type (may be empty).
        rank_pattern / alpha_pattern: per-module overrides, as in the config.
        raw: the full config dict as read.
    """

    r: int = 8
    lora_alpha: float = 8.0
    use_rslora: bool = False
    target_modules: Any = None
    base_model: str = ""
    task_type: str = ""
    rank_pattern: Mapping[str, int] = field(default_factory=dict)
    alpha_pattern: Mapping[str, float] = field(default_factory=dict)
    fan_in_fan_out: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter:
    """One LoRA adapter: named modules with scale-folded factors.

    Attributes:
        name: display name (the folder name when loaded from disk).
        modules: module path (as PEFT names it, without ``base_model.model.``) -> factors,
            in file order. Iterating yields the module paths.
        config: the parsed config.
        warnings: plain-words notes about things that are not merged (``modules_to_save``,
            ``lora_bias``, trainable tokens, non-standard init ...).
        source: where it came from (a path string, or ``""`` for in-memory adapters).
        sha256: content hash of the weights file ("" when built in memory).
    """

    name: str
    modules: Mapping[str, LoraModule]
    config: AdapterConfig = field(default_factory=AdapterConfig)
    warnings: tuple[str, ...] = ()
    source: str = ""
    sha256: str = ""

    def delta(self, module: str) -> torch.Tensor:
        """Dense float32 ΔW of ``module`` in the base weight's shape and layout, scale applied."""
        try:
            return self.modules[module].delta()
        except KeyError:
            raise KeyError(
                f"adapter {self.name!r} has no module {module!r}; it has {len(self.modules)} "
                f"modules, e.g. {list(self.modules)[:3]}"
            ) from None

    @property
    def ranks(self) -> dict[str, int]:
        return {name: m.rank for name, m in self.modules.items()}

    @property
    def num_params(self) -> int:
        """Number of LoRA parameters (entries of all A and B)."""
        return sum(m.A.numel() + m.B.numel() for m in self.modules.values())

    def content_hash(self) -> str:
        """SHA-256 of the factors (stable across runs; used for cache keys and recipes)."""
        if self.sha256:
            return self.sha256
        h = hashlib.sha256()
        for name, m in self.modules.items():
            h.update(name.encode())
            h.update(m.B.detach().float().contiguous().numpy().tobytes())
            h.update(m.A.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class AdapterSet:
    """Several adapters aligned module by module.

    Only modules present in *every* adapter with the same delta shape are mergeable
    (``modules``); everything else is described in ``issues`` in plain words. Mixed ranks are fine.

    Attributes:
        adapters: the adapters, in the user's order (this order is the task order).
        modules: module paths common to all adapters with consistent shapes, in the first
            adapter's order.
        issues: plain-words notes on mismatches (different base models, missing modules,
            shape clashes).
    """

    adapters: tuple[Adapter, ...]
    modules: tuple[str, ...]
    issues: tuple[str, ...] = ()

    @classmethod
    def from_adapters(cls, adapters: list[Adapter] | tuple[Adapter, ...]) -> AdapterSet:
        """Align adapters; raise ``ValueError`` if nothing at all can be merged.

        Raises:
            ValueError: no adapters, duplicate names, or no module common to all adapters.
        """
        adapters = tuple(adapters)
        if not adapters:
            raise ValueError("an AdapterSet needs at least one adapter, got none")
        names = [a.name for a in adapters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"adapter names must be unique, got duplicates {dupes}")
        issues = _base_model_issues(adapters)
        common, more = _common_modules(adapters)
        issues += more
        if not common:
            raise ValueError(
                "these adapters share no module with a common shape, so nothing can be merged: "
                + "; ".join(more)
            )
        return cls(adapters=adapters, modules=tuple(common), issues=tuple(issues))

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.adapters]

    def __len__(self) -> int:
        return len(self.adapters)

    def __iter__(self) -> Iterator[Adapter]:
        return iter(self.adapters)

    def factors(self, module: str) -> list[LoraModule]:
        """The factors of ``module`` in every adapter, in task order."""
        return [a.modules[module] for a in self.adapters]

    def subset(self, indices: list[int] | tuple[int, ...]) -> AdapterSet:
        """The adapters at ``indices`` (in that order) as a new set."""
        for i in indices:
            if not 0 <= i < len(self.adapters):
                raise ValueError(
                    f"adapter index {i} out of range for {len(self.adapters)} adapters"
                )
        return AdapterSet.from_adapters([self.adapters[i] for i in indices])

    def layer_of(self, module: str) -> str:
        """Group key for per-layer tables: the module path up to its last numeric component."""
        return layer_key(module)


def layer_key(module: str) -> str:
    """`"blocks.3.attn.q_proj"` -> `"blocks.3"`; without a number: the parent path."""
    parts = module.split(".")
    idx = [i for i, p in enumerate(parts) if p.isdigit()]
    if idx:
        return ".".join(parts[: idx[-1] + 1])
    return ".".join(parts[:-1]) or module


def _base_model_issues(adapters: tuple[Adapter, ...]) -> list[str]:
    bases = {a.config.base_model for a in adapters if a.config.base_model}
    if len(bases) > 1:
        per = ", ".join(f"{a.name}: {a.config.base_model or '?'}" for a in adapters)
        return [f"adapters name different base models ({per}); merging them may be meaningless"]
    return []


def _common_modules(adapters: tuple[Adapter, ...]) -> tuple[list[str], list[str]]:
    first = adapters[0]
    issues: list[str] = []
    common: list[str] = []
    for name in first.modules:
        missing = [a.name for a in adapters if name not in a.modules]
        if missing:
            continue
        shapes = {a.name: a.modules[name].shape for a in adapters}
        kinds = {(a.modules[name].kind, a.modules[name].transposed) for a in adapters}
        if len(set(shapes.values())) > 1 or len(kinds) > 1:
            issues.append(f"module {name!r} has clashing shapes {shapes}; it is left out")
            continue
        common.append(name)
    for a in adapters:
        only = [n for n in a.modules if any(n not in b.modules for b in adapters)]
        if only:
            issues.append(
                f"{len(only)} module(s) of {a.name!r} are missing from other adapters and are "
                f"left out, e.g. {only[:3]}"
            )
    return common, issues
