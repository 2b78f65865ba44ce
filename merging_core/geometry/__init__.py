"""Merge geometry in factor space: spectra, coverage stacks, crowding, SVD vs CUR, sign conflicts.

Sign conflicts are estimated from sampled entries by default (with confidence intervals,
:mod:`merging_core.geometry.sampled_conflicts`); the exact dense count stays available.
Per-task effective rank, stable rank and norm of every adapter are in the report's ``per_task``
rows (:mod:`merging_core.geometry.task_metrics`).

Entry point: :func:`analyse_geometry` -> :class:`GeometryReport` (flat per-module / per-layer rows
plus per-module spectra, overlap matrices and principal angles). The single-module functions are
exported for notebooks and tests. Every docstring states whether a quantity lives in ΔW space
(invariant under ``(B M, M⁻¹ A)``) or depends on the factors by definition.
"""

from merging_core.geometry.conflicts import sign_conflict_rate, sign_conflict_rates
from merging_core.geometry.coverage import COVERAGE_KEYS, coverage_stacks
from merging_core.geometry.crowding import CROWDING_KEYS, crowding_metrics, overlap_matrices
from merging_core.geometry.cur import CUR_KEYS, CUR_LABEL, CurComparison, svd_vs_cur
from merging_core.geometry.report import (
    COLUMNS,
    GeometryReport,
    ModuleGeometry,
    analyse_geometry,
    layer_rows,
)
from merging_core.geometry.sampled_conflicts import (
    DEFAULT_SAMPLES,
    ConflictEstimate,
    estimate_sign_conflicts,
)
from merging_core.geometry.spectra import (
    ZERO_RTOL,
    component_energy,
    effective_rank,
    energy_curve,
    singular_values,
    spectrum_summary,
    stable_rank,
)
from merging_core.geometry.task_metrics import TASK_METRICS, task_layer_matrix

__all__ = [
    "COLUMNS",
    "COVERAGE_KEYS",
    "CROWDING_KEYS",
    "CUR_KEYS",
    "CUR_LABEL",
    "DEFAULT_SAMPLES",
    "TASK_METRICS",
    "ZERO_RTOL",
    "ConflictEstimate",
    "CurComparison",
    "GeometryReport",
    "ModuleGeometry",
    "analyse_geometry",
    "component_energy",
    "coverage_stacks",
    "crowding_metrics",
    "effective_rank",
    "energy_curve",
    "estimate_sign_conflicts",
    "layer_rows",
    "overlap_matrices",
    "sign_conflict_rate",
    "sign_conflict_rates",
    "singular_values",
    "spectrum_summary",
    "stable_rank",
    "svd_vs_cur",
    "task_layer_matrix",
]
