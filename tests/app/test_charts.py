"""charts.py without a browser: titles, axis labels with units, NaN kept visible, Pareto front, best cell."""
from __future__ import annotations

import math

import numpy as np

from tflite_lab import charts


def axis_titles(fig):
    return fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


def test_scatter_has_identity_line_and_counts_nonfinite_values():
    ref = np.linspace(0, 1, 20).reshape(2, 10)
    out = ref.copy()
    out[0, 0] = np.nan
    fig = charts.scatter_figure(ref, out, "probs")
    assert [t.name for t in fig.data] == ["values", "y = x (identical)"]
    assert "1 NaN/inf TFLite values not drawn" in fig.layout.title.text
    assert axis_titles(fig) == ("original output", "TFLite output")


def test_scatter_downsamples_large_outputs():
    ref = np.zeros((100, 500))
    fig = charts.scatter_figure(ref, ref, "big", max_points=1000)
    assert len(fig.data[0].x) == 1000 and "1,000 of 50,000 values" in fig.layout.title.text


def test_error_histogram_is_log_scaled_and_notes_exact_and_nan():
    ref = {"a": np.array([[0.0, 1.0, 2.0, 3.0]])}
    out = {"a": np.array([[0.0, 1.001, np.nan, 3.1]])}
    fig = charts.error_histogram_figure(ref, out)
    assert "(log scale)" in fig.layout.xaxis.title.text
    note = fig.layout.annotations[0].text
    assert "a: 1 exact" in note and "a: 1 NaN/inf" in note


def test_per_sample_bars_mark_the_tolerance():
    fig = charts.per_sample_error_figure({"probs": [0.1, float("nan"), 0.3]}, tolerance=0.2, highlight=2)
    assert len(fig.data[0].x) == 3 and math.isnan(fig.data[0].y[1])
    assert any("tolerance 0.2" in (a.text or "") for a in fig.layout.annotations)


def test_inputs_draw_as_images_only_when_image_shaped():
    assert charts.is_image_shaped((8, 8, 1)) and charts.is_image_shaped((96, 96, 3)) and charts.is_image_shaped((8, 8))
    assert not charts.is_image_shaped((30,)) and not charts.is_image_shaped((8, 8, 7))
    assert charts.input_figure(np.zeros((8, 8, 1)), "image").data[0].type == "heatmap"
    assert charts.input_figure(np.random.default_rng(0).random((16, 16, 3)), "rgb").data[0].type == "image"
    assert charts.input_figure(np.zeros(30), "features").data[0].type == "bar"


def test_confusion_counts_top1_pairs():
    ref = np.eye(3)[[0, 1, 2, 2]]
    out = np.eye(3)[[0, 1, 1, 2]]
    fig = charts.confusion_figure(ref, out, "probs")
    assert fig.data[0].z.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert "75.0% of 4 samples" in fig.layout.title.text


def test_size_latency_and_throughput_have_units():
    size = charts.size_figure(400_000, {"saved_model-dynamic": 100_000})
    assert size.layout.yaxis.title.text == "size (KB)" and "−75%, 4.0×" in size.data[0].text[1]
    lat = charts.latency_box_figure({"original": [1.0, 1.2], "saved_model-none": [0.01, 0.02]})
    assert lat.layout.yaxis.type == "log" and "ms" in lat.layout.yaxis.title.text
    thr = charts.throughput_figure({"original": 100.0, "x": None})
    assert list(thr.data[0].x) == ["original"] and thr.layout.yaxis.title.text == "samples per second"


def test_pareto_front_and_best_cell():
    assert charts.pareto_front([(1, 5), (2, 1), (3, 3), (1, 5), (float("nan"), 0)]) == [0, 1, 3]
    rows = [{"cell": "a-none", "size_bytes": 4000, "max_abs_error": 1e-7, "latency_ms": 0.1, "ok": True},
            {"cell": "a-int8", "size_bytes": 1000, "max_abs_error": 0.5, "latency_ms": 0.05, "ok": False},
            {"cell": "a-dynamic", "size_bytes": 1100, "max_abs_error": 0.01, "latency_ms": 0.07, "ok": True}]
    assert charts.best_cell(rows) == "a-dynamic"
    fig = charts.pareto_figure(rows)
    assert fig.layout.yaxis.type == "log" and "best: a-dynamic" in [t.name for t in fig.data]
    assert charts.best_cell([dict(rows[1])]) is None


def test_human_units():
    assert charts.human_bytes(1536) == "1.5 KB" and charts.human_bytes(512) == "512 B"
    assert charts.human_ms(0.0068) == "6.8 µs" and charts.human_ms(12.3) == "12.3 ms"
    assert charts.human_ms(None) == "–"


def test_per_sample_nan_is_a_red_marker_not_a_missing_bar():
    fig = charts.per_sample_error_figure({"a": [0.1, 0.2], "b": [0.05, float("nan")]})
    marks = [t for t in fig.data if t.name == "b: NaN/inf"]
    assert len(marks) == 1 and list(marks[0].x) == [1] and marks[0].y[0] > 0.2
    assert "1 NaN/inf" in fig.layout.title.text


def test_pareto_keeps_nan_cells_and_does_not_colour_missing_latency_as_zero():
    rows = [{"cell": "a-none", "size_bytes": 4000, "max_abs_error": 1e-7, "latency_ms": 0.1, "ok": True},
            {"cell": "a-int8", "size_bytes": 1000, "max_abs_error": "nan", "latency_ms": 0.05, "ok": False},
            {"cell": "a-dynamic", "size_bytes": 1100, "max_abs_error": 0.01, "latency_ms": None, "ok": True}]
    fig = charts.pareto_figure(rows)
    by_name = {t.name: t for t in fig.data}
    broken = by_name["NaN/inf error (drawn at the top)"]
    assert list(broken.customdata) == ["a-int8"] and broken.y[0] > 1e-7 * 10
    assert any("a-int8: NaN" in (a.text or "") for a in fig.layout.annotations)
    grey = by_name["latency not measured"]
    assert list(grey.customdata) == ["a-dynamic"] and grey.marker.color == "#B0B0B0"
    assert list(by_name["cells"].marker.color) == [0.1]       # only measured latencies on the colour scale
    assert "1 with NaN/inf" in fig.layout.title.text


def test_drill_down_charts_count_nan_values():
    ref, out = np.array([1.0, 2.0]), np.array([1.0, np.nan])
    assert "1 NaN/inf (no bar)" in charts.output_pair_figure(ref, out, "y").layout.title.text
    assert "1 NaN/inf (no bar)" in charts.difference_figure(ref, out, "y").layout.title.text
    assert "NaN" not in charts.difference_figure(ref, ref, "y").layout.title.text
