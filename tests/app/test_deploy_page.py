"""Deploy page: a converted cell run on TFLite Micro's real kernels, judged like any cell; numbers
shown are recomputed here with numpy from TFLM's own outputs and the original's."""
from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import assert_clean, convert, go, metrics, texts

pytestmark = pytest.mark.slow


def test_without_a_cell_the_page_points_to_convert(digits):
    go(digits, "deploy")
    assert_clean(digits)
    assert any("Convert a cell first" in i for i in texts(digits.info))


def test_int8_cell_on_a_board_passes_with_numbers_that_recompute(digits):
    convert(digits, "keras", "int8")
    go(digits, "deploy")
    digits.selectbox(key="deploy_board").set_value("nano33ble").run()
    digits.button(key="deploy_run").click().run()
    assert_clean(digits)
    shown = metrics(digits)
    t = digits.session_state["lab_reports"]["keras-int8"]["targets"]["micro"]
    assert shown["Verdict"] == "PASS" and t["runs"] and t["board"]["fits"]
    assert shown["MACs per inference"] == f"{t['macs']['total']:,}" and t["macs"]["total"] > 0
    frames = [d.value for d in digits.dataframe]
    (ops,) = [f for f in frames if "runs_on_micro" in f.columns]
    assert ops["runs_on_micro"].tolist() == [True] * len(ops) and "CONV_2D" in set(ops["op"])
    (outs,) = [f for f in frames if "max abs error" in f.columns]
    tflm = np.load(t["outputs_path"])
    ref = np.load(digits.session_state["lab_reports"]["keras-int8"]["reference_path"])
    name = outs["output"].iloc[0]
    assert float(outs["max abs error"].iloc[0]) == pytest.approx(
        float(np.max(np.abs(tflm[name].astype(np.float64) - ref[name]))), rel=1e-3)
    assert len(digits.get("plotly_chart")) == 2                   # board fit and MACs per op
    from pathlib import Path
    assert {"model_data.cc", "model_ops.h", "main.cc", "README.md"} <= {f.name for f in Path(t["bundle_dir"]).iterdir()}
    assert any(getattr(b, "proto", None) is not None and "C++ bundle" in b.proto.label
               for b in digits.get("download_button"))


def test_dynamic_range_cell_does_not_run_and_says_why(digits):
    convert(digits, "saved_model", "dynamic")
    go(digits, "deploy")
    digits.button(key="deploy_run").click().run()
    assert_clean(digits)
    assert metrics(digits)["Verdict"] == "DOES NOT RUN"
    assert any("TFLM has no hybrid kernels: use int8" in e for e in texts(digits.error))
