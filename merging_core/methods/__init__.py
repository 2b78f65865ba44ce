"""Merge methods: importing this package registers every method (one import line per method)."""

from merging_core.methods import task_arithmetic  # noqa: F401
from merging_core.methods import ties  # noqa: F401
from merging_core.methods import dare  # noqa: F401
from merging_core.methods import cat  # noqa: F401
from merging_core.methods import knots  # noqa: F401
from merging_core.methods import tara  # noqa: F401  (registers tara_a, tara_b)
from merging_core.methods import adamerging  # noqa: F401  (adamerging_task, adamerging_layer)
from merging_core.methods import tsv_m  # noqa: F401
from merging_core.methods import iso_c  # noqa: F401  (registers iso_c, iso_cts)
from merging_core.methods import pico  # noqa: F401
from merging_core.methods import svd_cur  # noqa: F401
from merging_core.methods import core_space  # noqa: F401
from merging_core.methods import lora_lego  # noqa: F401
from merging_core.methods import nsc  # noqa: F401
from merging_core.methods.registry import (
    MethodInfo,
    Param,
    available_methods,
    get_method,
    register_method,
)

__all__ = ["MethodInfo", "Param", "available_methods", "get_method", "register_method"]
