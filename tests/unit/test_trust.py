"""Numbers you can trust: every tolerance applies, NaN is never hidden, tensors are matched by name,
quantized I/O is checked with numbers. Each test failed on the code before these fixes.

The models are built here (a subprocess keeps the build's TensorFlow state out of pytest) and are
chosen to break the old shortcuts: a 16-wide linear output that looks like a classifier by shape,
a NaN bias on the second output, two inputs whose names sort against their order.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import SAMPLES, run_cli
from tflite_lab import metrics
from tflite_lab.errors import SignatureError
from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
from tflite_lab.routes import supported_cells
from tflite_lab.runtime import dequantize, match_tensors, quantize
from tflite_lab.sources import source_from_path
from tflite_lab.types import OutputMetrics, TensorInfo, Tolerances

NO_BENCH = BenchSpec(enabled=False)

BUILD = r'''
import sys, numpy as np, keras, tensorflow as tf
out = sys.argv[1]
keras.utils.set_random_seed(0)

# A 16-wide linear head: (samples, 16) like a classifier, but its values are an embedding.
x = keras.Input((8,), name="x")
h = keras.layers.Dense(32, activation="relu")(x)
keras.Model(x, keras.layers.Dense(16, name="embedding")(h)).save(f"{out}/embed16.keras")

# Two outputs; the second has a NaN bias, so only the second output is NaN.
x = keras.Input((6,), name="x")
h = keras.layers.Dense(8, activation="tanh")(x)
probs = keras.layers.Dense(4, activation="softmax", name="probs")(h)
score = keras.layers.Dense(1, name="score")(h)
m = keras.Model(x, [probs, score])
w, b = m.get_layer("score").get_weights()
m.get_layer("score").set_weights([w, np.full_like(b, np.nan)])
m.save(f"{out}/nan_head.keras")
conv = tf.lite.TFLiteConverter.from_keras_model(m)
open(f"{out}/nan_head.tflite", "wb").write(conv.convert())
good = keras.Model(x, probs)
open(f"{out}/probs.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(good).convert())

# Token ids into an embedding of 10 rows.
t = keras.Input((5,), dtype="int32", name="tokens")
keras.Model(t, keras.layers.Dense(2, name="y")(keras.layers.Flatten()(keras.layers.Embedding(10, 3)(t)))).save(f"{out}/tokens.keras")

# Inputs declared zeta, alpha (a SavedModel lists them sorted: alpha, zeta), same shapes; two
# same-shaped outputs whose names sort against their order.
z = keras.Input((4,), name="zeta")
a = keras.Input((4,), name="alpha")
h = keras.layers.Dense(12, activation="tanh")(keras.layers.Concatenate()([z, keras.layers.Dense(4)(a)]))
keras.Model([z, a], [keras.layers.Dense(3, name="zz_scores")(h),
                     keras.layers.Dense(3, activation="softmax", name="aa_probs")(h)]).save(f"{out}/swapped.keras")
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("trust")
    subprocess.run([sys.executable, "-c", BUILD, str(d)], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d


def _prepared(model, **spec):
    return prepare(source_json(source_from_path(model)), SampleSpec(**spec), NO_BENCH)


# ---- judging ----

def test_task_is_detected_from_values_not_shape():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert metrics.detect_task(probs)[0] == "classification"
    assert metrics.detect_task(logits)[0] == "regression"                 # negative values
    assert metrics.detect_task(rng.random((20, 16)))[0] == "regression"   # non-negative, rows don't sum to 1
    assert metrics.detect_task(probs[:, :1])[0] == "regression"           # one column


def _m(name, ref, out):
    return metrics.compare_outputs({name: ref}, {name: out})[0]


def test_a_wide_linear_output_is_judged_by_psnr_and_user_tolerances_apply_on_top():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(64, 16))
    out = ref + rng.normal(scale=0.05, size=ref.shape)       # argmax survives, values do not
    m = _m("embedding", ref, out)
    assert m.top1_agreement > 0.9 and 30 < m.psnr_db < 50
    assert metrics.judge([m], "int8").ok                      # default PSNR 30 dB holds
    v = metrics.judge([m], "int8", Tolerances.for_optimization("int8").override(min_psnr_db=80))
    assert not v.ok and "PSNR" in v.failures[0]
    assert [c.why for c in v.checks if c.metric == "min_psnr_db"] == ["set by you"]


def test_user_tolerances_reach_classifier_outputs_and_tasks_can_be_overridden():
    probs = np.eye(4)[[0, 1, 2, 3] * 8] * 0.9 + 0.025
    noisy = probs + np.random.default_rng(2).normal(scale=0.02, size=probs.shape)
    m = _m("probs", probs, noisy)
    base = Tolerances.for_optimization("int8")
    v = metrics.judge([m], "int8", base)
    assert v.ok and {c.metric for c in v.checks} == {"min_top1"}       # by default: top-1 only
    v = metrics.judge([m], "int8", base.override(min_psnr_db=60))
    assert not v.ok and {c.metric for c in v.checks} == {"min_top1", "min_psnr_db"}
    v = metrics.judge([m], "int8", base.override(tasks={"probs": "regression"}))
    assert {c.metric for c in v.checks} == {"min_psnr_db"} and v.tasks["probs"] == ("regression", "set by you")
    with pytest.raises(Exception, match="outputs are probs"):
        metrics.judge([m], "int8", base.override(tasks={"nope": "regression"}))


def test_user_top1_applies_to_logits_too():
    logits = np.random.default_rng(3).normal(size=(40, 5))
    flipped = logits.copy()
    flipped[:20] = -flipped[:20]                               # half the argmaxes change
    m = _m("logits", logits, flipped)
    assert m.task == "regression"
    v = metrics.judge([m], "int8", Tolerances.for_optimization("int8").override(min_top1=0.9))
    assert any(c.metric == "min_top1" and not c.ok for c in v.checks)


@pytest.mark.slow
def test_cli_int8_embedding_fails_min_psnr(models, tmp_path):
    r = run_cli("convert", models / "embed16.keras", "--optimize", "int8", "--min-psnr", "80", "--json",
                "--no-latency", "--num-samples", "128", "--low", "-1")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)["outputs"][0]
    assert out["task"] == "regression" and out["psnr_db"] < 80
    assert any(c["metric"] == "min_psnr_db" and c["why"] == "set by you" and not c["ok"] for c in out["checks"])
    # Declared a classifier, it is judged by top-1 as well (which holds), and still by the PSNR the user set.
    r = run_cli("convert", models / "embed16.keras", "--optimize", "int8", "--min-psnr", "80", "--json",
                "--no-latency", "--num-samples", "128", "--low", "-1", "--task", "embedding=classification")
    out = json.loads(r.stdout)["outputs"][0]
    assert {c["metric"] for c in out["checks"]} == {"min_top1", "min_psnr_db"} and r.returncode == 1
    bad = run_cli("convert", models / "embed16.keras", "--task", "emb=regression", "--no-latency")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --task names output(s) emb, but the model's outputs are embedding."]


# ---- NaN and inf ----

def test_worst_keeps_nan_wherever_it_is():
    assert math.isnan(metrics.worst([0.1, float("nan")])) and math.isnan(metrics.worst(["inf", "nan", 3]))
    assert metrics.worst([0.1, "inf"]) == math.inf and metrics.worst([0.5, 0.2], lowest=True) == 0.2
    assert metrics.worst([None]) is None


@pytest.mark.slow
def test_nan_in_the_second_output_fails_and_shows(models):
    r = run_cli("convert", models / "nan_head.keras", "--json", "--no-latency", "--num-samples", "16")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    by = {o["name"]: o for o in rep["outputs"]}
    assert by["score"]["max_abs_error"] == "nan" and by["probs"]["max_abs_error"] != "nan"
    assert any(f.startswith("score: outputs contain NaN") for f in rep["failures"])
    m = run_cli("matrix", models / "nan_head.keras", "--routes", "saved_model", "--optimizations", "none",
                "--no-latency", "--num-samples", "16")
    row = next(ln for ln in m.stdout.splitlines() if ln.startswith("saved_model-none"))
    assert row.split()[1] == "FAIL" and row.split()[3] == "nan", m.stdout
    assert m.returncode == 1


@pytest.mark.slow
def test_tflite_alone_is_not_a_pass(models):
    r = run_cli("convert", models / "probs.tflite", "--no-latency", "--num-samples", "8")
    assert r.returncode == 0, r.stderr
    assert "RAN, NO REFERENCE" in r.stdout and "PASS" not in r.stdout
    r = run_cli("convert", models / "nan_head.tflite", "--no-latency", "--num-samples", "8", "--json")
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "fail" and rep["outputs"] == []
    stats = {s["name"]: s for s in rep["output_stats"]}
    assert [s["nonfinite"] for s in stats.values()].count(8) == 1, stats     # every score NaN, probs fine
    assert any("NaN or inf" in f for f in rep["failures"])


@pytest.mark.slow
def test_samples_the_original_rejects_are_bad_input_not_an_internal_error(models):
    r = run_cli("convert", models / "tokens.keras", "--high", "10", "--no-latency", "--num-samples", "32")
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    # --high 10 overrides the vocabulary the Embedding declares (ids 0-9): the original refuses id 10.
    assert line.startswith("error: The original model fails on these samples (random, seed 0: tokens ids 0–10 "
                           "(--low/--high; the model declares ids 0–9 from Embedding") and "is not in [0, 10)" in line
    assert run_cli("convert", models / "tokens.keras", "--no-latency", "--num-samples", "32").returncode == 0
    assert run_cli("convert", models / "tokens.keras", "--high", "9", "--no-latency", "--num-samples", "32").returncode == 0


# ---- matching ----

def _t(name, shape, key=None, dtype="float32"):
    return TensorInfo(name, shape, dtype, key or name)


def test_match_by_decorated_name_v1_numbering_shape_then_refuse():
    ref = (_t("zeta", (None, 4)), _t("alpha", (None, 4)))
    got, notes = match_tensors("input", ref, (_t("serving_default_alpha:0", (1, 4)), _t("serving_default_zeta:0", (1, 4))))
    assert got == {"zeta": "serving_default_zeta:0", "alpha": "serving_default_alpha:0"} and len(notes) == 2
    outs = (_t("zz", (None, 3), "output_0"), _t("aa", (None, 3), "output_1"))
    got, _ = match_tensors("output", outs, (_t("StatefulPartitionedCall_1:1", (1, 3)), _t("StatefulPartitionedCall_1", (1, 3))))
    assert got == {"zz": "StatefulPartitionedCall_1", "aa": "StatefulPartitionedCall_1:1"}
    got, notes = match_tensors("output", (_t("a", (None, 3)), _t("b", (None, 1))), (_t("t0", (1, 1)), _t("t1", (1, 3))))
    assert got == {"a": "t1", "b": "t0"} and all("by shape and dtype" in n for n in notes)
    with pytest.raises(SignatureError, match="Cannot tell which .tflite output is which: the original's a, b"):
        match_tensors("output", (_t("a", (None, 3)), _t("b", (None, 3))), (_t("t0", (1, 3)), _t("t1", (1, 3))))
    got, notes = match_tensors("output", (_t("a", (None, 2, 3)),), (_t("t0", (1, 5)),))
    assert got == {"a": "t0"} and notes[0].startswith("warning: ") and "position" in notes[0]


@pytest.mark.slow
@pytest.mark.parametrize("route,opt", [(r.value, o.value) for r, o in supported_cells("keras")])
def test_reordered_inputs_every_cell_passes(models, route, opt):
    p = _prepared(models / "swapped.keras", count=48, seed=1)
    rep = judge_report(run_cell(p, route, opt, bench=NO_BENCH))
    assert rep["ok"], (rep["failures"], rep.get("matching"))
    by = {m["name"]: m for m in rep["metrics"]}
    assert by["aa_probs"]["task"] == "classification" and by["zz_scores"]["task"] == "regression"
    if opt == "none":       # crossed inputs or outputs would be far off, not 1e-6
        assert max(float(m["max_abs_error"]) for m in rep["metrics"]) < 1e-5


# ---- quantized I/O ----

def test_quantize_and_dequantize_by_hand():
    i8 = {"dtype": np.int8, "quantization": (0.5, -3)}
    x = np.array([0.0, 1.0, -1.26, 63.0, 1000.0, -1000.0], dtype=np.float32)
    # x / 0.5 - 3, rounded half to even, clipped to [-128, 127]
    assert quantize(x, i8).tolist() == [-3, -1, -6, 123, 127, -128]
    assert dequantize(np.array([-3, -1, 127, -128], np.int8), i8).tolist() == [0.0, 1.0, 65.0, -62.5]
    u8 = {"dtype": np.uint8, "quantization": (1 / 255, 0)}
    assert quantize(np.array([0.0, 0.5, 1.0, 2.0, -1.0]), u8).tolist() == [0, 128, 255, 255, 0]
    i16 = {"dtype": np.int16, "quantization": (0.001, 0)}
    assert quantize(np.array([0.0123, 40.0]), i16).tolist() == [12, 32767]
    f32 = {"dtype": np.float32, "quantization": (0.0, 0)}
    assert quantize(np.array([0.3]), f32).dtype == np.float32 and dequantize(np.array([0.3]), f32)[0] == 0.3


@pytest.mark.slow
def test_int8_io_within_one_step_of_float_io():
    from ai_edge_litert.interpreter import Interpreter
    p = _prepared(SAMPLES / "digits_cnn.keras", path=str(SAMPLES / "digits_cnn.samples.npz"))
    flt = run_cell(p, "saved_model", "int8", bench=NO_BENCH)
    i8 = run_cell(p, "saved_model", "int8", int8_io=True, bench=NO_BENCH)
    it = Interpreter(model_path=i8["tflite_path"])
    (out,) = it.get_signature_runner("serving_default").get_output_details().values()
    assert out["dtype"] == np.int8
    step = out["quantization"][0]
    a, b = np.load(flt["predictions_path"])["probs"], np.load(i8["predictions_path"])["probs"]
    # Same calibration, same graph: the int8 output tensor differs only by its final (de)quantization.
    assert np.max(np.abs(a - b)) <= step * 1.001, (np.max(np.abs(a - b)), step)
    assert 0 < step < 0.01


def test_conversion_leaves_the_shared_keras_model_unchanged():
    """The conversions share one loaded model per worker (models._OPENED); none may change it."""
    from tflite_lab import pipeline
    from tflite_lab.config import Limits
    src = source_from_path(SAMPLES / "digits_cnn.keras")
    # 50 of the 64 samples: a calibration set no other test uses, so these conversions really run.
    p = prepare(source_json(src), SampleSpec(path=str(SAMPLES / "digits_cnn.samples.npz"), count=50), NO_BENCH)
    shared = pipeline._open(src, Limits.from_env()).keras_model
    before = [w.copy() for w in shared.get_weights()]
    for route in ("keras", "saved_model", "concrete_function"):
        assert run_cell(p, route, "int8", bench=NO_BENCH)["cached"] is False
    assert pipeline._open(src, Limits.from_env()).keras_model is shared
    for w0, w1 in zip(before, shared.get_weights()):
        np.testing.assert_array_equal(w0, w1)
    x = np.load(p["samples_path"])["image"]
    np.testing.assert_allclose(shared.predict(x, verbose=0), np.load(p["reference_path"])["probs"], atol=1e-6)


def test_psnr_against_a_known_value():
    """PSNR from a case worked out by hand, not from the product's own formula: range 1, rmse 0.01 -> 40 dB."""
    ref = np.linspace(0.0, 1.0, 101).reshape(1, -1)
    out = ref + np.where(np.arange(101) % 2, 0.01, -0.01)
    assert metrics.psnr_db(ref, out) == pytest.approx(40.0, abs=1e-9)
    assert OutputMetrics.from_json(_m("y", ref, out).to_json()).psnr_db == pytest.approx(40.0, abs=1e-9)


