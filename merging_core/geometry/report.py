"""``analyse_geometry``: every geometry metric for every module, as flat JSON-able rows.

Space: stated per column in :data:`COLUMNS` (``"ΔW"`` = invariant under ``(B M, M⁻¹ A)``,
``"factors"`` = depends on the factorisation by definition, ``"ΔW, element-wise"`` = entries of
the dense update). Modules that share shape and per-task ranks are analysed together in batches,
from the ``R × R`` Gram matrices of the stacked factors (``R = Σ r_t``); nothing ``m × n`` is
formed except by the exact sign-conflict pass (``sign_exact=True``). By default the sign-conflict
columns are estimates from sampled entries with confidence bounds (``*_low``, ``*_high``; see
:mod:`merging_core.geometry.sampled_conflicts`), and the report says so (``sign_method``, notes).

Rows (``GeometryReport.per_module``): ``module``, ``layer``, ``d_out``, ``d_in``, ``num_tasks``,
``rank_sum`` and the metric columns of :data:`COLUMNS`. ``per_layer`` has ``layer``,
``num_modules`` and the mean of each metric column over the layer's modules (``None`` when a
column was not computed). Layers are grouped by :func:`merging_core.adapters.layer_key`.
``per_task`` / ``per_task_layer`` hold each adapter's own erank, stable rank and norm
(:mod:`merging_core.geometry.task_metrics`).

Precision: the Gram route resolves singular values down to about ``1e-7 · σ_max``; smaller ones
count as zero (``spectra.ZERO_RTOL = 1e-6``), which moves an erank by less than ``1e-5``. Cost for
6 tasks × 128 LLaMA-3-8B modules (r = 16), single-thread CPU: about 1.7 s for the factor-space
metrics plus about 1.3 s for the sampled sign conflicts (65 536 entries per module), against
about 210 s for the exact sign-conflict pass (benchmarks/geometry.py, measured on a busy
2-core machine).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from merging_core.adapters import AdapterSet, LoraModule, layer_key
from merging_core.geometry._gram import ModuleBatch, build_batch, sum_svd, task_sigmas
from merging_core.geometry.conflicts import sign_conflict_rates
from merging_core.geometry.coverage import coverage_from_batch
from merging_core.geometry.crowding import crowding_from_batch
from merging_core.geometry.cur import CUR_LABEL, angles_degrees, cur_from_batch
from merging_core.geometry.sampled_conflicts import (
    DEFAULT_SAMPLES,
    ConflictEstimate,
    estimate_sign_conflicts,
)
from merging_core.geometry.spectra import (
    clean_spectrum,
    component_energy,
    effective_rank,
    energy_curve,
    stable_rank,
)
from merging_core.geometry.task_metrics import (
    TASK_METRICS,
    task_layer_matrix,
    task_layer_rows,
    task_metric_stacks,
    task_rows,
)
from merging_core.results import Progress, report_progress

CHUNK_ELEMENTS = 1 << 23  # float64 entries of stacked factors per batch (64 MiB)

COLUMNS: dict[str, tuple[str, str]] = {
    "erank_task_mean": ("ΔW", "mean over tasks of erank(ΔW_t)"),
    "erank_task_sum": ("ΔW", "Σ_t erank(ΔW_t)"),
    "stable_rank_task_mean": ("ΔW", "mean over tasks of the stable rank of ΔW_t"),
    "norm_task_mean": ("ΔW", "mean over tasks of ‖ΔW_t‖_F"),
    "erank_ta": ("ΔW", "erank of the Task-Arithmetic sum Σ_t ΔW_t"),
    "stable_rank_ta": ("ΔW", "stable rank of Σ_t ΔW_t"),
    "norm_ta": ("ΔW", "‖Σ_t ΔW_t‖_F"),
    "ta_coverage": ("ΔW", "erank_ta / erank_task_sum (ours)"),
    "erank_dw_stack": ("ΔW", "TARA's LoRA-agnostic stack: erank of [vec ΔW_1; …; vec ΔW_T]"),
    "erank_rank1_task_sum": ("factors", "TARA's per-task sum: Σ_t erank of task t's rank-1 stack"),
    "erank_rank1_stack": ("factors", "TARA's LoRA-aware stack: erank of all vec(b aᵀ) rows"),
    "coverage_ratio": ("factors", "erank_rank1_stack / erank_rank1_task_sum (paper: ~0.7)"),
    "erank_rank1_task_sum_normalised": ("factors", "erank_rank1_task_sum, rows of unit norm"),
    "erank_rank1_stack_normalised": ("factors", "erank_rank1_stack, rows of unit norm"),
    "coverage_ratio_normalised": ("factors", "coverage_ratio with norm-normalised rows (control)"),
    "overlap_B_mean": ("ΔW", "Pico O_B: mean over task pairs i≠j of col-space overlap"),
    "overlap_B_max": ("ΔW", "max over i≠j of O_B(i, j)"),
    "overlap_A_mean": ("ΔW", "Pico O_A: mean over i≠j of row-space overlap"),
    "overlap_A_max": ("ΔW", "max over i≠j of O_A(i, j)"),
    "erank_B_subspace": ("ΔW", "erank of the stacked orthonormal bases of col(B_t) (ours)"),
    "erank_A_subspace": ("ΔW", "erank of the stacked orthonormal bases of row(A_t) (ours)"),
    "erank_B_stack": ("factors", "Pico: erank of [B_1 … B_T]"),
    "erank_A_stack": ("factors", "Pico: erank of [A_1; …; A_T]"),
    "stable_rank_B_stack": ("factors", "stable rank of [B_1 … B_T]"),
    "stable_rank_A_stack": ("factors", "stable rank of [A_1; …; A_T]"),
    "o_max_B": ("factors", "Pico: largest component energy σ_1²/Σσ² of [B_1 … B_T]"),
    "o_max_A": ("factors", "largest component energy of [A_1; …; A_T]"),
    "cur_k": ("ΔW", "subspace dimension k of the SVD-vs-CUR comparison"),
    "cur_misalignment": ("ΔW", "SVD vs CUR misalignment in [0, 1] (reconstructed)"),
    "cur_misalignment_left": ("ΔW", "1 − ‖U_kᵀ Q_C‖²/k, column side (reconstructed)"),
    "cur_misalignment_right": ("ΔW", "same on the row side (reconstructed)"),
    "svd_energy_k": ("ΔW", "energy of Σ_t ΔW_t in its top-k left singular subspace"),
    "cur_energy_k": ("ΔW", "energy of Σ_t ΔW_t in the span of the k CUR columns"),
    "sign_conflict_rate": (
        "ΔW, element-wise",
        "TIES sign conflicts among active entries (an ESTIMATE from sampled entries unless "
        "sign_method is 'exact')",
    ),
    "sign_conflict_rate_low": ("ΔW, element-wise", "lower confidence bound of sign_conflict_rate"),
    "sign_conflict_rate_high": ("ΔW, element-wise", "upper confidence bound of sign_conflict_rate"),
    "sign_conflict_rate_trimmed": (
        "ΔW, element-wise",
        "sign conflicts after trimming each task to its top sign_density magnitudes (an ESTIMATE "
        "with thresholds from the sample unless sign_method is 'exact')",
    ),
    "sign_conflict_rate_trimmed_low": (
        "ΔW, element-wise",
        "lower confidence bound of sign_conflict_rate_trimmed",
    ),
    "sign_conflict_rate_trimmed_high": (
        "ΔW, element-wise",
        "upper confidence bound of sign_conflict_rate_trimmed",
    ),
}
SIGN_COLUMNS = tuple(c for c in COLUMNS if c.startswith("sign_conflict"))
ID_COLUMNS = ("module", "layer", "d_out", "d_in", "num_tasks", "rank_sum")


@dataclass(frozen=True)
class ModuleGeometry:
    """Per-module vectors and matrices behind the flat row (plain Python, JSON-able).

    Attributes:
        task_sigma: per task, σ of ΔW_t (descending). ta_sigma: σ of Σ_t ΔW_t.
        B_sigma, A_sigma: σ of the factor stacks. O_B, O_A: ``T × T`` overlap matrices.
        left_angles, right_angles: SVD-vs-CUR principal angles in degrees, ascending.
        cur_columns, cur_rows: the CUR selection (column indices in ``d_in``, rows in ``d_out``).
    """

    task_sigma: tuple[tuple[float, ...], ...]
    ta_sigma: tuple[float, ...]
    B_sigma: tuple[float, ...]
    A_sigma: tuple[float, ...]
    O_B: tuple[tuple[float, ...], ...]
    O_A: tuple[tuple[float, ...], ...]
    left_angles: tuple[float, ...]
    right_angles: tuple[float, ...]
    cur_columns: tuple[int, ...]
    cur_rows: tuple[int, ...]


@dataclass(frozen=True)
class GeometryReport:
    """Result of :func:`analyse_geometry`.

    Attributes:
        adapter_names: task order. k: requested SVD-vs-CUR dimension (None = per-module max rank).
        sign_conflicts: whether the sign-conflict columns were computed (else ``None``).
        sign_density: trim density of ``sign_conflict_rate_trimmed``.
        per_module: one flat dict per module (see module docstring). per_layer: layer means.
        details: module -> :class:`ModuleGeometry`. notes: provenance labels for the app.
        sign_method: ``"sampled"`` (estimates with intervals, the default), ``"exact"`` (dense
            pass; bounds equal the rate) or ``"off"``.
        sign_samples: entries sampled per module (sampled route). sign_confidence: interval level.
        per_task: one row per (module, task): ``module``, ``layer``, ``task`` and
            :data:`TASK_METRICS` of that adapter's ΔW. per_task_layer: the same per (layer, task),
            means over the layer's modules.
    """

    adapter_names: tuple[str, ...]
    k: int | None
    sign_conflicts: bool
    sign_density: float
    per_module: list[dict[str, Any]]
    per_layer: list[dict[str, Any]]
    details: Mapping[str, ModuleGeometry] = field(repr=False)
    notes: tuple[str, ...] = ()
    sign_method: str = "sampled"
    sign_samples: int | None = None
    sign_confidence: float | None = None
    per_task: list[dict[str, Any]] = field(default_factory=list, repr=False)
    per_task_layer: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def modules(self) -> list[str]:
        return [row["module"] for row in self.per_module]

    def _detail(self, module: str) -> ModuleGeometry:
        try:
            return self.details[module]
        except KeyError:
            raise KeyError(
                f"no geometry for module {module!r}; analysed {len(self.details)} modules, "
                f"e.g. {list(self.details)[:3]}"
            ) from None

    def spectra(self, module: str) -> dict[str, Any]:
        """σ per task (``{"tasks": {name: [σ…]}}``), of the TA sum and of the B/A stacks."""
        d = self._detail(module)
        return {
            "tasks": {n: list(s) for n, s in zip(self.adapter_names, d.task_sigma, strict=True)},
            "ta_sum": list(d.ta_sigma),
            "B_stack": list(d.B_sigma),
            "A_stack": list(d.A_sigma),
        }

    def energy_curves(self, module: str) -> dict[str, Any]:
        """Cumulative energy ``Σ_{i≤k} σ_i²/Σσ²`` for every spectrum of :meth:`spectra`."""

        def curve(s: list[float]) -> list[float]:
            return energy_curve(torch.tensor(s, dtype=torch.float64)).tolist()

        sp = self.spectra(module)
        out = {key: curve(sp[key]) for key in ("ta_sum", "B_stack", "A_stack")}
        out["tasks"] = {n: curve(s) for n, s in sp["tasks"].items()}
        return out

    def component_energies(self, module: str) -> dict[str, list[float]]:
        """Pico's component energies ``e_j = σ_j²/Σσ²`` of the B and A stacks (descending)."""
        d = self._detail(module)
        return {
            side: component_energy(torch.tensor(s, dtype=torch.float64)).tolist()
            for side, s in (("B", d.B_sigma), ("A", d.A_sigma))
        }

    def overlaps(self, module: str) -> dict[str, list[list[float]]]:
        """Pico's ``T × T`` overlap matrices ``{"B": O_B, "A": O_A}`` (task order = adapters)."""
        d = self._detail(module)
        return {"B": [list(r) for r in d.O_B], "A": [list(r) for r in d.O_A]}

    def principal_angles(self, module: str) -> dict[str, list[float]]:
        """SVD-vs-CUR principal angles in degrees ``{"left": […], "right": […]}``."""
        d = self._detail(module)
        return {"left": list(d.left_angles), "right": list(d.right_angles)}

    def task_layer_matrix(self, metric: str = "erank") -> dict[str, Any]:
        """Adapters × layers matrix of a per-task metric (the app's heatmap data).

        Args:
            metric: one of :data:`TASK_METRICS` (``"erank"``, ``"stable_rank"``, ``"norm"``).

        Returns:
            ``{"tasks": [...], "layers": [...], "values": [[...] per task]}``; each value is the
            mean of the metric over the layer's modules.
        """
        return task_layer_matrix(self.per_task_layer, self.adapter_names, metric)

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        """JSON-able dict (rows, column docs, notes; per-module vectors if ``details``)."""
        out: dict[str, Any] = {
            "adapters": list(self.adapter_names),
            "k": self.k,
            "sign_conflicts": self.sign_conflicts,
            "sign_density": self.sign_density,
            "sign_method": self.sign_method,
            "sign_samples": self.sign_samples,
            "sign_confidence": self.sign_confidence,
            "notes": list(self.notes),
            "columns": {c: {"space": s, "description": d} for c, (s, d) in COLUMNS.items()},
            "task_metrics": {c: {"space": "ΔW", "description": d} for c, d in TASK_METRICS.items()},
            "per_module": self.per_module,
            "per_layer": self.per_layer,
            "per_task": self.per_task,
            "per_task_layer": self.per_task_layer,
        }
        if details:
            out["details"] = {m: _detail_dict(d) for m, d in self.details.items()}
        return out


