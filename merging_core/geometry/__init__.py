"""Merge geometry in factor space: spectra, coverage stacks, crowding, SVD vs CUR, sign conflicts.

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
from merging_core.geometry.spectra import (
    ZERO_RTOL,
    component_energy,
    effective_rank,
    energy_curve,
    singular_values,
    spectrum_summary,
    stable_rank,
)

__all__ = [
    "COLUMNS",
    "COVERAGE_KEYS",
    "CROWDING_KEYS",
    "CUR_KEYS",
    "CUR_LABEL",
    "ZERO_RTOL",
    "CurComparison",
    "GeometryReport",
    "ModuleGeometry",
    "analyse_geometry",
    "component_energy",
    "coverage_stacks",
    "crowding_metrics",
    "effective_rank",
    "energy_curve",
    "layer_rows",
    "overlap_matrices",
    "sign_conflict_rate",
    "sign_conflict_rates",
    "singular_values",
    "spectrum_summary",
    "stable_rank",
    "svd_vs_cur",
]
