"""Plotly figure builders for the app: plain data in, ``go.Figure`` out.

Pure functions: no Streamlit, no torch, no file access. Inputs are numbers, sequences and
mappings (numpy arrays are fine); every figure has a title and titled axes, keeps zoom across
reruns (``uirevision``), and renders a readable "nothing to show" note when given no data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go

FONT_SIZE = 14
HEATMAP_MAX_CELLS = 40_000  # beyond this heatmaps are block-averaged (websocket size, speed)
HEATMAP_MAX_ROWS = 200  # rows are only averaged beyond this many (tasks stay separate)
SERIES_COLORS = tuple(pc.qualitative.Plotly) + tuple(pc.qualitative.Dark24)  # 34 distinct
LEGEND_PER_ROW = 2  # legend entries per row assumed when sizing the band under the plot
LEGEND_ROW_PX = 26  # height of one legend row
SYMLOG_TICKS = 3  # colour-bar ticks per sign on a symmetric log scale
TITLE_WRAP = 56  # characters; a longer title's "(…)" tail moves to its subtitle
BASELINE_SYMBOLS = ("square", "diamond", "triangle-up", "cross", "x", "pentagon", "hexagon")


def _layout(fig: go.Figure, *, title: str, x_title: str, y_title: str, height: int) -> go.Figure:
    """Title top-left, legend in its own band at the bottom of the figure, under the axis title
    and tick labels (a top legend that wraps on a narrow screen grows into the title; one just
    under the axis collides with rotated tick labels). Long titles put their "(…)" in a subtitle."""
    named = sum(1 for trace in fig.data if trace.name and trace.showlegend is not False)
    rows = math.ceil(named / LEGEND_PER_ROW) if named > 1 else 0
    band = LEGEND_ROW_PX * rows
    head, sub = split_title(title)
    legend = {"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0.0,
              "xanchor": "left", "x": 0.0, "font": {"size": FONT_SIZE - 1}}  # fmt: skip
    fig.update_layout(
        title={
            "text": head,
            "subtitle": {"text": sub, "font": {"size": FONT_SIZE - 2}},
            "font": {"size": FONT_SIZE + 1},
            "x": 0.0,
            "xanchor": "left",
            "xref": "container",
            "yref": "paper",
            "y": 1.0,
            "yanchor": "bottom",
            "automargin": True,
            "pad": {"b": 26 if sub else 12, "l": 8},
        },
        font={"size": FONT_SIZE},
        height=height + band,
        margin={"l": 70, "r": 30, "t": 30, "b": 40 + band},
        uirevision="constant",
        showlegend=named > 1,
        legend=legend,
    )
    fig.update_xaxes(title_text=x_title, automargin=True, title_standoff=8)
    fig.update_yaxes(title_text=y_title, automargin=True)
    return fig


def split_title(title: str, width: int = TITLE_WRAP) -> tuple[str, str]:
    """(title, subtitle): a long title's parenthesised tail becomes its subtitle.

    Plotly neither wraps titles nor places multi-line ones reliably (the first line is clipped
    on narrow screens), so the explanation goes to the subtitle line it lays out itself.
    """
    if len(title) <= width or " (" not in title:
        return title, ""
    head, tail = title.split(" (", 1)
    return head, f"({tail}"


def empty_figure(message: str, *, title: str = "", height: int = 320) -> go.Figure:
    """A blank figure that says ``message`` in its middle (the empty state of every chart)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font={"size": FONT_SIZE + 2, "color": "#666"},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title={"text": title, "x": 0.0}, height=height, uirevision="constant")
    return fig