def _detail_dict(d: ModuleGeometry) -> dict[str, Any]:
    return {k: getattr(d, k) for k in ModuleGeometry.__dataclass_fields__}


def analyse_geometry(
    adapter_set: AdapterSet,
    *,
    k: int | None = None,
    sign_conflicts: bool = True,
    sign_density: float = 0.2,
    sign_exact: bool = False,
    sign_samples: int = DEFAULT_SAMPLES,
    sign_confidence: float = 0.95,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> GeometryReport:
    """Spectra, coverage stacks, crowding, SVD-vs-CUR and sign conflicts for every module.

    Args:
        adapter_set: aligned adapters (task order = set order); only ``adapter_set.modules``.
        k: SVD-vs-CUR subspace dimension; None = each module's largest task rank.
        sign_conflicts: compute the element-wise sign-conflict columns (when False they are
            ``None``).
        sign_density: TIES trim density for ``sign_conflict_rate_trimmed``, in ``(0, 1]``.
        sign_exact: count every entry (forms each dense ``ΔW_t``, one module at a time: minutes
            on LLM adapters) instead of estimating from ``sign_samples`` sampled entries per
            module (:mod:`merging_core.geometry.sampled_conflicts`; modules with at most that
            many entries are counted exactly anyway).
        sign_samples: entries sampled per module. sign_confidence: interval level in ``(0, 1)``.
        generator: source of the sampled positions (None: a generator seeded with 0, so the
            same adapters give the same report).
        progress: optional ``callback(fraction, message)``.

    Returns:
        A :class:`GeometryReport`.

    Raises:
        ValueError: ``k < 1``, ``sign_density`` outside ``(0, 1]``, or a bad sampling option.
    """
    if k is not None and int(k) < 1:
        raise ValueError(f"k must be >= 1 or None, got {k}")
    if not 0.0 < sign_density <= 1.0:
        raise ValueError(f"sign_density must be in (0, 1], got {sign_density}")
    names = list(adapter_set.modules)
    share = (0.5 if sign_exact else 0.8) if sign_conflicts else 1.0
    rows, details, per_task = _factor_rows(adapter_set, names, k, progress, share)
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    for i, name in enumerate(names):
        rows[name].update(dict.fromkeys(SIGN_COLUMNS))
        if not sign_conflicts:
            continue
        mods = adapter_set.factors(name)
        estimates = _sign_estimates(
            [m.B for m in mods],
            [m.A for m in mods],
            density=sign_density,
            exact=sign_exact,
            samples=sign_samples,
            confidence=sign_confidence,
            generator=gen,
        )
        for prefix, est in zip(_SIGN_RATES, estimates, strict=True):
            rows[name].update(
                {prefix: est.rate, f"{prefix}_low": est.low, f"{prefix}_high": est.high}
            )
        report_progress(progress, share + (1 - share) * (i + 1) / len(names), f"signs {name}")
    per_module = [rows[n] for n in names]
    method = ("exact" if sign_exact else "sampled") if sign_conflicts else "off"
    sampled = method == "sampled"
    per_task_rows = [r for n in names for r in per_task[n]]
    return GeometryReport(
        adapter_names=tuple(adapter_set.names),
        k=None if k is None else int(k),
        sign_conflicts=bool(sign_conflicts),
        sign_density=float(sign_density),
        per_module=per_module,
        per_layer=layer_rows(per_module),
        details={n: details[n] for n in names},
        notes=(CUR_LABEL, _COVERAGE_NOTE)
        + ((_sign_note(sign_samples, sign_confidence),) if sampled else ()),
        sign_method=method,
        sign_samples=int(sign_samples) if sampled else None,
        sign_confidence=float(sign_confidence) if sampled else None,
        per_task=per_task_rows,
        per_task_layer=task_layer_rows(per_task_rows, adapter_set.names),
    )


_SIGN_RATES = ("sign_conflict_rate", "sign_conflict_rate_trimmed")


def _sign_estimates(
    Bs: list[torch.Tensor],
    As: list[torch.Tensor],
    *,
    density: float,
    exact: bool,
    samples: int,
    confidence: float,
    generator: torch.Generator,
) -> tuple[ConflictEstimate, ...]:
    """Raw and trimmed rates of one module: exact dense pass, or sampled estimates."""
    if not exact:
        return estimate_sign_conflicts(
            Bs,
            As,
            densities=(1.0, density),
            samples=samples,
            confidence=confidence,
            generator=generator,
        )
    rates = sign_conflict_rates(Bs, As, densities=(1.0, density))
    m, n = int(Bs[0].shape[0]), int(As[0].shape[1])
    return tuple(ConflictEstimate(r, r, r, m * n, -1, exact=True) for r in rates)


def _sign_note(samples: int, confidence: float) -> str:
    return (
        f"Sign conflicts are ESTIMATES from {int(samples):,} sampled entries per module "
        f"({100 * confidence:g}% intervals in *_low / *_high; per-layer bounds are means of the "
        "module bounds); modules with fewer entries are counted exactly. Exact dense pass: "
        "sign_exact=True (CLI --sign-exact)."
    )


_COVERAGE_NOTE = (
    "Coverage stacks: TARA's three-stack comparison as reconstructed (exact vectorisation and "
    "normalisation unpublished); rank-1-stack columns depend on the factorisation by design."
)


def _group_modules(adapter_set: AdapterSet, names: list[str]) -> dict[tuple, list[str]]:
    """Modules keyed by ``(d_out, d_in, ranks)`` so that each group can be batched."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        mods = adapter_set.factors(name)
        key = (mods[0].B.shape[0], mods[0].A.shape[1], tuple(m.rank for m in mods))
        groups.setdefault(key, []).append(name)
    return groups


def _factor_rows(
    adapter_set: AdapterSet,
    names: list[str],
    k: int | None,
    progress: Progress | None,
    share: float,
) -> tuple[dict[str, dict[str, Any]], dict[str, ModuleGeometry], dict[str, list[dict]]]:
    rows: dict[str, dict[str, Any]] = {}
    details: dict[str, ModuleGeometry] = {}
    per_task: dict[str, list[dict[str, Any]]] = {}
    done = 0
    for (m, n, ranks), group in _group_modules(adapter_set, names).items():
        per_chunk = max(1, CHUNK_ELEMENTS // ((m + n) * max(1, sum(ranks))))
        for start in range(0, len(group), per_chunk):
            chunk = group[start : start + per_chunk]
            factors = [adapter_set.factors(name) for name in chunk]
            batch = build_batch(
                [[f.B for f in fs] for fs in factors], [[f.A for f in fs] for fs in factors]
            )
            k_mod = max(ranks) if k is None else int(k)
            out = _analyse_batch(batch, k_mod, chunk, factors, adapter_set.names)
            for name, row, det, tasks in out:
                rows[name], details[name], per_task[name] = row, det, tasks
            done += len(chunk)
            report_progress(progress, share * done / len(names), f"geometry {chunk[-1]}")
    return rows, details, per_task


def _analyse_batch(
    batch: ModuleBatch,
    k: int,
    names: list[str],
    factors: list[list[LoraModule]],
    tasks: list[str],
) -> list[tuple[str, dict[str, Any], ModuleGeometry, list[dict[str, Any]]]]:
    """Rows, details and per-task rows for one batch of same-shaped modules."""
    sigmas = [clean_spectrum(s) for s in task_sigmas(batch)]  # per task (G, r_t)
    core = sum_svd(batch)
    ta = clean_spectrum(core.S)
    stacks = task_metric_stacks(sigmas)  # (T, G) per metric
    scalars = _spectral_scalars(stacks, ta)
    scalars.update(coverage_from_batch(batch, sigmas=sigmas, ta_sigma=ta))
    crowd, cx = crowding_from_batch(batch)
    cur, ux = cur_from_batch(batch, core, k)
    scalars.update(crowd)
    scalars.update(cur)
    out = []
    for g, name in enumerate(names):
        row = _id_columns(name, factors[g], batch)
        row.update({c: float(scalars[c][g]) for c in COLUMNS if c in scalars})
        row["cur_k"] = int(row["cur_k"])
        det = ModuleGeometry(
            task_sigma=tuple(_vec(s[g]) for s in sigmas),
            ta_sigma=_vec(ta[g]),
            B_sigma=_vec(cx["sigma_B"][g]),
            A_sigma=_vec(cx["sigma_A"][g]),
            O_B=tuple(_vec(r) for r in cx["O_B"][g]),
            O_A=tuple(_vec(r) for r in cx["O_A"][g]),
            left_angles=angles_degrees(ux["cos_left"][g], int(ux["n_left"][g])),
            right_angles=angles_degrees(ux["cos_right"][g], int(ux["n_right"][g])),
            cur_columns=tuple(int(j) for j in ux["columns"][g, : row["cur_k"]]),
            cur_rows=tuple(int(i) for i in ux["rows"][g, : row["cur_k"]]),
        )
        out.append((name, row, det, task_rows(name, row["layer"], tasks, stacks, g)))
    return out


def _spectral_scalars(stacks: dict[str, torch.Tensor], ta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task means and TA-sum scalars, each ``(G,)`` (``stacks`` are ``(T, G)``)."""
    return {
        "erank_task_mean": stacks["erank"].mean(dim=0),
        "stable_rank_task_mean": stacks["stable_rank"].mean(dim=0),
        "norm_task_mean": stacks["norm"].mean(dim=0),
        "erank_ta": effective_rank(ta),
        "stable_rank_ta": stable_rank(ta),
        "norm_ta": ta.norm(dim=-1),
    }


def _id_columns(name: str, mods: list[LoraModule], batch: ModuleBatch) -> dict[str, Any]:
    return {
        "module": name,
        "layer": layer_key(name),
        "d_out": int(mods[0].B.shape[0]),
        "d_in": int(mods[0].A.shape[1]),
        "num_tasks": len(mods),
        "rank_sum": int(batch.edges[-1]),
    }


def _vec(x: torch.Tensor) -> tuple[float, ...]:
    return tuple(x.tolist())  # float64 tensor -> Python floats


def layer_rows(per_module: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-layer means of every metric column (``None`` if a column is missing in the layer)."""
    layers: dict[str, list[dict[str, Any]]] = {}
    for row in per_module:
        layers.setdefault(row["layer"], []).append(row)
    out = []
    for layer, rows in layers.items():
        agg: dict[str, Any] = {"layer": layer, "num_modules": len(rows)}
        for col in COLUMNS:
            vals = [r.get(col) for r in rows]
            agg[col] = None if any(v is None for v in vals) else sum(vals) / len(vals)
        out.append(agg)
    return out
