"""Every route x recipe cell of the capability table, on real sample models, with numbers checked.

Supported cells assert error and size together; refused cells assert the refusal message.
"""
from __future__ import annotations

import numpy as np
import pytest

from tflite_lab.errors import UnsupportedCombination
from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
from tflite_lab.routes import refusal
from tflite_lab.sources import source_from_path
from tflite_lab.types import Optimization, Route

from lab_helpers import SAMPLES

NO_BENCH = BenchSpec(enabled=False)
MODELS = {
    "digits_cnn": ("digits_cnn.keras", "digits_cnn.samples.npz"),
    "multi_io": ("multi_io.keras", "multi_io.samples.npz"),
    "diabetes": ("diabetes_regressor_savedmodel.zip", "diabetes_regressor.samples.npy"),
}
# Error bounds per recipe for these trained models (measured, with margin): a broken conversion
# (NaN model, wrong scale, mixed-up outputs) lands orders of magnitude outside them.
MAX_ABS_PROBS = {"none": 1e-5, "dynamic": 0.05, "float16": 0.01, "int8": 0.15, "int16x8": 0.05}


@pytest.fixture(scope="module")
def prepared():
    cache = {}

    def get(name):
        if name not in cache:
            model, samples = MODELS[name]
            src = source_from_path(SAMPLES / model)
            cache[name] = prepare(source_json(src), SampleSpec(path=str(SAMPLES / samples)), NO_BENCH)
        return cache[name]
    return get


CELLS = [(m, r.value, o.value) for m in ("digits_cnn", "multi_io") for r in Route for o in Optimization]


@pytest.mark.slow
@pytest.mark.parametrize("model,route,opt", CELLS, ids=[f"{m}-{r}-{o}" for m, r, o in CELLS])
def test_cell(prepared, model, route, opt):
    p = prepared(model)
    fmt = p["source"]["format"]
    reason = refusal(route, opt, fmt)
    if reason:
        with pytest.raises(UnsupportedCombination, match="cannot calibrate"):
            run_cell(p, route, opt, bench=NO_BENCH)
        return
    rep = judge_report(run_cell(p, route, opt, bench=NO_BENCH))
    metrics = {m["name"]: m for m in rep["metrics"]}
    probs = metrics["probs" if model == "digits_cnn" else "digit"]
    assert probs["max_abs_error"] <= MAX_ABS_PROBS[opt], probs
    assert probs["top1_agreement"] >= 0.95
    assert probs["cosine"] > 0.99
    assert rep["ok"], rep["failures"]
    # Size goes with the recipe: weights in 8 bits are well under half the float32 model.
    none_bytes = run_cell(p, route if refusal(route, "none", fmt) is None else "saved_model", "none",
                          bench=NO_BENCH)["tflite_bytes"]
    ratio = rep["tflite_bytes"] / none_bytes
    expected = {"none": (1.0, 1.0), "float16": (0.45, 0.75), "dynamic": (0.2, 0.45),
                "int8": (0.2, 0.45), "int16x8": (0.2, 0.5)}[opt]
    assert expected[0] <= ratio <= expected[1], (opt, ratio)
    assert rep["num_samples"] == 64


def test_saved_model_source_refuses_keras_route(prepared):
    p = prepared("diabetes")
    with pytest.raises(UnsupportedCombination, match="needs a Keras model"):
        run_cell(p, "keras", "none", bench=NO_BENCH)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["saved_model", "concrete_function", "cli"])
def test_saved_model_source_routes(prepared, route):
    rep = judge_report(run_cell(prepared("diabetes"), route, "none", bench=NO_BENCH))
    m = rep["metrics"][0]
    assert m["top1_agreement"] is None          # a regression output
    assert m["max_abs_error"] < 1e-3 and m["psnr_db"] > 80
    assert rep["ok"]


def test_concrete_function_is_not_the_nan_trap(prepared):
    """from_concrete_functions with the Keras model as trackable yields a ~2 KB NaN model; ours carries weights."""
    rep = run_cell(prepared("digits_cnn"), "concrete_function", "none", bench=NO_BENCH)
    assert rep["tflite_bytes"] > 100_000
    assert np.isfinite(rep["metrics"][0]["max_abs_error"]) and rep["metrics"][0]["max_abs_error"] < 1e-5


def test_same_bytes_same_settings_not_redone(prepared):
    p = prepared("digits_cnn")
    first = run_cell(p, "saved_model", "dynamic", bench=NO_BENCH)
    again = run_cell(p, "saved_model", "dynamic", bench=NO_BENCH)
    assert again["cached"] is True
    assert again["metrics"] == first["metrics"]        # the same .tflite on the same samples
    assert again["cached_at"] == first["converted_at"]
    assert again["tflite_bytes"] == first["tflite_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["none", "int8"])
def test_lstm_converts_to_builtins_with_fixed_batch(opt):
    src = source_from_path(SAMPLES / "digits_lstm.keras")
    p = prepare(source_json(src), SampleSpec(path=str(SAMPLES / "digits_lstm.samples.npz")), NO_BENCH)
    assert p["fixed_batch"] is True
    rep = judge_report(run_cell(p, "saved_model", opt, bench=NO_BENCH))
    assert rep["ok"], rep["failures"]
    assert not rep["inspection"]["flex_ops"]
    assert any("fixed batch of 1" in w for w in rep["warnings"])
    if opt == "none":
        assert rep["metrics"][0]["max_abs_error"] < 1e-5


def test_legacy_tf_keras_h5_converts(tiny_models):
    src = source_from_path(tiny_models / "legacy.h5")
    p = prepare(source_json(src), SampleSpec(count=16), NO_BENCH)
    rep = judge_report(run_cell(p, "keras", "none", bench=NO_BENCH))
    assert rep["ok"] and rep["metrics"][0]["max_abs_error"] < 1e-5


@pytest.mark.parametrize("fmt", ["multi.keras", "multi.h5", "multi_sm.zip", "multi_sm"])
def test_every_source_format_multi_io(tiny_models, fmt):
    src = source_from_path(tiny_models / fmt)
    p = prepare(source_json(src), SampleSpec(count=20, seed=3), NO_BENCH)
    names = sorted(t["name"] for t in p["signature"]["inputs"])
    assert names == ["a", "b"]
    rep = judge_report(run_cell(p, "concrete_function", "none", bench=NO_BENCH))
    assert len(rep["metrics"]) == 2 and rep["ok"], rep["failures"]