def task_bars(
    series: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    y_title: str,
    reference_line: float | None = None,
    x_title: str = "task",
    log_y: bool = False,
    value_labels: bool = False,
    value_format: str = ".1f",
    height: int = 420,
) -> go.Figure:
    """Grouped bars: one group per task, one bar per series (merged, TA, individual, ...).

    Args:
        series: series name -> {task name -> value}; tasks missing from a series are gaps.
        title, y_title: figure and y-axis titles (the x axis is "task").
        reference_line: draw a dashed horizontal line at this value (e.g. 100 %).
        x_title: what the groups are (default "task").
        log_y: logarithmic y axis with powers of ten.
        value_labels: print each bar's value on it, as ``value_format`` (d3 format).
        height: pixels.
    """
    tasks = _ordered_keys(series.values())
    if not tasks:
        return empty_figure("No results yet", title=title, height=height)
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        ys = [values.get(t) for t in tasks]
        fig.add_bar(
            name=name,
            x=tasks,
            y=ys,
            marker_color=SERIES_COLORS[i % len(SERIES_COLORS)],
            hovertemplate=f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>",
            texttemplate=f"%{{y:{value_format}}}" if value_labels else None,
            textposition="outside" if value_labels else None,
            textfont={"size": FONT_SIZE - 4} if value_labels else None,
            cliponaxis=False,
        )
    if reference_line is not None:
        fig.add_hline(y=reference_line, line_dash="dash", line_color="#888")
    fig.update_layout(barmode="group", bargap=0.25, uniformtext={"minsize": 8, "mode": "show"})
    if log_y:
        fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return _layout(fig, title=title, x_title=x_title, y_title=y_title, height=height)


def heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    *,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    title: str,
    x_title: str,
    y_title: str,
    colorbar_title: str = "",
    midpoint: float | None = None,
    show_values: bool | None = None,
    symlog: bool = False,
    height: int | None = None,
) -> go.Figure:
    """A labelled heatmap ``(len(y_labels), len(x_labels))``; diverging colours when ``midpoint``.

    ``symlog``: colour by ``sign(z)·log10(1 + |z|/c)`` (``c`` = the 10th percentile of the
    non-zero ``|z|``), so values spanning decades all show while zero stays white; the colour
    bar is labelled in the original units and hover shows the true value.

    Large matrices are block-averaged down to about ``HEATMAP_MAX_CELLS`` cells, columns first
    (labels of merged blocks are the first label of each block; the title says so). Values are
    printed in the cells when there are few.

    Raises:
        ValueError: the matrix shape does not match the labels.
    """
    z = np.asarray(matrix, dtype=float)
    if z.size == 0:
        return empty_figure("Nothing to show", title=title, height=height or 320)
    if z.shape != (len(y_labels), len(x_labels)):
        raise ValueError(
            f"heatmap matrix has shape {z.shape} but labels give {(len(y_labels), len(x_labels))}"
        )
    z, x_labels, y_labels, factor = _downsample(z, list(x_labels), list(y_labels))
    if factor > 1:
        title = f"{title} (each column: mean of {factor} {x_title}s)"
    show = z.size <= 150 if show_values is None else show_values
    colour, colorbar = z, {"title": {"text": colorbar_title}}
    text = np.vectorize(lambda v: "" if np.isnan(v) else f"{v:.3g}")(z) if show else None
    if symlog:
        colour, ticks = symlog_scale(z)
        colorbar.update(tickvals=ticks[0], ticktext=ticks[1])
        midpoint = 0.0
    trace = go.Heatmap(
        z=colour,
        customdata=z,
        x=list(x_labels),
        y=list(y_labels),
        colorscale="RdBu_r" if midpoint is not None else "Viridis",
        zmid=midpoint,
        colorbar=colorbar,
        text=text,
        texttemplate="%{text}" if show else None,
        hovertemplate=f"{y_title}: %{{y}}<br>{x_title}: %{{x}}<br>"
        "value: %{customdata:.3g}<extra></extra>",
    )
    fig = go.Figure(trace)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    rows = z.shape[0]
    auto_height = min(900, max(320, 80 + 28 * rows))
    return _layout(fig, title=title, x_title=x_title, y_title=y_title, height=height or auto_height)


