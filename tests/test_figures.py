"""Figure builders: right traces, titles and axis titles, empty states, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from merging_core import figures


def axis_titles(fig) -> tuple[str, str]:
    return fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


class TestTaskBars:
    def test_one_bar_trace_per_series_in_task_order(self):
        fig = figures.task_bars(
            {"merged": {"a": 90.0, "b": 80.0}, "TA": {"b": 70.0, "c": 60.0}},
            title="acc",
            y_title="normalised accuracy (%)",
            reference_line=100.0,
        )
        assert [t.name for t in fig.data] == ["merged", "TA"]
        assert list(fig.data[0].x) == ["a", "b", "c"]
        assert list(fig.data[0].y) == [90.0, 80.0, None]  # missing task is a gap, not a zero
        assert list(fig.data[1].y) == [None, 70.0, 60.0]
        assert axis_titles(fig) == ("task", "normalised accuracy (%)")
        assert fig.layout.shapes[0].y0 == 100.0

    def test_empty_state(self):
        fig = figures.task_bars({}, title="acc", y_title="y")
        assert len(fig.data) == 0
        assert fig.layout.annotations[0].text == "No results yet"


class TestHeatmap:
    def test_labels_values_and_diverging_midpoint(self):
        m = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]
        fig = figures.heatmap(
            m,
            x_labels=["d0", "d1", "d2"],
            y_labels=["t0", "t1"],
            title="J",
            x_title="direction",
            y_title="task",
            midpoint=0.0,
        )
        (trace,) = fig.data
        np.testing.assert_array_equal(np.asarray(trace.z), np.asarray(m))
        assert trace.zmid == 0.0 and trace.texttemplate == "%{text}"
        assert trace.text[0][1] == "-2"  # the cell's true value, printed in it
        assert axis_titles(fig) == ("direction", "task")

    def test_symlog_colours_keep_sign_and_true_values(self):
        m = np.array([[1e-4, -1e-2, 1.0], [0.0, 10.0, -1e-3]])
        fig = figures.heatmap(m, x_labels=["a", "b", "c"], y_labels=["x", "y"], title="J",
                              x_title="d", y_title="t", symlog=True)  # fmt: skip
        (trace,) = fig.data
        colour = np.asarray(trace.z)
        np.testing.assert_array_equal(np.sign(colour), np.sign(m))
        assert np.all(np.diff(colour[0][[0, 2]]) > 0) and trace.zmid == 0.0
        np.testing.assert_array_equal(np.asarray(trace.customdata), m)  # hover: true values
        assert "0" in trace.colorbar.ticktext

    def test_legend_sits_under_the_plot_and_long_titles_get_a_subtitle(self):
        title = "Per-task normalised accuracy, test split (100 % = own adapter)"
        series = {"a": {"t": 1.0}, "b": {"t": 2.0}, "c": {"t": 3.0}}
        fig = figures.task_bars(series, title=title, y_title="%")
        assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0.0
        assert fig.layout.title.text == "Per-task normalised accuracy, test split"
        assert fig.layout.title.subtitle.text == "(100 % = own adapter)"

    def test_shape_mismatch_names_both_shapes(self):
        with pytest.raises(ValueError, match=r"\(2, 2\).*\(2, 3\)"):
            figures.heatmap(
                np.zeros((2, 2)),
                x_labels=["a", "b", "c"],
                y_labels=["x", "y"],
                title="t",
                x_title="x",
                y_title="y",
            )

    def test_large_matrix_is_block_averaged(self):
        z = np.arange(400 * 400, dtype=float).reshape(400, 400)
        fig = figures.heatmap(
            z,
            x_labels=[str(i) for i in range(400)],
            y_labels=[str(i) for i in range(400)],
            title="big",
            x_title="x",
            y_title="y",
        )
        small = np.asarray(fig.data[0].z)
        assert small.shape == (200, 200)  # rows beyond HEATMAP_MAX_ROWS are averaged too
        assert small[0, 0] == pytest.approx(z[:2, :2].mean())
        assert fig.data[0].texttemplate is None  # no numbers printed on large maps
        assert "mean of 2 xs" in fig.layout.title.text

    def test_few_rows_many_columns_keeps_every_row(self):
        z = np.random.default_rng(0).normal(size=(8, 24576))
        fig = figures.heatmap(
            z,
            x_labels=[f"d{i}" for i in range(24576)],
            y_labels=[f"t{i}" for i in range(8)],
            title="J",
            x_title="direction",
            y_title="task",
        )
        small = np.asarray(fig.data[0].z)
        assert small.shape[0] == 8 and small.size <= figures.HEATMAP_MAX_CELLS
        factor = math.ceil(24576 / small.shape[1])
        assert small[3, 0] == pytest.approx(z[3, :factor].mean())
        assert list(fig.data[0].y) == [f"t{i}" for i in range(8)]


class TestLines:
    def test_series_and_dashes(self):
        fig = figures.line_chart(
            ["l0", "l1"],
            {"erank": [1.0, 2.0], "ratio": [0.5, 0.7]},
            title="erank",
            x_title="layer",
            y_title="effective rank",
            dashed=["ratio"],
        )
        assert [t.line.dash for t in fig.data] == ["solid", "dash"]
        assert axis_titles(fig) == ("layer", "effective rank")

    def test_length_mismatch(self):
        with pytest.raises(ValueError, match="series 'a' has 1 values but x has 2"):
            figures.line_chart(["l0", "l1"], {"a": [1.0]}, title="t", x_title="x", y_title="y")

    def test_spectra_normalised_and_log(self):
        fig = figures.spectra_chart({"m": [4.0, 2.0, 1.0]}, title="s", normalise=True)
        assert list(fig.data[0].y) == [1.0, 0.5, 0.25]
        assert list(fig.data[0].x) == [1, 2, 3]
        assert fig.layout.yaxis.type == "log"
        assert figures.spectra_chart({"m": []}, title="s").layout.annotations


class TestTradeoff:
    def test_points_carry_their_index_and_front_is_sorted(self):
        fig = figures.tradeoff_chart(
            {"TARA": [(90.0, 60.0), (70.0, 85.0)]},
            task_a="A",
            task_b="B",
            baselines={"Task Arithmetic": (75.0, 70.0)},
            front=[(70.0, 85.0), (90.0, 60.0)],
            current=(90.0, 60.0),
        )
        names = [t.name for t in fig.data]
        assert names == ["TARA", "Pareto front", "Task Arithmetic", "current merge"]
        assert [list(c)[:2] for c in fig.data[0].customdata] == [[0, 0], [0, 1]]  # + the mean
        assert list(fig.data[1].x) == [70.0, 90.0]
        assert fig.data[3].marker.symbol == "star"
        assert axis_titles(fig) == ("A: normalised accuracy (%)", "B: normalised accuracy (%)")

    def test_empty_state_asks_for_a_sweep(self):
        fig = figures.tradeoff_chart({"TARA": []}, task_a="A", task_b="B")
        assert "Run a sweep" in fig.layout.annotations[0].text
        assert axis_titles(fig) == ("A: normalised accuracy (%)", "B: normalised accuracy (%)")
