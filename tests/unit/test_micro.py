"""The micro target on TFLite Micro's real interpreter, on models built here (issue 17)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import ROOT, build_models

pytestmark = pytest.mark.slow

BUILD = """
import numpy as np, keras
keras.utils.set_random_seed(0)
x = keras.Input((12, 12, 2), name="img")
h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
h = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(40, activation="relu", name="fc")(h)     # 864x40 weights: dynamic range quantizes them
y = keras.layers.Dense(4, activation="softmax", name="probs")(h)
keras.Model(x, y).save(r"{d}/cnn.keras")
a = keras.Input((6,), name="a"); b = keras.Input((4, 4, 1), name="b")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))])
h = keras.layers.Dense(16, activation="relu")(h)
keras.Model([b, a], [keras.layers.Dense(5, activation="softmax", name="cls")(h),
                     keras.layers.Dense(1, name="reg")(h)]).save(r"{d}/multi.keras")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(BUILD, tmp_path_factory.mktemp("micro"))


@pytest.fixture(scope="module")
def cells(models):
    """{(model, recipe): judged report} with the micro target, one conversion each."""
    from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    off = BenchSpec(enabled=False)
    prepared = {m: prepare(source_json(source_from_path(models / f"{m}.keras")), SampleSpec(count=8), off)
                for m in ("cnn", "multi")}
    out = {}
    for m, opt, opts in (("cnn", "int8", {"board": "nano33ble"}), ("cnn", "none", {}), ("cnn", "int16x8", {}),
                         ("cnn", "dynamic", {}), ("multi", "int8", {"ram_kb": 2, "flash_kb": 4096})):
        out[m, opt] = judge_report(run_cell(prepared[m], "keras", opt, bench=off, targets={"micro": opts}))
    return out


