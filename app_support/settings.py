"""Moving merge settings into the Merge page's widgets (from a trade-off point or a recipe).

A page that wants the Merge page to open on given settings stores them under
``state.PENDING_SETTINGS``; the Merge page calls :func:`apply_pending_settings` before drawing its
widgets, which writes each value into its widget key (snapped onto the widget's grid).
Per-adapter values travel with the adapter names they belong to and land on those adapters'
sliders; adapters the settings do not name get the parameter's default (never a stale value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from app_support import state
from app_support.widgets import is_simplex, param_grid, snap
from merging_core.methods.registry import MethodInfo, get_method


def request_settings(
    method: str,
    params: Mapping[str, Any],
    *,
    adapters: Sequence[str],
    seed: int = 0,
    warm_start: Any = None,
    source: str = "",
) -> None:
    """Ask the Merge page to open on ``method`` with ``params`` over ``adapters`` (task order).

    Args:
        warm_start: learned state of a data-driven point (its φ / λ), reopened exactly.
        source: a few words for the toast ("a trade-off point", "recipe.json").
    """
    st.session_state[state.PENDING_SETTINGS] = {
        "method": method,
        "params": dict(params),
        "adapters": list(adapters),
        "seed": int(seed),
        "warm_start": warm_start,
        "source": source,
    }


def apply_pending_settings(adapter_names: Sequence[str]) -> dict[str, Any] | None:
    """Write pending settings into the widget keys; returns the pending settings applied, if any.

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
    names = pending.get("adapters") or list(adapter_names)
    for key, value in widget_values(info, pending["params"], names, adapter_names).items():
        st.session_state[key] = value
    return pending


def widget_values(
    info: MethodInfo,
    params: Mapping[str, Any],
    names: Sequence[str],
    shown: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Widget key -> value for ``params``.

    Raises:
        KeyError: a parameter the method does not have.

    Args:
        names: the adapters a ``weights`` list is aligned with (or a weights value may be a
            mapping name -> weight).
        shown: the adapters the Merge page shows (default ``names``); those without a value get
            the parameter's default.
    """
    unknown = sorted(set(params) - set(info.param_names))
    if unknown:
        raise KeyError(f"{info.name} has no parameter(s) {unknown}; it has {info.param_names}")
    shown = list(shown if shown is not None else names)
    out: dict[str, Any] = {}
    for param in info.params:
        if param.name not in params:
            continue
        value = params[param.name]
        key = state.param_key(info.name, param.name)
        if param.kind == "weights":
            out.update(_weight_values(info, param, value, names, shown))
        elif param.kind == "float" and param.log and param.low and param.high:
            out[key] = snap(param_grid(param), float(value))
        else:
            out[key] = value
    return out


def _weight_values(info, param, value, names, shown) -> dict[str, float]:
    by_name = dict(value) if isinstance(value, Mapping) else (
        dict(zip(names, value, strict=False)) if value is not None else {}
    )  # fmt: skip
    simplex = is_simplex(info, param)
    filler = 1.0 / len(shown) if simplex else 1.0
    values = {n: float(by_name.get(n, filler)) for n in shown}
    if simplex:
        total = sum(values.values()) or 1.0
        values = {n: round(v / total, 4) for n, v in values.items()}
    return {state.param_key(info.name, param.name, n): v for n, v in values.items()}
