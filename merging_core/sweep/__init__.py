"""Sweeps and searches: many merges from one spec, on local workers or a Ray cluster, resumable.

* :mod:`~merging_core.sweep.spec` parses a spec and plans point recipes (key = recipe hash);
  :mod:`~merging_core.sweep.grids` expands its axes (ranges, ρ lines, simplex grids, Dirichlet).
* :mod:`~merging_core.sweep.runner` runs the missing points with an executor
  (:mod:`~merging_core.sweep.executors`: serial, local process pool;
  :mod:`~merging_core.sweep.ray_executor`: Ray actors) on resident
  :class:`~merging_core.sweep.worker.Worker` s, writing ``DIR/points/<key>.json`` atomically.
* :mod:`~merging_core.sweep.collect` builds the table, Pareto front and plots from the files.
* :mod:`~merging_core.sweep.search` tunes parameters with Optuna (SQLite storage in the folder).
* :mod:`~merging_core.sweep.history` indexes point files (SQLite) as a run history.
"""

from merging_core.sweep.runner import SweepProgress, SweepSummary, run_sweep
from merging_core.sweep.spec import SweepSpec, parse_spec, plan_points, point_key, read_spec_text

__all__ = [
    "SweepProgress",
    "SweepSpec",
    "SweepSummary",
    "parse_spec",
    "plan_points",
    "point_key",
    "read_spec_text",
    "run_sweep",
]