def symlog_scale(z: np.ndarray) -> tuple[np.ndarray, tuple[list[float], list[str]]]:
    """``sign(z)·log10(1 + |z|/c)`` and colour-bar ticks (positions, labels in original units)."""
    magnitude = np.abs(z[np.isfinite(z)])
    nonzero = magnitude[magnitude > 0]
    if nonzero.size == 0:
        return z, ([0.0], ["0"])
    c = float(np.percentile(nonzero, 10))
    scaled = np.sign(z) * np.log10(1.0 + np.abs(z) / c)
    top = float(nonzero.max())
    count = int(np.floor(np.log10(top / c))) + 1
    stride = max(1, math.ceil(count / SYMLOG_TICKS))  # at most SYMLOG_TICKS ticks per sign
    decades = [c * 10.0**k for k in range(count - 1, -1, -stride)]
    values = sorted({0.0, *decades, *(-d for d in decades)})
    positions = [float(np.sign(v) * np.log10(1.0 + abs(v) / c)) for v in values]
    far = max(abs(p) for p in positions) or 1.0
    keep = [i for i, p in enumerate(positions) if values[i] == 0 or abs(p) >= 0.12 * far]
    return scaled, ([positions[i] for i in keep], [f"{values[i]:.1g}" for i in keep])


def heatmap_pair(
    matrices: Mapping[str, Sequence[Sequence[float]] | np.ndarray],
    *,
    labels: Sequence[str],
    title: str,
    axis_title: str,
    colorbar_title: str = "",
    zrange: tuple[float, float] | None = None,
    height: int = 460,
) -> go.Figure:
    """Two (or more) square heatmaps side by side in one figure with one shared colour bar.

    One figure instead of one per column keeps each panel wide on a narrow screen (two figures in
    two columns each lose room to their own colour bar and tick labels).

    Args:
        matrices: panel title -> ``(len(labels), len(labels))`` matrix.
        labels: row and column labels (the same for every panel).
        zrange: colour range shared by the panels (default: their min and max).

    Raises:
        ValueError: a matrix shape does not match the labels.
    """
    from plotly.subplots import make_subplots

    panels = {k: np.asarray(v, dtype=float) for k, v in matrices.items()}
    if not panels or any(z.size == 0 for z in panels.values()):
        return empty_figure("Nothing to show", title=title, height=height)
    for name, z in panels.items():
        if z.shape != (len(labels), len(labels)):
            raise ValueError(f"panel {name!r} has shape {z.shape}, labels give {len(labels)}")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels),
                        horizontal_spacing=0.08)  # fmt: skip
    low, high = zrange or (min(float(np.nanmin(z)) for z in panels.values()),
                           max(float(np.nanmax(z)) for z in panels.values()))  # fmt: skip
    show = len(labels) <= 10
    for i, z in enumerate(panels.values(), start=1):
        fig.add_trace(go.Heatmap(
            z=z, x=list(labels), y=list(labels), coloraxis="coloraxis",
            texttemplate="%{z:.2f}" if show else None, textfont={"size": FONT_SIZE - 5},
            hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
        ), row=1, col=i)  # fmt: skip
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=i,
                         showticklabels=i == 1)  # fmt: skip
        fig.update_xaxes(type="category", tickangle=-45, row=1, col=i)
    fig.update_layout(coloraxis={"colorscale": "Viridis", "cmin": low, "cmax": high,
                                 "colorbar": {"title": {"text": colorbar_title}}})  # fmt: skip
    fig.update_annotations(font={"size": FONT_SIZE - 1})
    _layout(fig, title=title, x_title="", y_title="", height=height)
    fig.update_layout(title_pad_b=30)  # room for the panel titles under the figure title
    return fig.update_yaxes(title_text=axis_title, row=1, col=1)