def _micro(rep):
    from tflite_lab.pipeline import report_json
    return report_json(rep)["targets"]["micro"]


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_int8_cnn_runs_passes_and_numbers_recompute(cells):
    rep = cells["cnn", "int8"]
    t = _micro(rep)
    assert t["runs"] and t["verdict"] == "pass" and rep["ok"], t.get("error")
    ops = {o["op"]: o for o in t["ops"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(ops)
    assert all(o["runs_on_micro"] is True for o in t["ops"]) and t["float_ops"] == []
    # Metrics recomputed with numpy from the reference and TFLM's own outputs.
    ref, tflm = _npz(rep["reference_path"]), _npz(t["outputs_path"])
    for o in t["outputs"]:
        d = np.abs(ref[o["name"]].astype(np.float64) - tflm[o["name"]].astype(np.float64))
        assert o["max_abs_error"] == pytest.approx(float(d.max()), abs=1e-9)
        assert o["mean_abs_error"] == pytest.approx(float(d.mean()), abs=1e-9)
    # vs LiteRT: the desktop's predictions of this very run, step = the softmax's int8 scale.
    lite = _npz(rep["predictions_path"])
    for v in t["vs_litert"]:
        d = np.abs(lite[v["name"]].astype(np.float64) - tflm[v["name"]].astype(np.float64))
        assert v["max_abs_diff"] == pytest.approx(float(d.max()), abs=1e-7)
        assert v["max_lsb"] == pytest.approx(float(d.max()) / v["lsb"], abs=1e-3)
        assert v["bit_exact_fraction"] == pytest.approx(float(np.mean(d == 0)))
    # MACs from shapes: conv 10x10x6 x 3*3*2, depthwise 8x8x6 x 3*3, dense 384x40 + 40x4.
    assert t["macs"]["by_type"]["CONV_2D"] == 10 * 10 * 6 * 18
    assert t["macs"]["by_type"]["DEPTHWISE_CONV_2D"] == 8 * 8 * 6 * 9
    assert t["macs"]["by_type"]["FULLY_CONNECTED"] == 384 * 40 + 40 * 4
    assert t["macs"]["total"] == sum(o["macs"] for o in t["macs"]["per_op"])
    assert t["flash_bytes"] == rep["tflite_bytes"]
    b = t["board"]
    assert b["fits"] and b["ram_headroom_bytes"] == 256 * 1024 - t["arena_bytes"] - b["runtime_ram_bytes"]


ARENA_PROBE = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime as r
data = open(sys.argv[1], "rb").read()
for size in map(int, sys.argv[2:]):
    try:
        it = r.Interpreter.from_bytes(data, arena_size=size)
        d = it.get_input_details(0)
        it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
        it.invoke()
        print(size, "ok")
    except RuntimeError:
        print(size, "fail")
"""


def test_arena_allocates_and_invokes_at_the_figure_and_fails_at_97_percent(cells):
    t = _micro(cells["cnn", "int8"])
    arena = t["arena_bytes"]
    assert arena % 16 == 0 and t["arena_recorded_bytes"] and t["arena_search"]["probes"] < 40
    low = int(arena * 0.97) // 16 * 16
    r = subprocess.run([sys.executable, "-c", ARENA_PROBE, cells["cnn", "int8"]["tflite_path"], str(arena), str(low)],
                       capture_output=True, text=True)
    assert r.stdout.split() == [str(arena), "ok", str(low), "fail"], r.stdout + r.stderr[-500:]


def test_float32_and_int16x8_cells_run(cells):
    f, i16 = _micro(cells["cnn", "none"]), _micro(cells["cnn", "int16x8"])
    assert f["verdict"] == "pass" and i16["verdict"] == "pass", (f["error"], i16["error"])
    assert {o["op"] for o in f["float_ops"]} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    assert f["vs_litert"][0]["max_lsb"] is None and f["vs_litert"][0]["max_abs_diff"] < 1e-5
    assert f["arena_bytes"] > _micro(cells["cnn", "int8"])["arena_bytes"]      # float activations: 4x bytes
    v = i16["vs_litert"][0]
    assert v["lsb"] and v["lsb"] < 1e-3                                       # an int16 step
    if v["max_lsb"] > 1:
        assert i16["first_difference"] and i16["first_difference"]["op"]


def test_dynamic_range_cell_does_not_run_with_the_hybrid_message(cells):
    rep = cells["cnn", "dynamic"]
    t = _micro(rep)
    assert t["runs"] is False and t["verdict"] == "does not run" and not rep["ok"]
    assert t["error"].startswith("TFLM has no hybrid kernels: use int8") and "FULLY_CONNECTED" in t["error"]
    assert "\n" not in t["error"]
    assert {o["op"]: o["runs_on_micro"] for o in t["ops"]}["FULLY_CONNECTED"] is False


def test_multi_io_int8_maps_outputs_by_name_and_a_tiny_board_does_not_fit(cells):
    rep = cells["multi", "int8"]
    t = _micro(rep)
    assert t["runs"] and t["verdict"] == "does not fit" and not rep["ok"]
    assert "RAM" in t["error"] and not t["board"]["fits_ram"] and t["board"]["fits_flash"]
    ref, tflm = _npz(rep["reference_path"]), _npz(t["outputs_path"])
    assert set(tflm) == {"cls", "reg"} == {o["name"] for o in t["outputs"]}
    for o in t["outputs"]:
        d = np.abs(ref[o["name"]].astype(np.float64) - tflm[o["name"]].reshape(ref[o["name"]].shape))
        assert o["max_abs_error"] == pytest.approx(float(d.max()), abs=1e-9)
    # The desktop judged the same cell within tolerance: TFLM's numbers are close to LiteRT's.
    assert all(v["max_abs_diff"] <= 2 * (v["lsb"] or 1e-6) for v in t["vs_litert"])


MISSING = """
import tensorflow as tf
@tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
def f(x):
    v, _ = tf.math.top_k(x, k=3)
    return {"top": v * 2.0}
open(r"PATH", "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert())
"""


def test_an_op_tflm_lacks_is_named(tmp_path):
    from tflite_lab.runtime import TFLiteModel
    from tflite_lab.targets import TargetInput, run_targets
    p = tmp_path / "topk.tflite"
    subprocess.run([sys.executable, "-c", MISSING.replace("PATH", str(p))], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    sig = TFLiteModel(p.read_bytes()).signature
    np.savez(tmp_path / "s.npz", **{t.name: np.random.default_rng(0).random((2, 8), dtype=np.float32)
                                    for t in sig.inputs})
    t = run_targets({"micro": {}}, TargetInput(str(p), str(tmp_path / "s.npz"), None, sig.to_dict()))["micro"]
    assert t["runs"] is False and t["verdict"] == "does not run"
    assert "TFLM has no kernel for TOPK_V2" in t["error"] and t["missing_ops"] == ["TOPK_V2"]
    assert {o["op"]: o["runs_on_micro"] for o in t["ops"]}["TOPK_V2"] is False
    json.dumps(t)


def test_cli_convert_with_target_micro_judges_the_device_and_sets_the_exit_code(models):
    from lab_helpers import run_cli
    r = run_cli("convert", models / "cnn.keras", "--optimize", "int8", "--target", "micro", "--board", "nano33ble",
                "--num-samples", "8", "--no-latency", "--no-history", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    t = rep["targets"]["micro"]
    assert rep["ok"] and t["verdict"] == "pass" and t["runs"] and t["arena_bytes"] % 16 == 0
    assert t["board"]["fits"] and t["outputs"][0]["name"] == rep["outputs"][0]["name"]

    # A dynamic-range model does not run on TFLM: the cell converted (not exit 3) but the target fails it.
    r = run_cli("convert", models / "cnn.keras", "--optimize", "dynamic", "--target", "micro", "--num-samples", "4",
                "--no-latency", "--no-history")
    assert r.returncode == 1, r.stderr
    block = r.stdout[r.stdout.index("target micro:"):]
    assert block.startswith("target micro: DOES NOT RUN") and "TFLM has no hybrid kernels: use int8" in block

    # A board too small: does not fit, said with the numbers.
    r = run_cli("convert", models / "cnn.keras", "--optimize", "int8", "--target", "micro", "--ram-kb", "1",
                "--flash-kb", "8", "--num-samples", "4", "--no-latency", "--no-history")
    assert r.returncode == 1 and "target micro: DOES NOT FIT" in r.stdout and "does not fit" in r.stdout

    for bad, words in ((["--board", "nano33ble"], "go with --target micro"),
                       (["--target", "micro", "--board", "nosuch"], "Unknown board 'nosuch'"),
                       (["--target", "micro", "--ram-kb", "64"], "both --ram-kb and --flash-kb")):
        r = run_cli("convert", models / "cnn.keras", "--no-latency", "--no-history", *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert words in line


def test_matrix_with_target_micro_has_a_column_and_judges_every_cell(models):
    from lab_helpers import run_cli
    r = run_cli("matrix", models / "cnn.keras", "--routes", "keras", "--optimizations", "int8", "dynamic",
                "--target", "micro", "--num-samples", "4", "--no-latency", "--no-history", "--json")
    assert r.returncode == 1, r.stderr                       # the dynamic cell does not run on TFLM
    cells = {c["optimization"]: c for c in json.loads(r.stdout)}
    assert cells["int8"]["targets"]["micro"]["verdict"] == "pass" and cells["int8"]["ok"]
    assert cells["dynamic"]["targets"]["micro"]["verdict"] == "does not run" and not cells["dynamic"]["ok"]
    r = run_cli("matrix", models / "cnn.keras", "--routes", "keras", "--optimizations", "int8", "--target", "micro",
                "--num-samples", "4", "--no-latency", "--no-history")
    header, row = r.stdout.splitlines()[:2]
    assert "micro" in header and row.startswith("keras-int8") and "PASS" in row and "KB arena" in row


def test_history_and_html_report_carry_the_micro_target(models, tmp_path):
    from lab_helpers import run_cli
    report = tmp_path / "r.html"
    r = run_cli("convert", models / "cnn.keras", "--optimize", "int8", "--target", "micro", "--board", "pico",
                "--num-samples", "4", "--no-latency", "--json", "--report", report)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    from tflite_lab.history import History
    with History() as h:
        run = h.get(rep["run_id"])
    t = run["reports"][0]["targets"]["micro"]
    assert t["arena_bytes"] == rep["targets"]["micro"]["arena_bytes"] and t["verdict"] == "pass"
    html = report.read_text()
    assert "On micro" in html and f"arena {t['arena_bytes']:,} bytes" in html and "fits Raspberry Pi Pico" in html


def test_an_unrolled_recurrent_int8_cell_runs_on_tflm_and_its_error_recomputes(tmp_path):
    subprocess.run([sys.executable, "-c", (
        "import sys, keras; keras.utils.set_random_seed(1); x = keras.Input((8, 4), name='seq');"
        "h = keras.layers.LSTM(6, name='lstm')(x);"
        "keras.Model(x, keras.layers.Dense(3, activation='softmax', name='p')(h)).save(sys.argv[1])"),
        str(tmp_path / "lstm.keras")], check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, report_json, run_cell, source_json
    from tflite_lab.sources import source_from_path
    off = BenchSpec(enabled=False)
    prepared = prepare(source_json(source_from_path(tmp_path / "lstm.keras")), SampleSpec(count=8), off)
    rep = judge_report(run_cell(prepared, "saved_model", "int8", bench=off, targets={"micro": {}}))
    assert any("unrolled" in w for w in rep["warnings"])             # the recurrent layer was unrolled for int8
    t = report_json(rep)["targets"]["micro"]
    assert t["runs"] and t["verdict"] in ("pass", "fail") and t["arena_bytes"] >= (t["arena_recorded_bytes"] or 0)
    tflm, ref = np.load(t["outputs_path"]), np.load(rep["reference_path"])
    (o,) = t["outputs"]
    assert o["max_abs_error"] == pytest.approx(float(np.max(np.abs(tflm["p"].astype(np.float64) - ref["p"]))), rel=1e-4)
