"""The pages keep the trust rules: user tolerances apply to every output, tasks can be overridden,
NaN shows in the headline, and a .tflite without its original is 'Ran, no reference', never PASS."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apptest_helpers import assert_clean, convert, go, metrics, new_app, texts, upload_model

NAN_MODEL = r'''
import sys, numpy as np, keras
keras.utils.set_random_seed(0)
x = keras.Input((6,), name="x")
h = keras.layers.Dense(8, activation="tanh")(x)
m = keras.Model(x, [keras.layers.Dense(4, activation="softmax", name="probs")(h), keras.layers.Dense(1, name="score")(h)])
w, b = m.get_layer("score").get_weights()
m.get_layer("score").set_weights([w, np.full_like(b, np.nan)])
m.save(sys.argv[1])
'''


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nan") / "nan_head.keras"
    subprocess.run([sys.executable, "-c", NAN_MODEL, str(path)], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return path


def test_a_user_psnr_reaches_the_classifier_and_its_task_can_be_changed(digits):
    convert(digits, "saved_model", "dynamic")
    go(digits, "compare")
    table = digits.dataframe[0].value
    assert list(table["task"]) == ["classification"]
    assert "top-1 ≥ 0.95: ok (default for dynamic on a classification output)" in table["tolerances applied"][0]
    digits.number_input(key="tol_min_psnr_db_saved_model-dynamic").set_value(300.0).run()
    assert_clean(digits)
    assert metrics(digits)["Verdict"] == "FAIL"
    assert any("probs: PSNR" in w for w in texts(digits.warning))
    assert "PSNR ≥ (dB) 300: FAIL (set by you)" in digits.dataframe[0].value["tolerances applied"][0]
    digits.number_input(key="tol_min_psnr_db_saved_model-dynamic").set_value(30.0).run()
    digits.selectbox(key="task_probs_saved_model-dynamic").set_value("regression").run()
    assert_clean(digits)
    table = digits.dataframe[0].value
    applied = table["tolerances applied"][0]
    assert list(table["task"]) == ["regression"] and "top-1 ≥" not in applied
    assert "PSNR ≥ (dB) 30: ok (default for dynamic on a regression output)" in applied
    assert not any(s.value == "Classifier agreement" for s in digits.subheader)


def test_nan_in_the_second_output_is_the_headline(nan_model):
    app = new_app()
    upload_model(app, nan_model.name, nan_model.read_bytes())
    convert(app, "saved_model", "none")
    assert_clean(app)
    assert metrics(app)["Verdict"] == "FAIL" and metrics(app)["Max abs error"] == "nan"
    go(app, "compare")
    assert_clean(app)
    assert metrics(app)["Worst max abs error"] == "nan"
    table = app.dataframe[0].value
    assert dict(zip(table["output"], table["status"])) == {"probs": "pass", "score": "FAIL"}
    specs = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    per_sample = next(s for s in specs if s["layout"]["title"]["text"].startswith("Max absolute error per sample"))
    assert "64 NaN/inf (red ×)" in per_sample["layout"]["title"]["text"]
    assert [t["name"] for t in per_sample["data"]].count("score: NaN/inf") == 1


def test_a_tflite_alone_is_run_not_passed(digits):
    convert(digits, "saved_model", "none")
    tflite = Path(digits.session_state["lab_reports"]["saved_model-none"]["tflite_path"]).read_bytes()
    app = new_app()
    upload_model(app, "digits.tflite", tflite)
    go(app, "convert")
    assert_clean(app)
    assert any("run it alone" in i for i in texts(app.info))
    app.button(key="convert").click().run()
    assert_clean(app)
    assert metrics(app)["Verdict"] == "Ran, no reference"
    stats = app.dataframe[0].value
    assert list(stats["output"]) == ["output_0"] and list(stats["NaN/inf values"]) == [0]
    go(app, "compare")
    assert_clean(app)
    assert metrics(app)["Verdict"] == "Ran, no reference"
    assert any("nothing was compared" in i for i in texts(app.info))
