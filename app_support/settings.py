"""Moving merge settings into the Merge page's widgets (from a trade-off click or a recipe).

A page that wants the Merge page to open on given settings stores them under
``state.PENDING_SETTINGS``; the Merge page calls :func:`apply_pending_settings` before drawing its
widgets, which writes each value into its widget key (snapped onto the widget's grid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from app_support import state
from app_support.widgets import is_simplex, log_grid
from merging_core.methods.registry import MethodInfo, get_method


def request_settings(method: str, params: Mapping[str, Any], *, seed: int = 0) -> None:
    """Ask the Merge page to open on ``method`` with ``params`` (applied on its next run)."""
    st.session_state[state.PENDING_SETTINGS] = {
        "method": method,
        "params": dict(params),
        "seed": int(seed),
    }


def apply_pending_settings(adapter_names: Sequence[str]) -> str | None:
    """Write pending settings into the widget keys; returns the method name applied, if any.

    Raises:
        KeyError: the pending method is not registered.
    """
    pending = st.session_state.get(state.PENDING_SETTINGS)
    if not pending:
        return None
    st.session_state[state.PENDING_SETTINGS] = None
    info = get_method(pending["method"])
    st.session_state[state.METHOD] = info.name
    st.session_state[state.SEED] = int(pending.get("seed", 0))
    for key, value in widget_values(info, pending["params"], adapter_names).items():
        st.session_state[key] = value
    return info.name


def widget_values(
    info: MethodInfo, params: Mapping[str, Any], adapter_names: Sequence[str]
) -> dict[str, Any]:
    """Widget key -> value for ``params`` (weights spread over one key per adapter)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        param = info.param(name)
        if param.kind == "weights":
            count = len(adapter_names)
            filler = 1.0 / count if is_simplex(info, param) else 1.0
            values = list(value) if value is not None else [filler] * count
            for i, v in enumerate(values[:count]):
                out[state.param_key(info.name, name, i)] = float(v)
        elif param.kind == "float" and param.log and param.low and param.high:
            grid = log_grid(param.low, param.high)
            out[state.param_key(info.name, name)] = min(
                grid, key=lambda g, v=float(value): abs(math.log(g) - math.log(v))
            )
        else:
            out[state.param_key(info.name, name)] = value
    return out
