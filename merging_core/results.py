"""Value types of a merge: ``MergedModule``, ``MergeResult``, the progress callback, and the
per-module loop every method shares (a leaf module: methods import it, it imports no method).

A merged module is kept as exact LoRA factors whenever the method's maths allows it (sums,
concatenations, SVD-based methods) and as a dense ΔW only for element-wise methods (TIES, DARE),
which on large models is computed on demand, one module at a time (``MergedModule.from_compute``).
All tensors are in the *linear* layout ``(d_out, d_in)``; ``transposed`` restores the base layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
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
        tol = max(merged.linear_shape) * eps * float(S[0])
    return int((S > tol).sum())


@dataclass(frozen=True)
class MergedModule:
    """One module's merged update: exact factors, a dense ΔW, or a dense ΔW computed on demand.

    Element-wise methods (TIES, DARE) on large models return *lazy* dense modules: ``compute``
    rebuilds this module's merged ΔW from the inputs when asked and nothing keeps it, so an
    export that truncates module by module holds one dense module at a time instead of the
    whole model (peak memory a few modules). Every accessor below works for all three kinds;
    ``dense`` itself is only set for stored dense modules.

    Attributes:
        factors: ``LoraModule`` with ``B (d_out, k)``, ``A (k, d_in)``; None when dense.
        dense: ``(d_out, d_in)`` float32 ΔW in the linear layout; None when factored or lazy.
        transposed: the base weight's layout is ``(d_in, d_out)`` (see ``LoraModule``).
        kind: ``"linear"`` or ``"embedding"`` (export writes the matching PEFT keys).
        compute: ``() -> (d_out, d_in)`` float32 ΔW, deterministic (lazy modules only).
        lazy_shape: ``(d_out, d_in)`` of ``compute``'s result (lazy modules only).
    """

    factors: LoraModule | None = None
    dense: torch.Tensor | None = None
    transposed: bool = False
    kind: ModuleKind = "linear"
    compute: Callable[[], torch.Tensor] | None = field(default=None, repr=False, compare=False)
    lazy_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        kinds = sum(x is not None for x in (self.factors, self.dense, self.compute))
        if kinds != 1:
            raise ValueError("a MergedModule holds exactly one of factors, dense or compute")
        if self.compute is not None and self.lazy_shape is None:
            raise ValueError("a lazy MergedModule needs lazy_shape (d_out, d_in)")

    @classmethod
    def from_factors(cls, like: LoraModule, B: torch.Tensor, A: torch.Tensor) -> MergedModule:
        return cls(factors=like.with_factors(B, A), transposed=like.transposed, kind=like.kind)

    @classmethod
    def from_dense(cls, like: LoraModule, dense: torch.Tensor) -> MergedModule:
        return cls(dense=dense, transposed=like.transposed, kind=like.kind)

    @classmethod
    def from_compute(cls, like: LoraModule, compute: Callable[[], torch.Tensor]) -> MergedModule:
        """A lazy dense module: ``compute()`` returns the ``(d_out, d_in)`` ΔW when needed."""
        shape = (like.d_out, like.d_in)
        return cls(compute=compute, lazy_shape=shape, transposed=like.transposed, kind=like.kind)

    @property
    def is_factored(self) -> bool:
        return self.factors is not None

    @property
    def is_lazy(self) -> bool:
        return self.compute is not None

    @property
    def linear_shape(self) -> tuple[int, int]:
        """``(d_out, d_in)`` of the update in the linear layout."""
        if self.factors is not None:
            return (self.factors.d_out, self.factors.d_in)
        if self.dense is not None:
            return (int(self.dense.shape[0]), int(self.dense.shape[1]))
        return self.lazy_shape

    def linear_delta(self) -> torch.Tensor:
        """Dense ΔW in the linear layout ``(d_out, d_in)`` (computed now for lazy modules)."""
        if self.factors is not None:
            return self.factors.B.float() @ self.factors.A.float()
        if self.dense is not None:
            return self.dense
        return self.compute()

    def delta(self) -> torch.Tensor:
        """Dense ΔW in the base weight's layout (what ``Adapter.delta`` returns)."""
        dw = self.linear_delta()
        return dw.T.contiguous() if self.transposed else dw

    def scaled(self, factor: float) -> MergedModule:
        """The same module times ``factor`` (lazy modules stay lazy)."""
        if self.factors is not None:
            return replace(
                self, factors=self.factors.with_factors(self.factors.B * factor, self.factors.A)
            )
        if self.dense is not None:
            return replace(self, dense=self.dense * factor)
        inner = self.compute
        return replace(self, compute=lambda: inner() * factor)

    def svd(self) -> LowRankSVD:
        """Thin SVD of the update: factored route when exact factors exist, dense otherwise."""
        if self.factors is not None:
            return svd_of_product(self.factors.B, self.factors.A).drop_zeros()
        dense = self.linear_delta()
        U, S, Vh = torch.linalg.svd(dense.double(), full_matrices=False)
        # A float32 ΔW carries rounding noise ~eps·max(m, n) relative to σ_max: treat it as zero.
        noise = max(dense.shape) * torch.finfo(torch.float32).eps
        return LowRankSVD(U.float(), S.float(), Vh.T.float()).drop_zeros(rtol=noise)

    def norm(self) -> float:
        if self.factors is not None:
            return frobenius_norm(self.factors.B, self.factors.A)
        return float(torch.linalg.matrix_norm(self.linear_delta().double()))

    def singular_values(self) -> torch.Tensor:
        """``(K,)`` float64 singular values, descending, zeros kept (factor route when factored)."""
        if self.factors is not None:
            return svd_of_product(self.factors.B, self.factors.A).S.double()
        return torch.linalg.svdvals(self.linear_delta().double())

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
