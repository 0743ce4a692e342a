"""ai-edge-quantizer as the second quantizer: where TensorFlow's 16x8 fails on token ids ("Empty
min/max"), the error says whether aeq succeeds; aeq keeps chosen layers float and the model's I/O float."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lab_helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokens")
    code = f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
x = keras.Input((6,), dtype="int32", name="ids")
h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 8)(x))
keras.Model(x, keras.layers.Dense(3, activation="softmax")(h)).save(r"{d}/tok.keras")
np.savez(r"{d}/tok.npz", ids=np.random.default_rng(0).integers(0, 20, (32, 6)).astype("int32"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d


def test_tf_16x8_fails_on_token_ids_and_says_aeq_succeeds(token_model):
    r = run_cli("convert", token_model / "tok.keras", "--samples", token_model / "tok.npz", "--optimize", "int16x8",
                "--no-latency", "--no-history")
    assert r.returncode == 3, r.stderr
    line, = r.stderr.strip().splitlines()
    assert "no value range for tensor serving_default_ids:0" in line
    assert "ai-edge-quantizer succeeds: aeq-int16x8" in line and "(--quantizer aeq)" in line


def test_aeq_keeps_the_sensitive_layer_float_with_float_io(sensitive_model, tmp_path):
    from tflite_lab.inspect import inspect_tflite
    probe = run_cli("debug", sensitive_model / "sensitive.keras", "--samples", sensitive_model / "sensitive.samples.npz",
                    "--quantizer", "aeq", "--optimize", "int8", "--json", "--no-history", "--out", tmp_path / "dbg")
    assert probe.returncode == 0, probe.stderr
    d = json.loads(probe.stdout)
    assert d["basis"] == "accumulated" and "sensitive" in d["layers"][0]["tensor"]      # ranked by noise added
    assert d["suggested_float"][:1] == [d["layers"][0]["tensor"]]
    step = d["sweep"][d["best_step"]]
    assert step["float_layers"] == [d["layers"][0]["tensor"]] and step["top1_agreement"] >= 0.95
    model = d["model"]
    assert model["cell"] == "aeq-int8 (1 float)" and [o["tensor"] for o in model["float_ops"]] == step["float_layers"]
    insp = inspect_tflite((tmp_path / "dbg" / "model.tflite").read_bytes())
    assert [t["dtype"] for t in insp.inputs + insp.outputs] == ["float32", "float32"]       # float I/O kept
    assert insp.quantized_tensors > 0


def test_debug_16x8_on_token_ids_says_whether_aeq_succeeds(token_model):
    r = run_cli("debug", token_model / "tok.keras", "--samples", token_model / "tok.npz", "--optimize", "int16x8",
                "--no-history")
    assert r.returncode == 3, r.stderr
    line, = r.stderr.strip().splitlines()
    assert "no value range for tensor serving_default_ids:0" in line and "ai-edge-quantizer succeeds: aeq-int16x8" in line


def test_matrix_says_whether_aeq_succeeds_without_aeq_cells(token_model):
    """Only TF cells asked for: the failing 16x8 cell still says what ai-edge-quantizer does (one probe)."""
    r = run_cli("matrix", token_model / "tok.keras", "--samples", token_model / "tok.npz", "--routes", "keras",
                "--optimizations", "none", "int16x8", "--no-latency", "--no-history", "--json")
    assert r.returncode in (0, 1), r.stderr
    cells = {c.get("cell") or f"{c['route']}-{c['optimization']}": c for c in json.loads(r.stdout)}
    assert set(cells) == {"keras-none", "keras-int16x8"}          # the probe adds no aeq cell
    bad = cells["keras-int16x8"]
    assert "no value range" in bad["error"]
    assert bad["aeq"].startswith("ai-edge-quantizer succeeds: aeq-int16x8") and "aeq" not in cells["keras-none"]
