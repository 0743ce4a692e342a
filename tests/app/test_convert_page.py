"""Convert page: route and optimization pickers, the Convert button, the result and its code."""
from __future__ import annotations

from pathlib import Path

from apptest_helpers import SAMPLES, assert_clean, code_blocks, convert, go, metrics, sidebar_texts, texts, upload_model, use_sample

from tflite_lab.errors import ConversionError


def test_without_a_model_the_page_points_to_the_model_page(app):
    go(app, "convert")
    assert_clean(app)
    assert any("No model yet" in i for i in texts(app.info))


def test_pickers_explain_each_choice(digits):
    go(digits, "convert")
    route, opt = digits.radio(key="conv_route"), digits.radio(key="conv_opt")
    assert route.value == "saved_model"              # the recommended route is the default
    assert set(route.options) >= {"from_keras_model", "from_saved_model", "from_concrete_functions", "tflite_convert"}
    assert "Full integer int8" in opt.options
    assert digits.button(key="convert").label == "Convert"


def test_convert_shows_verdict_code_and_download(digits):
    convert(digits, "saved_model", "none")
    assert_clean(digits)
    shown = metrics(digits)
    assert shown["Verdict"] == "PASS"
    assert shown["TFLite size"].endswith("KB")
    assert float(shown["Max abs error"]) < 1e-4
    assert shown["Top-1 agreement"] == "100.0%"
    code = code_blocks(digits)[0].value
    assert "EXPORT = 'digits_cnn_export'" in code and "tf.lite.TFLiteConverter.from_saved_model(EXPORT)" in code
    assert "tflite_model = converter.convert()" in code
    assert "python -m tflite_lab convert digits_cnn.keras --route saved_model --optimize none" in code_blocks(digits)[1].value
    report = digits.session_state["lab_reports"]["saved_model-none"]
    assert Path(report["tflite_path"]).read_bytes()[4:8] == b"TFL3"
    assert digits.status[0].label.startswith("saved_model-none done in")
    assert "Results: 1 converted" in sidebar_texts(digits)


def test_int8_shows_calibration_code(digits):
    convert(digits, "keras", "int8")
    assert_clean(digits)
    shown = metrics(digits)
    # The trained digits CNN keeps top-1 on its samples under int8 (measured 99.4 %): a PASS by top-1.
    assert shown["Verdict"] == "PASS" and float(shown["Top-1 agreement"].rstrip("%")) >= 95
    code = code_blocks(digits)[0].value
    assert "def representative_dataset():" in code and "TFLITE_BUILTINS_INT8" in code


def test_a_refused_combination_is_explained_and_not_run(digits):
    go(digits, "convert")
    digits.radio(key="conv_route").set_value("cli")
    digits.radio(key="conv_opt").set_value("int8").run()
    assert_clean(digits)
    assert any("cannot calibrate" in e for e in texts(digits.error))
    assert digits.button(key="convert").disabled


def test_cli_route_shows_the_shell_command(app):
    use_sample(app, "breast_cancer_mlp")
    convert(app, "cli", "dynamic")
    assert_clean(app)
    # Dynamic range leaves this small MLP's probabilities within float noise (measured PSNR ~150 dB).
    assert metrics(app)["Verdict"] == "PASS"
    shell = code_blocks(app)[0].value
    assert "model.export(EXPORT)" in shell    # Keras files are exported first, then converted
    assert "\ntflite_convert --saved_model_dir=breast_cancer_mlp_export" in shell and "--post_training_quantize" in shell
    assert "--output_file=model.tflite" in shell


def test_a_failed_conversion_shows_one_line_and_the_log(digits, monkeypatch):
    from pages import jobs

    def fail(job, progress=None, **kwargs):
        if job == "cell":
            raise ConversionError("Conversion saved_model-none failed: something broke.", detail="the converter log")
        return real(job, progress, **kwargs)
    real = jobs.executor().run
    monkeypatch.setattr(jobs.executor(), "run", fail)
    from tflite_lab import orchestrate        # an earlier test's stored cell would be served, not converted
    monkeypatch.setattr(orchestrate, "stored_cell", lambda *a, **k: None)
    convert(digits, "saved_model", "none")
    assert_clean(digits)
    assert texts(digits.error) == ["Conversion saved_model-none failed: something broke."]
    assert digits.expander[0].label == "Details"
    assert "the converter log" in [c.value for c in digits.code]
    assert digits.status[0].label.startswith("saved_model-none failed")


def test_an_uploaded_tflite_is_compared_with_its_original(digits):
    convert(digits, "saved_model", "none")
    tflite = Path(digits.session_state["lab_reports"]["saved_model-none"]["tflite_path"]).read_bytes()
    go(digits, "model")
    upload_model(digits, "digits.tflite", tflite)
    assert_clean(digits)
    assert metrics(digits)["Format"] == "tflite"
    original = (SAMPLES / "digits_cnn.keras").read_bytes()
    digits.file_uploader(key="reference_upload").upload("digits_cnn.keras", original).run()
    assert_clean(digits)
    go(digits, "convert")
    assert digits.button(key="convert").label == "Compare"
    digits.button(key="convert").click().run()
    assert_clean(digits)
    assert metrics(digits)["Verdict"] == "PASS"
    assert "provided" in digits.session_state["lab_reports"]
