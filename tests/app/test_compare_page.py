"""Compare page: metrics per output against editable tolerances, charts, drill-down, downloads."""
from __future__ import annotations

import re

from apptest_helpers import assert_clean, convert, go, metrics, texts, use_sample


def charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_nothing_converted_yet(digits):
    go(digits, "compare")
    assert_clean(digits)
    assert any("Nothing converted yet" in i for i in texts(digits.info))


def test_metrics_charts_and_drill_down_for_a_classifier(digits):
    convert(digits, "saved_model", "dynamic")
    go(digits, "compare")
    assert_clean(digits)
    shown = metrics(digits)
    assert shown["Verdict"] == "PASS" and shown["Outputs within tolerance"] == "1 / 1"
    assert shown["Samples compared"] == "64"
    # The shipped samples carry labels: task accuracy of both models, recomputed from the arrays.
    import numpy as np
    report = digits.session_state["lab_reports"]["saved_model-dynamic"]
    labels = np.load(report["labels_path"])
    acc = {k: float(np.mean(np.load(report[p])["probs"].argmax(1) == labels))
           for k, p in (("original", "reference_path"), ("TFLite", "predictions_path"))}
    assert shown["Accuracy, original"] == f"{acc['original']:.4g}" and shown["Accuracy, TFLite"] == f"{acc['TFLite']:.4g}"
    table = digits.dataframe[0].value
    assert list(table["output"]) == ["probs"] and list(table["status"]) == ["pass"]
    assert {"max abs error", "mean abs error", "RMSE", "cosine", "PSNR (dB)", "top-1 agreement"} <= set(table.columns)
    # scatter, error histogram, per-sample bars, input image, outputs side by side, difference, confusion
    assert charts(digits) == 7
    drill = digits.selectbox(key="drill_saved_model-dynamic")
    errors = [float(o.split("max |Δ| ")[1]) for o in drill.options]
    assert errors == sorted(errors, reverse=True)        # worst first
    labels = [b.label for b in digits.get("download_button")]
    assert labels[:2] == ["Metrics (.csv)", "Predictions (.npz)"]
    assert re.fullmatch(r"HTML report \(≈?[\d.]+ MB\)", labels[2]) and len(labels) == 3     # the run's report, sized


def test_tighter_tolerance_turns_the_verdict_to_fail(digits):
    convert(digits, "saved_model", "float16")
    go(digits, "compare")
    assert metrics(digits)["Verdict"] == "PASS"
    digits.number_input(key="tol_max_abs_error_saved_model-float16").set_value(1e-9).run()
    assert_clean(digits)
    assert metrics(digits)["Verdict"] == "FAIL"
    assert any(w.startswith("Out of tolerance: probs: max abs error") for w in texts(digits.warning))
    go(digits, "convert")                           # the edited tolerance applies on every page
    assert metrics(digits)["Verdict"] == "FAIL"


def test_a_regressor_has_no_confusion_view(app):
    use_sample(app, "diabetes_regressor")
    convert(app, "saved_model", "none")
    go(app, "compare")
    assert_clean(app)
    assert list(app.dataframe[0].value["output"]) == ["output_0"]
    assert not any(s.value == "Classifier agreement" for s in app.subheader)
    assert charts(app) == 6


def test_multi_io_shows_every_input_and_output(app):
    use_sample(app, "multi_io")
    convert(app, "saved_model", "none")
    go(app, "compare")
    assert_clean(app)
    assert set(app.dataframe[0].value["output"]) == {"digit", "ink"}
    # 2 scatters + histogram + per-sample; 2 inputs; 2 x (pair + difference); 1 confusion (digit)
    assert charts(app) == 4 + 2 + 4 + 1
