"""Merge methods: importing this package registers every method (one import line per method)."""

from merging_core.methods import task_arithmetic  # noqa: F401
from merging_core.methods.registry import (
    MethodInfo,
    Param,
    available_methods,
    get_method,
    register_method,
)

__all__ = ["MethodInfo", "Param", "available_methods", "get_method", "register_method"]
