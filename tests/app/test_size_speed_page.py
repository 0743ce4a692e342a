"""Size & speed page: size reduction in % and x, latency box plots, throughput."""
from __future__ import annotations

from apptest_helpers import assert_clean, convert, go, metrics, texts


def test_size_and_latency_of_the_converted_models(digits):
    convert(digits, "saved_model", "none")
    convert(digits, "saved_model", "dynamic")
    go(digits, "size_speed")
    assert_clean(digits)
    shown = metrics(digits)
    assert shown["Original size"] == "486.0 KB"
    assert shown["Size reduction"].endswith("×") and float(shown["Size reduction"][:-1]) > 5
    assert shown["TFLite latency"].endswith(("µs", "ms"))
    assert shown["Speed-up"].endswith("×")
    assert len(digits.get("plotly_chart")) == 3          # size bars, latency boxes, throughput


def test_without_latency_only_sizes_are_shown(digits, monkeypatch):
    # The sidebar toggle sets this; AppTest drops the sidebar's widgets after the first run.
    from pages import jobs, state
    from tflite_lab.pipeline import BenchSpec
    for where in (state, jobs):          # jobs holds its own reference to state's function
        monkeypatch.setattr(where, "bench_spec", lambda: BenchSpec(enabled=False))
    convert(digits, "saved_model", "none")
    go(digits, "size_speed")
    assert_clean(digits)
    assert any("Latency was not measured" in i for i in texts(digits.info))
    assert len(digits.get("plotly_chart")) == 1
