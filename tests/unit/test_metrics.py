"""Metrics: formulas and edge cases, and the reported numbers recomputed independently."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tflite_lab import metrics
from tflite_lab.types import Optimization, OutputMetrics, Tolerances

from lab_helpers import SAMPLES, run_cli


def test_identical_outputs():
    a = np.random.default_rng(0).random((10, 4))
    assert metrics.max_abs_error(a, a) == 0 and metrics.rmse(a, a) == 0
    assert metrics.cosine(a, a) == pytest.approx(1.0)
    assert metrics.psnr_db(a, a) == math.inf
    assert metrics.top1_agreement(a, a) == 1.0


def test_nan_is_reported_not_cleaned():
    a = np.ones((3, 4))
    b = a.copy()
    b[1, 2] = np.nan
    assert math.isnan(metrics.max_abs_error(a, b)) and math.isnan(metrics.cosine(a, b))
    m = metrics.compare_outputs({"y": a}, {"y": b})[0]
    v = metrics.judge([m], Optimization.NONE)
    assert not v.ok and "NaN" in v.failures[0]


def test_zero_norm_and_empty():
    z = np.zeros((2, 3))
    assert metrics.cosine(z, z) == 1.0 and metrics.cosine(z, np.ones((2, 3))) == 0.0
    e = np.zeros((0, 3))
    assert metrics.max_abs_error(e, e) == 0.0 and metrics.psnr_db(e, e) == math.inf


def test_top5_and_regression_outputs():
    ref = np.eye(6)[[0, 1, 2, 3]]
    out = ref[:, ::-1].copy()
    assert metrics.top1_agreement(ref, out) == 0.0
    assert metrics.top5_agreement(ref, out) == 1.0
    assert metrics.top1_agreement(np.ones((4, 1)), np.ones((4, 1))) is None


def test_judge_defaults_by_recipe():
    m = OutputMetrics("y", 0.005, 0.001, 0.002, 0.999, 45.0, top1_agreement=0.97)
    assert not metrics.judge([m], "none").ok            # 5e-3 > 1e-4
    assert metrics.judge([m], "float16").ok             # <= 1e-2
    assert metrics.judge([m], "int8").ok                # top-1 0.97 >= 0.95
    assert not metrics.judge([m], "int8", Tolerances.for_optimization("int8").override(min_top1=0.99)).ok
    reg = OutputMetrics("r", 3.0, 1.0, 1.5, 0.99, 28.0)
    assert not metrics.judge([reg], "dynamic").ok       # PSNR 28 < 30
    big = OutputMetrics("r", 3.7e-4, 1e-4, 1e-4, 1.0, 120.0, reference_max_abs=346.0)
    assert metrics.judge([big], "none").ok              # 3.7e-4 <= 1e-4 x 346: float32 noise at scale 346
    explicit = Tolerances.for_optimization("none").override(max_abs_error=1e-4)
    assert not metrics.judge([big], "none", explicit).ok   # a tolerance the user sets is absolute


@pytest.mark.slow
def test_reported_metrics_recomputed_with_numpy(tmp_path):
    """Run the CLI, then recompute every metric from samples.npz and model.tflite alone."""
    out = tmp_path / "out"
    r = run_cli("convert", SAMPLES / "multi_io.keras", "--optimize", "int8", "--samples",
                SAMPLES / "multi_io.samples.npz", "--out", out, "--json", "--no-latency")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert json.loads((out / "report.json").read_text()) == report
    import keras
    from ai_edge_litert.interpreter import Interpreter
    samples = dict(np.load(out / "samples.npz"))
    model = keras.models.load_model(SAMPLES / "multi_io.keras", safe_mode=True, compile=False)
    ref = dict(zip(model.output_names, model.predict([samples["image"], samples["stats"]], verbose=0)))
    it = Interpreter(model_path=str(out / "model.tflite"))
    runner = it.get_signature_runner("serving_default")
    got = runner(image=samples["image"], stats=samples["stats"])
    tfl = {"digit": got["output_0"], "ink": got["output_1"]}
    # The reference is a second Keras run here: its float32 sums may land ~1e-8 apart from the worker's.
    for o in report["outputs"]:
        a, b = ref[o["name"]].astype(np.float64), tfl[o["name"]].astype(np.float64)
        d = np.abs(a - b)
        assert o["max_abs_error"] == pytest.approx(d.max(), rel=1e-5, abs=1e-7)
        assert o["mean_abs_error"] == pytest.approx(d.mean(), rel=1e-5, abs=1e-7)
        assert o["rmse"] == pytest.approx(np.sqrt((d ** 2).mean()), rel=1e-5, abs=1e-7)
        assert o["cosine"] == pytest.approx(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-5)
        psnr = 20 * np.log10((a.max() - a.min()) / np.sqrt((d ** 2).mean()))
        assert o["psnr_db"] == pytest.approx(psnr, rel=1e-5)
        if o["name"] == "digit":
            assert o["top1_agreement"] == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))
        else:
            assert o["top1_agreement"] is None


def test_headline_top1_is_over_classifier_outputs_only():
    """A 3-wide box head's argmax agreement (0.5) must not stand for the classifier's (1.0); NaN stays."""
    from tflite_lab.metrics import headline_top1
    outs = [{"name": "box", "task": "regression", "top1_agreement": 0.5},
            {"name": "cls", "task": "classification", "top1_agreement": 1.0}]
    assert headline_top1(outs) == 1.0
    assert headline_top1(outs[:1]) is None
    assert math.isnan(headline_top1(outs + [{"task": "classification", "top1_agreement": "nan"}]))
    assert headline_top1([{"top1_agreement": 0.9}]) == 0.9          # an older record without its task
