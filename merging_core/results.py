"""Value types of a merge: ``MergedModule``, ``MergeResult``, the progress callback, and the
per-module loop every method shares (a leaf module: methods import it, it imports no method).

A merged module is kept as exact LoRA factors whenever the method's maths allows it (sums,
concatenations, SVD-based methods) and as a dense ΔW only for element-wise methods (TIES, DARE).
All tensors are in the *linear* layout ``(d_out, d_in)``; ``transposed`` restores the base layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from merging_core.adapters import AdapterSet, LoraModule, ModuleKind
from merging_core.factors import LowRankSVD, frobenius_norm, svd_of_product

Progress = Callable[[float, str], None]

EXACT_RTOL = 1e-10
"""Singular values below ``EXACT_RTOL · σ_max`` (plus the float32 QR noise floor, see
:func:`numerical_rank`) of a factored result count as zero (export, Merge summary)."""


def numerical_rank(merged: MergedModule, S: torch.Tensor) -> int:
    """Count of singular values (``S`` descending) above the noise floor of ``merged``.

    The one rank rule of the lab: the export's exact rank and the Merge page's summary both use
    it. Factored: ``σ > EXACT_RTOL · σ_max + r · eps32 · ‖B‖_F ‖A‖_F`` (the second term is the
    rounding of the float32 QRs, so exact cancellations such as ``w`` and ``−w`` give rank 0).
    Dense float32: ``σ > max(m, n) · eps32 · σ_max``.
    """
    if S.numel() == 0 or float(S[0]) == 0.0:
        return 0
    eps = torch.finfo(torch.float32).eps
    if merged.factors is not None:
        B, A = merged.factors.B, merged.factors.A
        floor = B.shape[1] * eps * float(B.double().norm() * A.double().norm())
        tol = EXACT_RTOL * float(S[0]) + floor
    else:
        tol = max(merged.dense.shape) * eps * float(S[0])
    return int((S > tol).sum())


@dataclass(frozen=True)
class MergedModule:
    """One module's merged update: exact factors, or a dense ΔW for element-wise methods.

    Attributes:
        factors: ``LoraModule`` with ``B (d_out, k)``, ``A (k, d_in)``; None when dense.
        dense: ``(d_out, d_in)`` float32 ΔW in the linear layout; None when factored.
        transposed: the base weight's layout is ``(d_in, d_out)`` (see ``LoraModule``).
        kind: ``"linear"`` or ``"embedding"`` (export writes the matching PEFT keys).
    """

    factors: LoraModule | None = None
    dense: torch.Tensor | None = None
    transposed: bool = False
    kind: ModuleKind = "linear"

    def __post_init__(self) -> None:
        if (self.factors is None) == (self.dense is None):
            raise ValueError("a MergedModule holds exactly one of factors or dense")

    @classmethod
    def from_factors(cls, like: LoraModule, B: torch.Tensor, A: torch.Tensor) -> MergedModule:
        return cls(factors=like.with_factors(B, A), transposed=like.transposed, kind=like.kind)

    @classmethod
    def from_dense(cls, like: LoraModule, dense: torch.Tensor) -> MergedModule:
        return cls(dense=dense, transposed=like.transposed, kind=like.kind)

    @property
    def is_factored(self) -> bool:
        return self.factors is not None

    def linear_delta(self) -> torch.Tensor:
        """Dense ΔW in the linear layout ``(d_out, d_in)``."""
        if self.factors is not None:
            return self.factors.B.float() @ self.factors.A.float()
        return self.dense

    def delta(self) -> torch.Tensor:
        """Dense ΔW in the base weight's layout (what ``Adapter.delta`` returns)."""
        dw = self.linear_delta()
        return dw.T.contiguous() if self.transposed else dw

    def svd(self) -> LowRankSVD:
        """Thin SVD of the update: factored route when exact factors exist, dense otherwise."""
        if self.factors is not None:
            return svd_of_product(self.factors.B, self.factors.A).drop_zeros()
        U, S, Vh = torch.linalg.svd(self.dense.double(), full_matrices=False)
        # A float32 ΔW carries rounding noise ~eps·max(m, n) relative to σ_max: treat it as zero.
        noise = max(self.dense.shape) * torch.finfo(torch.float32).eps
        return LowRankSVD(U.float(), S.float(), Vh.T.float()).drop_zeros(rtol=noise)

    def norm(self) -> float:
        if self.factors is not None:
            return frobenius_norm(self.factors.B, self.factors.A)
        return float(torch.linalg.matrix_norm(self.dense.double()))

    def singular_values(self) -> torch.Tensor:
        """``(K,)`` float64 singular values, descending, zeros kept (factor route when factored)."""
        if self.factors is not None:
            return svd_of_product(self.factors.B, self.factors.A).S.double()
        return torch.linalg.svdvals(self.dense.double())

    def rank_bound(self) -> int:
        """The numerical rank (:func:`numerical_rank`), the rank an exact export writes."""
        return numerical_rank(self, self.singular_values())


