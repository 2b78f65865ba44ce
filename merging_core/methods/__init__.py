"""Merge methods: importing this package registers every method (one import line per method)."""

from merging_core.methods import (
    adamerging,  # noqa: F401  (adamerging_task, adamerging_layer)
    cat,  # noqa: F401
    dare,  # noqa: F401
    iso_c,  # noqa: F401  (registers iso_c, iso_cts)
    knots,  # noqa: F401
    pico,  # noqa: F401
    svd_cur,  # noqa: F401
    tara,  # noqa: F401  (registers tara_a, tara_b)
    task_arithmetic,  # noqa: F401
    ties,  # noqa: F401
    tsv_m,  # noqa: F401
)
from merging_core.methods.registry import (
    MethodInfo,
    Param,
    available_methods,
    get_method,
    register_method,
)

__all__ = ["MethodInfo", "Param", "available_methods", "get_method", "register_method"]
