"""The browser target: cells in LiteRT.js in Debian's Chromium (headless, loopback only), on models
built here (issue 18). Every float32 figure is recomputed with numpy from the arrays themselves."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lab_helpers import ROOT, build_models, run_cli

pytestmark = pytest.mark.slow

BUILD = """
import numpy as np, keras
keras.utils.set_random_seed(0)
# Two inputs declared b, a (the flatbuffer orders them otherwise) and two outputs of different kinds.
b = keras.Input((4, 4, 1), name="b"); a = keras.Input((6,), name="a")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))])
h = keras.layers.Dense(16, activation="relu")(h)
keras.Model([b, a], [keras.layers.Dense(1, name="reg")(h),
                     keras.layers.Dense(5, activation="softmax", name="cls")(h)]).save(r"{d}/two.keras")
# Token ids of any length: int32 input, dynamic batch and length.
t = keras.Input((None,), dtype="int32", name="tokens")
e = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(t))
keras.Model(t, keras.layers.Dense(3, activation="softmax", name="probs")(e)).save(r"{d}/tokens.keras")
# A fixed batch of 4: the browser runs it in fours (the last one padded).
x = keras.Input((5,), batch_size=4, name="x")
keras.Model(x, keras.layers.Dense(2, name="y")(keras.layers.Dense(8, activation="tanh")(x))).save(r"{d}/batch4.keras")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(BUILD, tmp_path_factory.mktemp("browser"))


@pytest.fixture(scope="module")
def cells(models):
    """{(model, recipe): judged report} with the browser target, one conversion each."""
    from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    off = BenchSpec(enabled=False)
    prepared = {m: prepare(source_json(source_from_path(models / f"{m}.keras")), SampleSpec(count=10), off)
                for m in ("two", "tokens", "batch4")}
    out = {}
    for m, opt, route in (("two", "none", "keras"), ("two", "float16", "keras"), ("two", "int8", "keras"),
                          ("tokens", "none", "saved_model"), ("batch4", "none", "keras")):
        out[m, opt] = judge_report(run_cell(prepared[m], route, opt, bench=off, targets={"browser": {}}))
    return out


def _browser(rep):
    from tflite_lab.pipeline import report_json
    return report_json(rep)["targets"]["browser"]


def _outputs(t):
    return dict(np.load(t["outputs_path"], allow_pickle=False))


@pytest.mark.parametrize("key", [("two", "none"), ("tokens", "none"), ("batch4", "none")])
def test_float32_cells_match_litert_within_1e5(cells, key):
    rep = cells[key]
    t = _browser(rep)
    assert t["runs"] and t["verdict"] == "pass", t.get("error")
    got = _outputs(t)
    desktop = dict(np.load(rep["predictions_path"], allow_pickle=False))     # server LiteRT, batched, original bytes
    reference = dict(np.load(rep["reference_path"], allow_pickle=False))
    assert set(got) == set(desktop) == set(reference)
    for name in got:
        assert got[name].shape == desktop[name].shape
        assert np.max(np.abs(got[name] - desktop[name])) <= 1e-5, name
    # The reported figures are the arrays' own (numpy, independently).
    by_name = {o["name"]: o for o in t["outputs"]}
    for name in got:
        assert by_name[name]["max_abs_error"] == pytest.approx(float(np.max(np.abs(got[name].astype(np.float64) - reference[name]))), rel=1e-6, abs=1e-12)
    for v in t["vs_litert"]:
        assert v["max_abs_diff"] <= 1e-5
    assert t["accelerator"] == "wasm" and "HeadlessChrome" in t["user_agent"] and t["hardware_concurrency"] >= 1
    assert t["latency_ms"]["median"] > 0 and t["latency_ms"]["p90"] >= t["latency_ms"]["median"]
    assert t["blocked_requests"] == []


def test_dynamic_batch_and_length_become_fixed(cells):
    t = _browser(cells["tokens", "none"])
    assert t["made_batch_1"] is True
    man = json.loads((__import__("pathlib").Path(t["cell_dir"]) / "manifest.json").read_text())
    (tok,) = man["inputs"]
    assert tok["dtype"] == "int32" and tok["shape"][0] == 1 and tok["shape"][1] > 1     # the samples' own length
    assert man["invocations"] == 10
    t4 = _browser(cells["batch4", "none"])
    assert t4["batch"] == 4 and t4["made_batch_1"] is False
    assert json.loads((__import__("pathlib").Path(t4["cell_dir"]) / "manifest.json").read_text())["invocations"] == 3


def test_two_inputs_in_another_order_are_fed_by_name(cells):
    rep = cells["two", "none"]
    man = json.loads((__import__("pathlib").Path(_browser(rep)["cell_dir"]) / "manifest.json").read_text())
    assert sorted(t["key"] for t in man["inputs"]) == ["a", "b"]
    # Swapping would break shapes ([1,4,4,1] vs [1,6]): a PASS within 1e-5 is only possible by name.
    assert _browser(rep)["verdict"] == "pass"


