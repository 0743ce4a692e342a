"""Per-layer error and its fix on a model built to break int8 in one known layer: the debugger ranks
that layer first, keeping it float restores agreement and accuracy, the sweep marks that step; the
accumulated SNR and the overlay keys are checked against the .tflite files themselves."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lab_helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def debugged(sensitive_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("debug-out")
    r = run_cli("debug", sensitive_model / "sensitive.keras", "--samples", sensitive_model / "sensitive.samples.npz",
                "--min-accuracy-delta", "-0.01", "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), out


def _run(path, x):
    from ai_edge_litert.interpreter import Interpreter
    run = Interpreter(model_path=str(path)).get_signature_runner()
    return np.concatenate([next(iter(run(x=x[i:i + 1]).values())) for i in range(len(x))])


def test_the_sensitive_layer_is_ranked_first_and_suggested(debugged):
    d, _ = debugged
    first, rest = d["layers"][0], d["layers"][1:]
    assert "sensitive" in first["tensor"] and first["op"] == "FULLY_CONNECTED" and first["dtype"] == "int8"
    assert first["rmse_per_scale"] > 10 and all((r["rmse_per_scale"] or 0) < 1 for r in rest)
    assert first["scale"] > 0 and first["zero_point"] is not None
    assert d["suggested_float"] == [first["tensor"]] and d["basis"] == "isolated"


def test_sweep_keeps_it_float_and_marks_that_step(debugged):
    d, out = debugged
    k0, k1 = d["sweep"][0], d["sweep"][1]
    assert k0["k"] == 0 and not k0["ok"] and k0["top1_agreement"] < 0.5 and k0["accuracy"] < 0.5
    assert k1["float_layers"] == [d["layers"][0]["tensor"]] and k1["ok"] and k1.get("best") and d["best_step"] == 1
    assert k1["top1_agreement"] >= 0.95 and k1["accuracy"] >= 0.99 and k1["tflite_bytes"] > k0["tflite_bytes"]
    model = d["model"]
    assert model["cell"] == "saved_model-int8 (1 float)" and model["ok"]
    assert [o["tensor"] for o in model["float_ops"]] == k1["float_layers"]
    assert model["float_cost_bytes"] == k1["tflite_bytes"] - k0["tflite_bytes"]
    assert model["accuracy"]["check"]["ok"] and model["accuracy"]["delta"] >= -0.01
    # The written model is the one reported: re-run it here.
    z = np.load(out / "samples.npz")
    probs = _run(out / "model.tflite", z["x"])
    assert float(np.mean(probs.argmax(1) == np.load(out / "labels.npy"))) == model["accuracy"]["tflite"]
    script = (out / "reproduce.py").read_text()       # the debugger and the chosen model, outside TFLite Lab
    assert "layer_statistics_dump" in script and f"denylisted_nodes={k1['float_layers']!r}" in script
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert [r["best"] for r in rows] == ["False", "True"]
    assert len(list(csv.DictReader(open(out / "layers.csv")))) == len(d["layers"])


def test_accumulated_snr_of_the_output_recomputed_with_numpy(debugged):
    d, out = debugged
    x = np.load(out / "samples.npz")["x"][:16]          # validate() compares the first 16 samples
    ref, got = _run(out / "float.tflite", x).astype(np.float64), _run(out / "quantized.tflite", x).astype(np.float64)
    snr = np.mean([np.mean(r ** 2) / (np.mean((g - r) ** 2) + 1e-9) for r, g in zip(ref, got)])
    from tflite_lab.inspect import op_graph
    output = op_graph((out / "float.tflite").read_bytes())[-1]["outputs"][0]
    row = next(r for r in d["layers"] if r["tensor"] == output)
    assert row["snr_db"] == pytest.approx(10 * np.log10(snr), rel=1e-4, abs=1e-6)


def test_overlay_is_keyed_by_the_float_models_tensor_names(debugged):
    d, out = debugged
    from tflite_lab.inspect import inspect_tflite
    names = {t["name"] for t in inspect_tflite((out / "float.tflite").read_bytes()).tensors}
    overlay = json.loads((out / "overlay.json").read_text())["main"]
    assert set(overlay["results"]) <= names and d["layers"][0]["tensor"] in overlay["results"]
    assert overlay["results"][d["layers"][0]["tensor"]]["value"] == d["layers"][0]["rmse_per_scale"]
    assert "model-explorer float.tflite --node_data_paths=overlay.json" in d["model_explorer_command"]


def test_keep_float_by_name_and_unknown_names_refused(sensitive_model, debugged):
    d, _ = debugged
    args = ["convert", sensitive_model / "sensitive.keras", "--samples", sensitive_model / "sensitive.samples.npz",
            "--optimize", "int8", "--no-latency"]
    r = run_cli(*args, "--keep-float", d["layers"][0]["tensor"], "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cell"] == "saved_model-int8 (1 float)" and rep["keep_float"] == [d["layers"][0]["tensor"]]
    assert rep["outputs"][0]["top1_agreement"] >= 0.95 and rep["tflite_bytes"] == d["sweep"][1]["tflite_bytes"]
    r = run_cli(*args, "--keep-float", "sensitive")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "no op of the model outputs" in r.stderr and d["layers"][0]["tensor"] in r.stderr   # did you mean


def test_a_recipe_the_tf_debugger_cannot_take_falls_back_to_the_accumulated_view(sensitive_model):
    r = run_cli("debug", sensitive_model / "sensitive.keras", "--samples", sensitive_model / "sensitive.samples.npz",
                "--optimize", "int16x8", "--json", "--no-history")
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    assert d["views"] == {"isolated": False, "accumulated": True} and d["basis"] == "accumulated"
    assert any("QuantizationDebugger analyses only full-integer int8" in n for n in d["notes"])
    assert "sensitive" in d["layers"][0]["tensor"] and d["layers"][0]["dtype"] == "int16"
    assert [s["k"] for s in d["sweep"]] == [0]           # keeping layers float with TF needs int8


def test_a_tensor_equal_to_the_float_one_is_exact_whatever_its_power(debugged):
    # ai-edge-quantizer's SNR of an exact tensor is mean(ref²)/1e-9 (its epsilon): a number set by the
    # signal's power (an all-False mask gave -inf dB and ranked first). Exact means inf and no noise.
    from tflite_lab.inspect import op_graph
    from tflite_lab.layerwise import accumulated_statistics, layer_table
    _, out = debugged
    f = (out / "float.tflite").read_bytes()
    acc = accumulated_statistics(f, f, {"x": np.load(out / "samples.npz")["x"]}, {"x": "x"})
    assert acc and all(a["mse"] == 0 and a["snr_db"] == float("inf") for a in acc.values())
    rows = layer_table(op_graph(f), op_graph(f), None, acc)
    assert all(r["noise_added"] == 0 and r["snr_drop_db"] == 0 for r in rows if r["noise_added"] is not None)