def _downsample(
    z: np.ndarray, x_labels: list[str], y_labels: list[str]
) -> tuple[np.ndarray, list[str], list[str], int]:
    """Block-average columns (and rows only beyond ``HEATMAP_MAX_ROWS``) to fit the budget.

    Returns the smaller matrix, its labels (first label of each block) and the column factor.
    """
    if z.size <= HEATMAP_MAX_CELLS:
        return z, x_labels, y_labels, 1
    row_f = math.ceil(z.shape[0] / HEATMAP_MAX_ROWS)
    rows = math.ceil(z.shape[0] / row_f)
    col_f = math.ceil(z.shape[1] / max(1, HEATMAP_MAX_CELLS // rows))
    cols = math.ceil(z.shape[1] / col_f)
    padded = np.full((rows * row_f, cols * col_f), np.nan)
    padded[: z.shape[0], : z.shape[1]] = z
    small = np.nanmean(padded.reshape(rows, row_f, cols, col_f), axis=(1, 3))
    return small, x_labels[::col_f][:cols], y_labels[::row_f][:rows], col_f


def line_chart(
    x: Sequence[str] | Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_title: str,
    y_title: str,
    log_y: bool = False,
    dashed: Sequence[str] = (),
    height: int = 420,
) -> go.Figure:
    """Lines with markers sharing one x axis (e.g. per-layer effective rank of several stacks).

    Args:
        x: shared x values (layer names or numbers).
        series: name -> y values (same length as ``x``; ``nan`` leaves a gap).
        dashed: names of series drawn dashed (e.g. a ratio next to counts).
        log_y: logarithmic y axis (spectra).

    Raises:
        ValueError: a series has a different length from ``x``.
    """
    if len(x) == 0 or not series:
        return empty_figure("No data yet", title=title, height=height)
    fig = go.Figure()
    for i, (name, ys) in enumerate(series.items()):
        if len(ys) != len(x):
            raise ValueError(f"series {name!r} has {len(ys)} values but x has {len(x)}")
        fig.add_scatter(
            x=list(x),
            y=[float(v) for v in ys],
            name=name,
            mode="lines+markers",
            line={
                "dash": "dash" if name in dashed else "solid",
                "color": SERIES_COLORS[i % len(SERIES_COLORS)],
            },
        )
    fig.update_layout(hovermode="x unified")
    if log_y:
        fig.update_yaxes(type="log", dtick=1, minor={"showgrid": True})
    if all(isinstance(v, int) for v in x) and len(x) <= 40:
        fig.update_xaxes(dtick=1)  # whole-number x (indices): no 1.5 ticks
    return _layout(fig, title=title, x_title=x_title, y_title=y_title, height=height)


def spectra_chart(
    spectra: Mapping[str, Sequence[float]],
    *,
    title: str,
    normalise: bool = False,
    height: int = 420,
) -> go.Figure:
    """Singular values against their index, one line per matrix, log y axis.

    Args:
        spectra: label -> singular values (descending).
        normalise: divide each spectrum by its largest value (compare shapes, not scales).
    """
    clean = {k: [float(s) for s in v] for k, v in spectra.items() if len(v)}
    if not clean:
        return empty_figure("No spectra yet", title=title, height=height)
    fig = go.Figure()
    for i, (name, values) in enumerate(clean.items()):
        top = values[0] if normalise and values[0] > 0 else 1.0
        ys = [max(v / top, 1e-12) for v in values]
        fig.add_scatter(
            x=list(range(1, len(ys) + 1)),
            y=ys,
            name=name,
            mode="lines+markers",
            line={"color": SERIES_COLORS[i % len(SERIES_COLORS)]},
        )
    fig.update_yaxes(type="log", dtick=1, minor={"showgrid": True}, exponentformat="power")
    if max(len(v) for v in clean.values()) <= 20:
        fig.update_xaxes(dtick=1)
    y_title = "σ_k / σ_1" if normalise else "singular value σ_k"
    return _layout(fig, title=title, x_title="index k", y_title=y_title, height=height)


def tradeoff_chart(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    *,
    task_a: str,
    task_b: str,
    baselines: Mapping[str, tuple[float, float]] | None = None,
    front: Sequence[tuple[float, float]] = (),
    current: tuple[float, float] | None = None,
    labels: Mapping[str, Sequence[str]] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
    metric: str = "normalised accuracy (%)",
    height: int = 520,
) -> go.Figure:
    """Trade-off plane: each curve's points (task A metric, task B metric) in sweep order.

    Each point's ``customdata`` is ``[curve index, point index]`` so a click can be mapped back
    to the merge that produced it. Baselines are distinct marker symbols, the Pareto front is a
    staircase, the current setting is a large star.

    Args:
        curves: curve name -> points in sweep order (may be partial while a sweep streams in).
        task_a, task_b: the tasks on the x and y axes.
        baselines: name -> point (e.g. Task Arithmetic, each individual adapter).
        front: non-dominated points, any order.
        current: the point of the current merge, if any.
        labels: curve name -> one short text per point (e.g. "λ=0.3"), drawn next to it; a
            labelled curve is drawn with a faint dotted line (its order is a parameter sweep,
            not a path through the plane).
        notes: curve name -> one extra hover line per point (e.g. steps and objective).
        metric: what the axes measure.
    """
    title = f"Trade-off: {task_a} vs {task_b}"
    fig = go.Figure()
    if not any(len(p) for p in curves.values()) and not baselines:
        fig.add_annotation(
            text="Run a sweep to see the trade-off curve", x=0.5, y=0.5, xref="paper",
            yref="paper", showarrow=False, font={"size": FONT_SIZE + 2, "color": "#666"},
        )  # fmt: skip
        fig.update_xaxes(range=[0, 105])
        fig.update_yaxes(range=[0, 105])
    labels, notes = labels or {}, notes or {}
    for i, (name, points) in enumerate(curves.items()):
        texts = labels.get(name)
        extra = list(notes.get(name) or [""] * len(points))
        fig.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            name=name,
            mode="lines+markers+text" if texts else "lines+markers",
            text=list(texts) if texts else None,
            textposition="top center",
            textfont={"size": FONT_SIZE - 3},
            line={"dash": "dot", "width": 1} if texts else {"width": 2},
            marker={"size": 9, "color": SERIES_COLORS[i % len(SERIES_COLORS)]},
            customdata=[[i, j, (p[0] + p[1]) / 2, extra[j]] for j, p in enumerate(points)],
            hovertemplate=f"{name} %{{text}}<br>{task_a}: %{{x:.1f}}<br>"
            f"{task_b}: %{{y:.1f}}<br>mean: %{{customdata[2]:.1f}}<br>%{{customdata[3]}}"
            "<extra></extra>"
            if texts else f"{name} #%{{customdata[1]}}<br>{task_a}: %{{x:.1f}}<br>"
            f"{task_b}: %{{y:.1f}}<extra></extra>",
        )
    if front:
        pts = sorted(front)
        fig.add_scatter(
            x=[p[0] for p in pts],
            y=[p[1] for p in pts],
            name="Pareto front",
            mode="lines",
            line={"shape": "vh", "dash": "dot", "color": "#444"},
            hoverinfo="skip",
        )
    for i, (name, (bx, by)) in enumerate((baselines or {}).items()):
        fig.add_scatter(
            x=[bx],
            y=[by],
            name=name,
            mode="markers",
            marker={
                "size": 13,
                "symbol": BASELINE_SYMBOLS[i % len(BASELINE_SYMBOLS)],
                "color": "#555",
                "line": {"width": 1, "color": "white"},
            },
        )
    if current is not None:
        fig.add_scatter(
            x=[current[0]],
            y=[current[1]],
            name="current merge",
            mode="markers",
            marker={"size": 20, "symbol": "star", "color": "gold", "line": {"width": 1}},
        )
    return _layout(
        fig,
        title=title,
        x_title=f"{task_a}: {metric}",
        y_title=f"{task_b}: {metric}",
        height=height,
    )


def _ordered_keys(mappings: Sequence[Mapping[str, float]] | object) -> list[str]:
    seen: dict[str, None] = {}
    for mapping in mappings:  # type: ignore[union-attr]
        for key in mapping:
            seen.setdefault(key, None)
    return list(seen)