@pytest.mark.parametrize("opt", ["float16", "int8"])
def test_quantized_cells_with_float_io(cells, opt):
    """Reported (not bounded by 1e-5): int8 kernels may round differently in wasm and on x86."""
    rep = cells["two", opt]
    t = _browser(rep)
    assert t["runs"], t.get("error")
    got = _outputs(t)
    desktop = dict(np.load(rep["predictions_path"], allow_pickle=False))
    diffs = {n: float(np.max(np.abs(got[n] - desktop[n]))) for n in got}
    print(f"{opt}: max |LiteRT.js - LiteRT| per output: {diffs}")
    assert all(np.isfinite(v) for v in diffs.values())
    if opt == "float16":
        assert max(diffs.values()) <= 1e-5
    # The target is judged with the cell's own tolerances, like the desktop run.
    assert t["verdict"] in ("pass", "fail")
    assert t["verdict"] == ("pass" if all(c["ok"] for o in t["outputs"] for c in o["checks"]) else "fail")


def test_int8_io_cell_is_refused_before_it_runs(models, tmp_path):
    r = run_cli("convert", models / "two.keras", "--optimize", "int8", "--int8-io", "--num-samples", 8, "--no-latency",
                "--target", "browser", "--json")
    assert r.returncode == 1, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    t = rep["targets"]["browser"]
    assert t["runs"] is False and t["verdict"] == "does not run"
    assert "int8" in t["error"] and "float I/O" in t["error"]
    assert rep["ok"] is False
    assert t.get("user_agent") is None         # nothing ran


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_web_bundle_runs_offline_from_a_static_server(models, tmp_path, browser):
    out = tmp_path / "out"
    r = run_cli("convert", models / "two.keras", "--num-samples", 6, "--no-latency", "--target", "browser", "--out", out, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    web = out / "web"
    files = [p for p in web.rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".js", ".wasm", ".html", ".json", ".tflite"}
    assert not any("threaded" in p.name or "jspi" in p.name for p in files)        # only the builds a page uses
    port = _free_port()
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=web,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        origin = f"http://127.0.0.1:{port}"
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        blocked = []
        ctx = browser.new_context()
        try:
            ctx.route("**/*", lambda rt: rt.continue_() if rt.request.url.startswith(origin + "/")
                      else (blocked.append(rt.request.url), rt.abort()))
            page = ctx.new_page()
            page.goto(origin + "/index.html")
            page.wait_for_selector("body[data-verdict]", timeout=120_000)
            verdict = page.locator("body").get_attribute("data-verdict")
            result = json.loads(page.locator("#result").text_content())
        finally:
            ctx.close()
    finally:
        srv.terminate()
        srv.wait(10)
    assert verdict == "pass", result
    assert result["verdict"] == "pass" and result["samples"] == 6
    assert sorted(o["name"] for o in result["outputs"]) == ["cls", "reg"]
    assert all(o["max_abs_diff"] <= o["tolerance"] for o in result["outputs"])
    assert result["latency_ms"]["median"] > 0
    assert blocked == []
    # The expected outputs the page checked against are server LiteRT's, recomputed here.
    from ai_edge_litert.interpreter import Interpreter
    man = json.loads((web / "manifest.json").read_text())
    exp = json.loads((web / "expected.json").read_text())["outputs"]
    blobs = json.loads((web / "inputs.json").read_text())["inputs"]
    import base64
    it = Interpreter(model_path=str(web / "model.tflite"))
    it.allocate_tensors()
    ins = {d["name"]: d for d in it.get_input_details()}
    outs = {d["name"]: d for d in it.get_output_details()}
    feeds = {t["name"]: np.frombuffer(base64.b64decode(blobs[t["name"]]), t["dtype"]).reshape(-1, *t["shape"][1:])
             for t in man["inputs"]}
    for i in range(man["invocations"]):
        for n, x in feeds.items():
            it.set_tensor(ins[n]["index"], x[i:i + 1])
        it.invoke()
        for t in man["outputs"]:
            e = np.frombuffer(base64.b64decode(exp[t["name"]]["b64"]), t["dtype"]).reshape(-1, *t["shape"][1:])
            np.testing.assert_array_equal(it.get_tensor(outs[t["name"]]["index"])[0], e[i])


def test_matrix_target_browser_adds_the_browser_column(models):
    """``matrix --target browser``: every cell carries its LiteRT.js verdict, in the JSON and as a column."""
    args = ("matrix", models / "two.keras", "--routes", "keras", "--optimizations", "none", "float16", "int8",
            "--num-samples", 6, "--no-latency", "--target", "browser")
    r = run_cli(*args, "--json")
    assert r.returncode in (0, 1), r.stderr[-2000:]
    cells = json.loads(r.stdout)
    assert [c["optimization"] for c in cells] == ["none", "float16", "int8"]
    verdicts = {}
    for c in cells:
        t = c["targets"]["browser"]
        assert t["verdict"] in ("pass", "fail"), (c["optimization"], t.get("error"))
        assert t["runs"] and t["blocked_requests"] == []
        verdicts[c["optimization"]] = t["verdict"]
        if c["optimization"] in ("none", "float16"):            # float kernels: LiteRT.js == server LiteRT
            assert t["verdict"] == "pass", t.get("failures")
            assert sorted(v["name"] for v in t["vs_litert"]) == ["cls", "reg"]
            assert all(v["max_abs_diff"] <= 1e-5 for v in t["vs_litert"]), t["vs_litert"]
    text = run_cli(*args)
    assert text.returncode == r.returncode, text.stderr[-2000:]
    lines = text.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("cell"))
    assert "browser" in header.split()
    col = header.index("browser")
    for opt, verdict in verdicts.items():
        row = next(ln for ln in lines if ln.startswith(f"keras-{opt} "))
        assert row[col:].split()[:3][0] == verdict.upper() and row[col:].split()[2] == "ms", row