@pytest.mark.slow
def test_a_recipe_that_changed_nothing_says_so(models):
    """Dynamic range skips weight tensors under 1024 elements, silently: on embed16 (8x32 and 32x16
    weights) its .tflite is the float one (same tensors, same size), and the report says why. Where the
    recipe took effect (float16 here; dynamic on digits_cnn, whose dense kernel is large) it says nothing."""
    from tflite_lab.inspect import inspect_tflite
    from pathlib import Path
    small = _prepared(models / "embed16.keras", count=8, seed=1)
    dyn = run_cell(small, "saved_model", "dynamic", bench=NO_BENCH)
    flt = run_cell(small, "saved_model", "none", bench=NO_BENCH)
    dtypes = lambda r: sorted(t["dtype"] for t in inspect_tflite(Path(r["tflite_path"]).read_bytes()).tensors)  # noqa: E731
    assert dtypes(dyn) == dtypes(flt) and abs(dyn["tflite_bytes"] - flt["tflite_bytes"]) < 64
    assert any(w.startswith("The dynamic recipe changed nothing") and "1024 elements" in w for w in dyn["warnings"])
    assert not any("changed nothing" in w for w in flt["warnings"])
    f16 = run_cell(small, "saved_model", "float16", bench=NO_BENCH)
    assert not any("changed nothing" in w for w in f16["warnings"])
    big = run_cell(_prepared(SAMPLES / "digits_cnn.keras", count=8, seed=1), "saved_model", "dynamic", bench=NO_BENCH)
    assert any(t["dtype"] == "int8" for t in inspect_tflite(Path(big["tflite_path"]).read_bytes()).tensors)
    assert not any("changed nothing" in w for w in big["warnings"])
