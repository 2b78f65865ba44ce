"""Widgets generated from a method's parameter spec (``merging_core.methods.registry.Param``).

One builder per parameter *kind*, never per method: a new registered method gets its widgets for
free. Widget keys come from :func:`app_support.state.param_key` and are bound to the URL's query
parameters, so the Merge page's settings can be shared as a link.

A ``weights`` parameter is shown as one slider per adapter, keyed by the adapter's name (a
value follows its adapter through selection changes, the URL and the recipe). It is kept on the
probability simplex (moving one slider rescales the others) when the method tags it
``simplex:<name>`` or the parameter is called ``rho``/``preference`` (a task-preference vector).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import streamlit as st

from app_support import state
from app_support.state import param_key
from merging_core.methods.registry import MethodInfo, Param

SIMPLEX_NAMES = ("rho", "preference")
LOG_GRID_POINTS = 41
SLIDERS_PER_ROW = 4
METHOD_QUERY = state.METHOD  # query parameter that carries the method id
WIDE_INT_RANGE = 1000  # int parameters with a wider range get a 1-2-5 ladder, not a linear slider


def is_simplex(info: MethodInfo, param: Param) -> bool:
    """True when ``param`` is a preference vector that must sum to one."""
    return param.kind == "weights" and (
        f"simplex:{param.name}" in info.tags or param.name in SIMPLEX_NAMES
    )


def method_widgets(info: MethodInfo, adapter_names: Sequence[str]) -> dict[str, Any]:
    """Draw every parameter's widget; returns ``{param name: value}`` ready for ``merge``."""
    values: dict[str, Any] = {}
    for param in info.params:
        if param.kind == "weights":
            values[param.name] = weights_widget(info, param, adapter_names)
        else:
            values[param.name] = scalar_widget(info.name, param)
    return values


def _initial(key: str, value: Any) -> dict[str, Any]:
    # Pass a default only on first creation: a value already in session state (a loaded
    # setting, a URL parameter) must win without Streamlit's "set twice" warning.
    return {} if key in st.session_state else {"value": value}


def scalar_widget(method: str, param: Param) -> Any:
    """One float/int/bool/choice widget for ``param``, labelled with its name and help."""
    key = param_key(method, param.name)
    label = param.name.replace("_", " ")
    common = {"key": key, "help": param.help or None, "bind": "query-params"}
    if param.kind == "bool":
        return st.toggle(label, **_initial(key, bool(param.default)), **common)
    if param.kind == "choice":
        options = list(param.choices)
        index = options.index(param.default) if key not in st.session_state else None
        extra = {} if index is None else {"index": index}
        return st.selectbox(label, options, **extra, **common)
    if param.log and param.low is not None and param.high is not None and param.low > 0:
        grid = param_grid(param)
        return st.select_slider(
            f"{label} (log scale)", grid, format_func=_fmt, **_initial(key, param.default),
            **common,
        )  # fmt: skip
    return _number_widget(param, label, key, common)


def _number_widget(param: Param, label: str, key: str, common: dict[str, Any]) -> float | int:
    if (
        param.kind == "int"
        and param.low is not None
        and param.high is not None
        and (param.high - param.low > WIDE_INT_RANGE)
    ):  # e.g. optimisation steps 0 … 5000: a linear slider hides the useful small values
        grid = count_grid(int(param.low), int(param.high), int(param.default))
        return st.select_slider(label, grid, **_initial(key, int(param.default)), **common)
    cast = int if param.kind == "int" else float
    step = param.step or (1 if param.kind == "int" else (param.high or 1.0) - (param.low or 0.0))
    step = step if param.step or param.kind == "int" else step / 100
    too_fine = param.kind == "float" and param.default != 0 and abs(param.default) < step
    if param.low is None or param.high is None or too_fine:
        bounds = {
            k: cast(v)
            for k, v in (("min_value", param.low), ("max_value", param.high))
            if v is not None
        }
        fmt = {"format": "%.3g"} if param.kind == "float" else {}
        return st.number_input(
            label, **bounds, **fmt, **_initial(key, cast(param.default)), **common
        )
    return st.slider(
        label,
        min_value=cast(param.low),
        max_value=cast(param.high),
        step=cast(step),
        **_initial(key, cast(param.default)),
        **common,
    )


def log_grid(low: float, high: float, points: int = LOG_GRID_POINTS) -> list[float]:
    """``points`` values evenly spaced in log between ``low`` and ``high``, 3 significant digits.

    Raises:
        ValueError: ``low`` is not positive or not below ``high``.
    """
    if not 0 < low < high:
        raise ValueError(f"a log grid needs 0 < low < high, got low={low}, high={high}")
    step = (math.log10(high) - math.log10(low)) / (points - 1)
    return sorted({float(f"{10 ** (math.log10(low) + i * step):.3g}") for i in range(points)})


def count_grid(low: int, high: int, default: int) -> list[int]:
    """Whole numbers on a 1-2-5 ladder from ``low`` to ``high``, plus the default itself."""
    values = {low, high, default}
    decade = 1
    while decade <= high:
        values.update(v for v in (decade, 2 * decade, 5 * decade) if low <= v <= high)
        decade *= 10
    return sorted(values)


def param_grid(param: Param) -> list[float]:
    """The log grid of a ``log`` parameter, with the library's default on it exactly.

    (Snapping the default to the nearest grid value would make the app's default differ from the
    library's and the CLI's, e.g. 3.16 instead of 3.0.)
    """
    grid = set(log_grid(float(param.low), float(param.high)))
    if param.default is not None and param.low <= param.default <= param.high:
        grid.add(float(param.default))
    return sorted(grid)


