"""Method-facing options shared by several merge methods: per-adapter weights and the parameter
specs that TIES, DARE, KnOTS and Core Space share.

The algorithms behind them live outside the methods package, so that methods import them without
a cycle: element-wise steps and engines in :mod:`merging_core.elementwise` (``steps``,
``streaming``, ``fused``), spectral helpers in :mod:`merging_core.spectral`. No method file
imports another; they all may import this.
"""

from __future__ import annotations

from collections.abc import Sequence

from merging_core.elementwise.steps import SIGN_METHODS
from merging_core.elementwise.streaming import THRESHOLDS
from merging_core.methods.registry import Param


def adapter_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Per-adapter weights, all ones when None; ``ValueError`` if the length is wrong."""
    if weights is None:
        return [1.0] * count
    if len(weights) != count:
        raise ValueError(f"weights has {len(weights)} entries but there are {count} adapters")
    return [float(w) for w in weights]


SCALING = Param(
    "scaling",
    "float",
    1.0,
    low=-2.0,
    high=4.0,
    step=0.05,
    help="λ applied to the merged update (the TIES paper searches 0.8–2.5).",
)
WEIGHTS = Param(
    "weights",
    "weights",
    None,
    low=-4.0,
    high=4.0,
    help="Optional per-adapter weights w_t, applied after the sign election (default: all 1).",
)
THRESHOLD = Param(
    "threshold",
    "choice",
    "global",
    choices=THRESHOLDS,
    help="Trim over all of a task's modules at once (official) or module by module (PEFT).",
)
SIGN_METHOD = Param(
    "sign_method",
    "choice",
    "total",
    choices=SIGN_METHODS,
    help="Elect the sign of the summed values (official 'mass') or of the summed signs.",
)
DENSITY = Param(
    "density",
    "float",
    0.2,
    low=0.01,
    high=1.0,
    step=0.01,
    help="k: fraction of each task's largest-magnitude entries kept (TIES paper default 0.2).",
)
DROP_RATE = Param(
    "drop_rate",
    "float",
    0.9,
    low=0.0,
    high=0.99,
    step=0.01,
    help="p: probability of dropping each entry (0.9 typical for LLM deltas; KnOTS used 0.1–0.2).",
)
