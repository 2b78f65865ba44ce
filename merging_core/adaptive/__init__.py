"""The adaptive core shared by TARA, AdaMerging and sensitivity: learned per-direction weights.

* :mod:`.banks`: direction banks ``(B, A, fold)`` per module (TARA-A / TARA-B / AdaMerging).
* :mod:`.coefficients`: the learnable parameterisations (free φ, or λ tied per task / module).
* :mod:`.objective`: batches, entropies through a task-data source, anchors ``z_i``.
* :mod:`.loop`: the optimisation loop and the exact factored result.
* :mod:`.cache`: the bounded cache a caller may own (banks and anchors, keyed by content).
* :mod:`.common`: glue every data-driven method shares (device, seed, warm start, run record).

Everything reads data through :class:`merging_core.taskdata.TaskData` only.
"""
