"""The command-line contract: exit codes 0/1/2/3 provoked for real, --json purity, --out files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import SAMPLES, run_cli


def one_line_error(r):
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    return errors[0]


@pytest.fixture(scope="module")
def unconvertible(tmp_path_factory):
    """A float64 MatMul: allowed by the graph policy (which judges op names; MatMul lowers in
    float32), runs in TensorFlow, but TFLite has no float64 MatMul kernel, so conversion fails.
    (An op with no builtin at all, such as Svd, is now refused up front with exit 2.)"""
    d = tmp_path_factory.mktemp("f64") / "sm"
    code = f"""
import tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float64, name="x")])
    def serve(self, x):
        return {{"y": tf.matmul(x, tf.ones([4, 2], tf.float64))}}
m = M()
tf.saved_model.save(m, r"{d}", signatures={{"serving_default": m.serve}})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return d


@pytest.mark.slow
def test_exit_0_json_is_the_only_stdout(tmp_path):
    out = tmp_path / "o"
    r = run_cli("convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz",
                "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)          # nothing but JSON on stdout (Keras/TF chatter kept off)
    for key in ("route", "optimization", "ok", "original_bytes", "tflite_bytes", "size_ratio", "num_samples",
                "outputs", "latency_ms", "timings_s", "warnings", "calls"):
        assert key in rep
    assert rep["route"] == "saved_model" and rep["optimization"] == "none" and rep["ok"] is True
    assert rep["num_samples"] == 64
    assert rep["latency_ms"]["tflite"]["median"] > 0 and rep["latency_ms"]["original"]["p90"] > 0
    assert set(rep["timings_s"]) == {"load", "convert", "compare"}
    assert any("from_saved_model" in c for c in rep["calls"])
    assert (out / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert rep["tflite_bytes"] == (out / "model.tflite").stat().st_size
    assert list(np.load(out / "samples.npz").keys()) == ["image"]
    assert json.loads((out / "report.json").read_text()) == rep


@pytest.mark.slow
def test_exit_1_tolerance_failed():
    r = run_cli("convert", SAMPLES / "breast_cancer_mlp.h5", "--route", "keras", "--optimize", "float16",
                "--samples", SAMPLES / "breast_cancer_mlp.samples.csv", "--max-abs-error", "1e-9", "--no-latency")
    assert r.returncode == 1, r.stderr
    assert "FAIL" in r.stdout and "max abs error" in r.stdout


@pytest.mark.parametrize("case", ["missing", "truncated", "csv_as_h5", "wrong_shape", "pickled", "refused_cell"])
def test_exit_2_bad_input(tmp_path, case):
    model = SAMPLES / "digits_cnn.keras"
    extra = []
    if case == "missing":
        model, expect = tmp_path / "nope.keras", "does not exist"
    elif case == "truncated":
        model = tmp_path / "cut.keras"
        model.write_bytes((SAMPLES / "digits_cnn.keras").read_bytes()[:5000])
        expect = "truncated or corrupt zip"
    elif case == "csv_as_h5":
        model = tmp_path / "model.h5"
        model.write_text("a,b,c\n1,2,3\n")
        expect = "CSV text"
    elif case == "wrong_shape":
        np.save(tmp_path / "s.npy", np.zeros((4, 7, 7, 1), np.float32))
        extra, expect = ["--samples", tmp_path / "s.npy"], "input 'image' have shape (4, 7, 7, 1)"
    elif case == "pickled":
        np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        extra, expect = ["--samples", tmp_path / "p.npy"], "pickled"
    else:
        extra, expect = ["--route", "cli", "--optimize", "int8"], "cannot calibrate"
    r = run_cli("convert", model, "--no-latency", *extra)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert expect in one_line_error(r)


@pytest.mark.slow
def test_exit_3_conversion_failed(unconvertible, tmp_path):
    out = tmp_path / "o"
    r = run_cli("convert", unconvertible, "--no-latency", "--out", out)
    assert r.returncode == 3, r.stderr
    line = one_line_error(r)
    assert "saved_model-none failed" in line and "no TFLite builtin" in line
    assert "'MatMul'" in line and "MatMul" in (out / "converter.log").read_text()


@pytest.mark.slow
def test_matrix_out_and_json(tmp_path):
    out = tmp_path / "m"
    r = run_cli("matrix", SAMPLES / "diabetes_regressor_savedmodel.zip", "--samples",
                SAMPLES / "diabetes_regressor.samples.npy", "--routes", "keras", "cli", "saved_model",
                "--optimizations", "none", "int8", "--out", out, "--json", "--no-latency")
    cells = json.loads(r.stdout)
    assert [(c["route"], c["optimization"]) for c in cells] == [
        ("keras", "none"), ("keras", "int8"), ("cli", "none"), ("cli", "int8"),
        ("saved_model", "none"), ("saved_model", "int8")]
    by = {(c["route"], c["optimization"]): c for c in cells}
    assert "needs a Keras model" in by[("keras", "none")]["error"]
    assert "cannot calibrate" in by[("cli", "int8")]["error"]
    assert by[("cli", "none")]["ok"] and by[("saved_model", "none")]["ok"]
    assert sorted(p.name for p in out.iterdir()) == ["cli-none", "saved_model-int8", "saved_model-none"]
    assert (out / "saved_model-int8" / "model.tflite").exists()
    # int8 on this regressor is below 30 dB PSNR (measured 27.6 dB): a tolerance failure, so exit 1, not 0.
    int8 = by[("saved_model", "int8")]
    assert not int8["ok"] and float(int8["outputs"][0]["psnr_db"]) < 30 and r.returncode == 1


def test_inspect_tflite_json(tmp_path):
    out = tmp_path / "o"
    assert run_cli("convert", SAMPLES / "digits_cnn.keras", "--optimize", "dynamic", "--out", out,
                   "--no-latency").returncode == 0
    r = run_cli("inspect", out / "model.tflite", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["format"] == "tflite"
    assert "CONV_2D" in d["inspection"]["operators"] and d["inspection"]["flex_ops"] == []
    assert d["signature"]["inputs"][0]["shape"] == [None, 8, 8, 1]
    assert "TFLite ModelAnalyzer" in d["inspection"]["analysis"]     # TensorFlow's own Analyzer


def test_tflite_compared_against_reference(tmp_path):
    out = tmp_path / "o"
    assert run_cli("convert", SAMPLES / "digits_cnn.keras", "--out", out, "--no-latency").returncode == 0
    r = run_cli("convert", out / "model.tflite", "--reference", SAMPLES / "digits_cnn.keras", "--json",
                "--no-latency")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["optimization"] == "provided" and rep["outputs"][0]["max_abs_error"] < 1e-5
    r = run_cli("convert", out / "model.tflite", "--json")      # alone: run and benchmarked only
    assert r.returncode == 0, r.stderr
    alone = json.loads(r.stdout)
    assert alone["outputs"] == [] and alone["latency_ms"]["tflite"]["median"] > 0
    assert any("not compared" in w for w in alone["warnings"])


def test_tflite_declaring_a_giant_tensor_is_refused_before_allocating(tmp_path):
    """A 936-byte .tflite whose input is 1.5 GB: refused from the flatbuffer, LiteRT never allocates."""
    path = tmp_path / "huge.tflite"
    code = f"""
import tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 20000, 20000], tf.float32, name="huge")])
    def serve(self, x):
        return {{"y": tf.reduce_mean(x, axis=[1, 2])}}
m = M()
open(r"{path}", "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([m.serve.get_concrete_function()], m).convert())
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for cmd in (["inspect", path], ["convert", path, "--no-latency"]):
        r = run_cli(*cmd, env={"TFLITE_LAB_JOB_MEMORY_MB": "1500"})
        assert r.returncode == 2, r.stderr
        line = one_line_error(r)
        assert "huge.tflite declares tensor" in line and "refused before allocating" in line