@dataclass(frozen=True)
class MergeResult:
    """The output of a merge.

    Attributes:
        method: registered method id. params: validated parameters. seed: generator seed.
        adapter_names: inputs in task order. modules: module path -> merged update.
        diagnostics: free-form, JSON-able numbers (per-method extras, e.g. TARA's anchors).
        extras: non-JSON payload kept for views.
        state: a data-driven method's learned state, CPU tensors (TARA: module path -> φ;
            AdaMerging: ``{"lambda": λ}``); pass the result as the next run's ``warm_start``.
            Empty for data-free methods.
        run: how a data-driven run went (JSON-able): ``steps_done``, ``stopped``, ``seconds``,
            ``device``, ``losses``, ``task_data`` (name + fingerprint), ``warm_start`` (hash of
            the state it started from, or None). Empty for data-free methods.
    """

    method: str
    params: Mapping[str, Any]
    adapter_names: tuple[str, ...]
    modules: Mapping[str, MergedModule]
    seed: int = 0
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)

    def delta(self, module: str) -> torch.Tensor:
        """Dense merged ΔW of ``module`` in the base weight's shape and layout."""
        try:
            return self.modules[module].delta()
        except KeyError:
            raise KeyError(f"merge result has no module {module!r}") from None

    def deltas(self) -> dict[str, torch.Tensor]:
        """All modules' dense ΔW in base layout (for evaluation on small models)."""
        return {name: m.delta() for name, m in self.modules.items()}

    def module_summary(self) -> list[dict[str, Any]]:
        """Per-module rank and Frobenius norm (JSON-able)."""
        return [
            {"module": n, "factored": m.is_factored, "rank": m.rank_bound(), "norm": m.norm()}
            for n, m in self.modules.items()
        ]


def result_from_modules(
    adapter_set: AdapterSet,
    modules: Mapping[str, MergedModule],
    *,
    diagnostics: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
    run: Mapping[str, Any] | None = None,
) -> MergeResult:
    """What a method function returns; ``merge()`` fills in method, params and seed."""
    return MergeResult(
        method="",
        params={},
        adapter_names=tuple(adapter_set.names),
        modules=dict(modules),
        diagnostics=dict(diagnostics or {}),
        extras=dict(extras or {}),
        state=dict(state or {}),
        run=dict(run or {}),
    )


def each_module(
    adapter_set: AdapterSet, progress: Progress | None = None
) -> Iterator[tuple[str, list[LoraModule]]]:
    """Yield ``(module path, per-task factors)`` in order; report progress after each module.

    The loop every per-module method runs, so none of them repeats the bookkeeping.
    """
    total = len(adapter_set.modules)
    for i, name in enumerate(adapter_set.modules):
        yield name, adapter_set.factors(name)
        report_progress(progress, (i + 1) / total, name)


def report_progress(progress: Progress | None, fraction: float, message: str) -> None:
    """Call ``progress`` if given (keeps method bodies free of ``if progress`` checks)."""
    if progress is not None:
        progress(float(fraction), message)