def snap(grid: Sequence[float], value: float) -> float:
    """The grid value nearest to ``value`` in log distance."""
    return min(grid, key=lambda g: abs(math.log(g) - math.log(value)))


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def weights_widget(
    info: MethodInfo, param: Param, names: Sequence[str]
) -> tuple[float, ...] | None:
    """One slider per adapter (keyed by its name); None when free weights are all at 1."""
    simplex = is_simplex(info, param)
    defaults = _weight_defaults(param, len(names), simplex)
    keys = [param_key(info.name, param.name, name) for name in names]
    if simplex:
        return simplex_sliders("preference ρ (sums to 1)", names, keys, defaults, param.help)
    low = param.low if param.low is not None else -2.0
    high = param.high if param.high is not None else 2.0
    st.markdown(f"**{param.name.replace('_', ' ')} per adapter**", help=param.help or None)
    values = slider_grid(names, keys, defaults, low=low, high=high)
    return None if param.default is None and all(v == 1.0 for v in values) else tuple(values)


def simplex_sliders(
    title: str,
    names: Sequence[str],
    keys: Sequence[str],
    defaults: Sequence[float] | None = None,
    help_text: str = "",
) -> tuple[float, ...]:
    """One [0, 1] slider per name, kept summing to one; returns the (normalised) vector."""
    defaults = defaults or [1.0 / len(names)] * len(names)
    _renormalise_kept(keys)
    st.markdown(f"**{title}**", help=help_text or None)
    values = slider_grid(names, keys, defaults, low=0.0, high=1.0, on_change=_rebalance)
    return tuple(normalise(values))


def slider_grid(
    names: Sequence[str],
    keys: Sequence[str],
    defaults: Sequence[float],
    *,
    low: float,
    high: float,
    on_change: Any = "rerun",
) -> list[float]:
    """Sliders in rows of ``SLIDERS_PER_ROW``, bound to the URL; a callback gets (keys, index)."""
    values = []
    for row in range(0, len(names), SLIDERS_PER_ROW):
        cols = st.columns(SLIDERS_PER_ROW)
        for col, i in zip(cols, range(row, min(row + SLIDERS_PER_ROW, len(names))), strict=False):
            extra = {} if on_change == "rerun" else {"args": (list(keys), i)}
            with col:
                values.append(st.slider(
                    names[i], min_value=float(low), max_value=float(high), step=0.01,
                    key=keys[i], bind="query-params", **_initial(keys[i], defaults[i]),
                    on_change=on_change, **extra,
                ))  # fmt: skip
    return values


def _renormalise_kept(keys: Sequence[str]) -> None:
    """After the adapter selection changed, put the kept values back on the simplex.

    Values are kept by adapter name; a newcomer gets an equal share of the total first.
    """
    kept = [float(st.session_state[k]) for k in keys if k in st.session_state]
    if not kept:
        return
    share = 1.0 / len(keys)
    for k in keys:
        st.session_state.setdefault(k, share)
    values = [float(st.session_state[k]) for k in keys]
    if abs(sum(values) - 1.0) > 1e-3:
        for k, v in zip(keys, normalise(values), strict=True):
            st.session_state[k] = round(v, 4)


def _weight_defaults(param: Param, count: int, simplex: bool) -> list[float]:
    if param.default is not None and len(param.default) == count:
        return [float(v) for v in param.default]
    return [1.0 / count] * count if simplex else [1.0] * count


def normalise(values: Sequence[float]) -> list[float]:
    """Scale non-negative ``values`` to sum to one (uniform when they are all zero)."""
    total = sum(values)
    if total <= 0:
        return [1.0 / len(values)] * len(values)
    return [v / total for v in values]


def rebalanced(values: Sequence[float], moved: int) -> list[float]:
    """Keep ``values[moved]`` and rescale the others so that the whole vector sums to one."""
    target = min(max(values[moved], 0.0), 1.0)
    others = [i for i in range(len(values)) if i != moved]
    rest = sum(values[i] for i in others)
    out = list(values)
    for i in others:
        share = values[i] / rest if rest > 0 else 1.0 / len(others)
        out[i] = round(share * (1.0 - target), 4)
    out[moved] = target
    return out


def _rebalance(keys: Sequence[str], moved: int) -> None:
    values = [float(st.session_state[k]) for k in keys]
    if len(values) < 2:
        st.session_state[keys[0]] = 1.0
        return
    for key, value in zip(keys, rebalanced(values, moved), strict=True):
        st.session_state[key] = value


def method_from_url(methods: dict[str, MethodInfo]) -> str:
    """The method selectbox; the URL carries the method's id (``?merge.method=ties``).

    The box shows display names; binding it to the URL directly would put the display name in
    shared links, so the id is read from and written to the query string here.
    """
    wanted = st.query_params.get(METHOD_QUERY)
    if wanted in methods and state.METHOD not in st.session_state:
        st.session_state[state.METHOD] = wanted
    method = st.selectbox(
        "Merge method", list(methods), format_func=lambda n: methods[n].pretty_name,
        key=state.METHOD,
    )  # fmt: skip
    if st.query_params.get(METHOD_QUERY) != method:
        st.query_params[METHOD_QUERY] = method
    return method


def uses_seed(info: MethodInfo) -> bool:
    """False for methods registered as deterministic (they ignore the generator)."""
    return "deterministic" not in info.tags


def seed_widget(info: MethodInfo) -> int:
    """The seed box for methods that draw random numbers; 0 (unused) for the others."""
    if not uses_seed(info):
        return 0
    return int(st.number_input(
        "seed", min_value=0, step=1, key=state.SEED, bind="query-params",
        help="Seeds the random draws (batches, masks, sampled columns): same seed, same merge.",
    ))  # fmt: skip
