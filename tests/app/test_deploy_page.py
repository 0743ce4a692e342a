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


def test_browser_target_refuses_an_int8_io_cell_before_anything_runs_and_names_the_float_io_one(digits):
    go(digits, "convert")
    digits.radio(key="conv_route").set_value("keras")
    digits.radio(key="conv_opt").set_value("int8").run()
    digits.checkbox(key="conv_int8io").check().run()
    digits.button(key="convert").click().run()
    go(digits, "deploy")
    digits.radio(key="deploy_target").set_value("browser").run()
    assert_clean(digits)
    assert digits.selectbox(key="deploy_cell").value == "keras-int8-int8io"
    warnings = texts(digits.warning)
    assert any("int8" in w and "LiteRT.js" in w for w in warnings), warnings
    assert any("keras-int8" in c and "float-I/O" in c for c in texts(digits.caption))
    assert "deploy_device_component" not in str(digits._tree)        # nothing was offered to run
    digits.button(key="deploy_device_float_io").click().run(timeout=240)      # "Convert keras-int8 and use it"
    assert_clean(digits)
    assert digits.selectbox(key="deploy_cell").value == "keras-int8"
    assert digits.session_state["lab_reports"]["keras-int8"]["int8_io"] is False
    assert digits.session_state["lab_device_cells"]["keras-int8"]["refusal"] is None


def test_browser_target_offers_mobile_code_from_the_signature_and_runs_headless_chromium(digits):
    from pathlib import Path
    convert(digits, "keras", "none")
    go(digits, "deploy")
    digits.radio(key="deploy_target").set_value("browser").run()
    assert_clean(digits)
    labels = [b.proto.label for b in digits.get("download_button")]
    assert any("Android" in x for x in labels) and any("iOS" in x for x in labels)
    mobile = digits.session_state["lab_device_cells"]["keras-none"]
    assert mobile["refusal"] is None and mobile["made_batch_1"]
    from tflite_lab.targets.mobile_bundle import mobile_job
    rep = digits.session_state["lab_reports"]["keras-none"]
    kt = (Path(mobile_job(rep["tflite_path"])["android"]) / "ModelRunner.kt").read_text()
    for d in digits.session_state["lab_model"].signature["inputs"]:
        assert d["name"] in kt
    digits.button(key="deploy_run").click().run(timeout=240)
    assert_clean(digits)
    t = digits.session_state["lab_reports"]["keras-none"]["targets"]["browser"]
    shown = metrics(digits)
    assert shown["Verdict in headless Chromium"] == "PASS", (t.get("error"), t.get("failures"))
    assert t["runs"] and not t.get("error")
    assert "HeadlessChrome" in t["user_agent"] and t["accelerator"] == "wasm"
    # The browser's outputs against LiteRT's, recomputed here with numpy.
    got = np.load(t["outputs_path"])
    lite = np.load(rep["predictions_path"])
    for v in t["vs_litert"]:
        assert v["max_abs_diff"] == pytest.approx(float(np.max(np.abs(got[v["name"]] - lite[v["name"]]))), abs=1e-12)
    assert any("Web bundle" in b.proto.label for b in digits.get("download_button"))
    assert (Path(t["bundle_dir"]) / "index.html").is_file() and (Path(t["bundle_dir"]) / "model.tflite").is_file()
