"""The ``browser`` target: the cell's ``.tflite`` in LiteRT.js (the LiteRT runtime compiled to
WebAssembly), in a real Chromium, judged like any cell.

LiteRT.js's traps (../shared/EDGE_NOTES.md): a dynamic batch is refused, so the browser gets a
batch-1 copy of the model (shapes fixed in the flatbuffer) and one sample per run; only float32,
int32 and uint8 tensors can be fed or read; manual memory.

The same cell folder serves three callers:

- ``run_browser`` (``--target browser``): Debian's Chromium, headless, driven by Playwright in a
  child process, with every request that is not to its own loopback server aborted;
- the dashboard's "Run on this device" (the visitor's browser fetches the folder through the
  component) — ``prepare_cell`` then ``report_from_raw``;
- the web bundle (``web_bundle.write_web_bundle``), which copies it next to a standalone page.

Cell folder (``Store(...)/browser/<key>/``): ``manifest.json`` (what runner.js reads: tensors by
name with dtype/shape/file, invocations, timing settings), ``model.tflite`` (batch 1),
``inputs.json`` (raw little-endian inputs of all invocations, base64 per tensor: a static server
types .json right), ``expected.json`` (server LiteRT's outputs of the same model, base64, with the
difference the standalone page allows) and ``context.json`` (what the server
needs to decode and judge: reference names, quantization, sample count).
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .base import DOES_NOT_RUN, IsolatedCrash, TargetInput, TargetReport, run_isolated

NAME = "browser"
DTYPES = ("float32", "int32", "uint8")        # what LiteRT.js 2.5 can feed and read


def chromium() -> str:
    """Read per call: a forked worker (fork_server) got its environment after this module was imported."""
    return os.environ.get("TFLITE_LAB_CHROMIUM", "/usr/bin/chromium")


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-features=Translate,OptimizationHints,MediaRouter"]
RUN_TIMEOUT_S = 900.0
WARMUP, RUNS, BUDGET_MS = 3, 30, 3000
FORMAT = 3                                    # cell folder layout version (part of its key)


class Refusal(Exception):
    """The cell cannot run in LiteRT.js as it is: one line, said before anything runs."""


# ---------------------------------------------------------------- model: batch 1, tensors by name

def _io(tflite: bytes) -> tuple[list[dict], list[dict]]:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=tflite)
    return it.get_input_details(), it.get_output_details()


def _dtype(d: dict) -> str:
    return np.dtype(d["dtype"]).name


def check(tflite: bytes) -> None:
    """Raise Refusal when LiteRT.js cannot take these tensors or ops (before anything runs)."""
    from ..inspect import inspect_tflite
    insp = inspect_tflite(tflite, "The .tflite", probe=False)
    if insp.flex_ops:
        raise Refusal(f"LiteRT.js has no TensorFlow (Flex) ops; this model needs {', '.join(insp.flex_ops)}. "
                      "Convert without SELECT_TF_OPS.")
    ins, outs = _io(tflite)
    for kind, details in (("input", ins), ("output", outs)):
        for d in details:
            dt = _dtype(d)
            if dt not in DTYPES:
                fix = (" This is an int8-I/O cell: the same recipe with float I/O (without --int8-io) runs in the "
                       "browser and is quantized inside." if dt in ("int8", "int16") else "")
                raise Refusal(f"LiteRT.js feeds and reads float32, int32 and uint8 tensors only; {kind} "
                              f"{d['name']!r} is {dt}.{fix}")


def fixed_batch_model(tflite: bytes, feed_shapes: dict[int, list[int]]) -> tuple[bytes, dict[int, list[int]]]:
    """A copy of the model whose inputs have ``feed_shapes`` (tensor index -> shape) and whose
    outputs have the shapes LiteRT computes for them, with no dynamic dimension left on any tensor.

    Returns the bytes and the I/O shapes (tensor index -> shape).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=tflite)
    for d in it.get_input_details():
        if list(d["shape"]) != feed_shapes[d["index"]]:
            it.resize_tensor_input(d["index"], feed_shapes[d["index"]])
    it.allocate_tensors()
    shapes = {d["index"]: [int(x) for x in d["shape"]] for d in it.get_input_details() + it.get_output_details()}
    m = s.ModelT.InitFromPackedBuf(tflite, 0)
    changed = False
    sg = m.subgraphs[0]
    for i, t in enumerate(sg.tensors):
        if i in shapes:
            new = np.array(shapes[i], np.int32)
            if t.shape is None or list(t.shape) != shapes[i] or t.shapeSignature is not None and list(t.shapeSignature) != shapes[i]:
                changed = True
            t.shape, t.shapeSignature = new, (new.copy() if t.shapeSignature is not None else None)
        elif t.shapeSignature is not None and (np.asarray(t.shapeSignature) < 0).any():
            # Inner shapes are recomputed when the graph is prepared; a -1 left here makes
            # LiteRT.js's buffer checks expect a dynamic tensor.
            t.shapeSignature, changed = None, True
    if not changed:
        return tflite, shapes
    b = flatbuffers.Builder(max(1024, len(tflite) + 4096))
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output()), shapes


def _encode(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x).tobytes()).decode()


def _decode(b64: str, dtype: str, shape: list[int]) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(b64), dtype=np.dtype(dtype).newbyteorder("<"))
    return a.reshape(shape).astype(dtype)


def prepare_cell(inp: TargetInput, *, warmup: int = WARMUP, runs: int = RUNS, budget_ms: int = BUDGET_MS) -> Path:
    """The cell folder for LiteRT.js (made once per model, samples and layout; see the module doc).

    Raises Refusal when LiteRT.js cannot take the model.
    """
    from ..runtime import TFLiteModel, dequantize, quantize
    from ..store import Store
    from ..types import Signature
    tflite = Path(inp.tflite_path).read_bytes()
    samples_sha = hashlib.sha256(Path(inp.samples_path).read_bytes()).hexdigest()
    key = hashlib.sha256(tflite + samples_sha.encode() + f"{FORMAT}:{warmup}:{runs}:{budget_ms}".encode()).hexdigest()[:24]
    out = Store(inp.store_root).root / "browser" / key
    if (out / "context.json").is_file():
        return out
    check(tflite)
    lite = TFLiteModel(tflite)
    sig = Signature.from_dict(inp.signature)
    in_map, out_map = inp.in_map or {}, inp.out_map or {}
    if not in_map:
        in_map, out_map = lite.match(sig)
    ref_of_out = {key: ref for ref, key in out_map.items()}
    samples = dict(np.load(inp.samples_path, allow_pickle=False))
    n = len(next(iter(samples.values())))
    ins, outs = _io(tflite)
    by_index_in = {d["index"]: d for d in ins}
    # Feed shapes: batch 1 where the batch is free, else the model's own fixed batch (padded).
    batch = max((int(d["shape_signature"][0]) for d in ins if len(d["shape_signature"])), default=1)
    batch = max(batch, 1)
    feed_shapes, inputs = {}, []
    for ref, key_ in in_map.items():
        d = lite.in_details[key_]
        x = samples[ref]
        feed_shapes[d["index"]] = [batch, *[int(v) for v in x.shape[1:]]] if d["shape_signature"].size else []
        inputs.append((ref, key_, d))
    model_bytes, shapes = fixed_batch_model(tflite, feed_shapes)
    invocations = math.ceil(n / batch)
    pad = invocations * batch - n
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.tflite").write_bytes(model_bytes)
    man_in, man_out, ctx_in, ctx_out = [], [], [], []
    feed, blobs = {}, {}
    for k, (ref, key_, d) in enumerate(inputs):
        x = samples[ref]
        if pad:
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        det = by_index_in[d["index"]]
        q = quantize(x.astype(np.float32) if det["quantization"][0] else x, det)
        feed[d["index"]] = q
        blobs[det["name"]] = _encode(q.astype(q.dtype.newbyteorder("<")))
        man_in.append({"name": det["name"], "key": key_, "label": ref, "dtype": _dtype(det), "shape": shapes[d["index"]]})
        ctx_in.append({"ref": ref, "name": det["name"], "quantization": list(det["quantization"])})
    for d in outs:
        key_ = next((k for k, v in lite.out_details.items() if v["index"] == d["index"]), d["name"])
        man_out.append({"name": d["name"], "key": key_, "label": ref_of_out.get(key_, key_), "dtype": _dtype(d),
                        "shape": shapes[d["index"]]})
        ctx_out.append({"ref": ref_of_out.get(key_, key_), "name": d["name"], "quantization": list(d["quantization"])})
    # Server LiteRT on the very bytes the browser gets, one invocation at a time like the browser.
    litert = _litert_run(model_bytes, feed, invocations, batch)
    expected = {d["name"]: {"b64": _encode(litert[d["index"]]), "tolerance": _tolerance(litert[d["index"]])}
                for d in outs}
    man = {"format": FORMAT, "model": "model.tflite", "inputs_file": "inputs.json", "invocations": invocations, "batch": batch,
           "num_samples": n, "inputs": man_in, "outputs": man_out, "warmup": warmup, "runs": runs,
           "budget_ms": budget_ms, "litertjs": _version()}
    (tmp / "manifest.json").write_text(json.dumps(man))
    (tmp / "inputs.json").write_text(json.dumps({"inputs": blobs}))
    (tmp / "expected.json").write_text(json.dumps({"outputs": expected}))
    ctx = {"inputs": ctx_in, "outputs": ctx_out, "num_samples": n, "batch": batch, "pad": pad,
           "model_sha256": hashlib.sha256(model_bytes).hexdigest(), "source_sha256": hashlib.sha256(tflite).hexdigest(),
           "made_batch_1": model_bytes != tflite}
    np.savez(tmp / "litert.npz", **{d["name"]: dequantize(litert[d["index"]], d)[:n] for d in outs})
    (tmp / "context.json").write_text(json.dumps(ctx))
    try:
        os.replace(tmp, out)
    except OSError:                      # made meanwhile by another process
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _tolerance(y: np.ndarray) -> float:
    """How far LiteRT.js may be from server LiteRT on the same bytes and still "match": one
    quantization step for integer outputs; for float, 1e-5 of the output's scale (wasm and x86
    kernels sum in another order; measured up to ~3e-8 on small float models)."""
    if y.dtype.kind in "iu":
        return 1.0
    fin = np.abs(y[np.isfinite(y)])
    return float(1e-5 * max(1.0, float(fin.max()) if fin.size else 1.0))


def _litert_run(model_bytes: bytes, feed: dict[int, np.ndarray], invocations: int, batch: int) -> dict[int, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=model_bytes)
    it.allocate_tensors()
    parts: dict[int, list] = {d["index"]: [] for d in it.get_output_details()}
    for i in range(invocations):
        for idx, x in feed.items():
            it.set_tensor(idx, x[i * batch:(i + 1) * batch])
        it.invoke()
        for idx in parts:
            parts[idx].append(it.get_tensor(idx).copy())
    return {idx: np.concatenate(p) for idx, p in parts.items()}


def _version() -> str | None:
    from .web_assets import litertjs_version
    return litertjs_version()


# ---------------------------------------------------------------- judging what a browser sent back

def decode_outputs(cell: Path, raw_outputs: dict[str, str]) -> dict[str, np.ndarray]:
    """The browser's outputs (base64 per output tensor name) as float arrays keyed by reference name."""
    from ..runtime import dequantize
    man = json.loads((cell / "manifest.json").read_text())
    ctx = json.loads((cell / "context.json").read_text())
    n = ctx["num_samples"]
    out = {}
    for m, c in zip(man["outputs"], ctx["outputs"]):
        if m["name"] not in raw_outputs:
            raise ValueError(f"the browser sent no output {m['name']!r}")
        shape = [man["invocations"] * (m["shape"][0] if m["shape"] else 1), *m["shape"][1:]]
        y = _decode(raw_outputs[m["name"]], m["dtype"], shape)
        out[c["ref"]] = dequantize(y, {"dtype": m["dtype"], "quantization": tuple(c["quantization"])})[:n]
    return out


def report_from_raw(cell: Path, raw: dict, reference_path: str | None, *, target: str = NAME) -> TargetReport:
    """What runner.js's ``runForServer`` returned, compared with the original (raw metrics, judged
    later by ``judge_targets`` like any target) and with server LiteRT on the same batch-1 model."""
    from ..metrics import compare_outputs, output_stats
    cell = Path(cell)
    ctx = json.loads((cell / "context.json").read_text())
    figures = {"made_batch_1": ctx["made_batch_1"], "batch": ctx["batch"], "vs_litert": [], "cell_dir": str(cell)}
    if not raw.get("ok"):
        figures.update(_device_figures(raw.get("figures") or {}))
        return TargetReport(target, False, f"LiteRT.js failed: {str(raw.get('error') or 'no result')[:300]}",
                            DOES_NOT_RUN, (), figures)
    try:
        got = decode_outputs(cell, raw.get("outputs") or {})
    except (ValueError, KeyError, TypeError) as e:
        return TargetReport(target, False, f"LiteRT.js sent outputs that do not decode: {e}", DOES_NOT_RUN, (), figures)
    litert = dict(np.load(cell / "litert.npz", allow_pickle=False))
    names = {c["name"]: c["ref"] for c in ctx["outputs"]}
    for tname, ref in names.items():
        a, b = got[ref].astype(np.float64), litert[tname].astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        figures["vs_litert"].append({"name": ref, "max_abs_diff": float(np.max(diff)) if diff.size else 0.0,
                                     "bit_exact_fraction": float(np.mean(diff == 0)) if diff.size else 1.0})
    figures.update(_device_figures(raw.get("figures") or {}))
    figures["output_stats"] = output_stats(got)
    outputs = ()
    if reference_path:
        reference = dict(np.load(reference_path, allow_pickle=False))
        outputs = tuple({**m.to_json(), "per_sample_max_abs": list(m.per_sample_max_abs)}
                        for m in compare_outputs(reference, got))
    path = cell / f"outputs-{hashlib.sha256(json.dumps(raw.get('figures', {}).get('user_agent', '')).encode()).hexdigest()[:8]}.npz"
    np.savez(path, **got)
    figures["outputs_path"] = str(path)
    return TargetReport(target, True, None, None, outputs, figures)


def _device_figures(f: dict) -> dict:
    lat = f.get("latency_ms") or {}
    return {"latency_ms": {"median": lat.get("median"), "p90": lat.get("p90"), "runs": lat.get("runs"),
                           "warmup": lat.get("warmup"), "runs_per_timing": lat.get("runs_per_timing"),
                           "what": "warm batch-1 runs in LiteRT.js: inputs copied in, outputs copied out"
                                   + (f"; each timing is {lat['runs_per_timing']} runs, divided (the page's clock "
                                      "is coarse)" if (lat.get("runs_per_timing") or 1) > 1 else "")},
            "load_ms": f.get("load_ms"), "compile_ms": f.get("compile_ms"),
            "accelerator": f.get("accelerator"), "wasm_build": f.get("wasm_build"),
            "user_agent": f.get("user_agent"), "platform": f.get("platform"),
            "hardware_concurrency": f.get("hardware_concurrency"), "litertjs": f.get("litertjs") or _version()}


# ---------------------------------------------------------------- headless Chromium (the CLI/CI target)

def run_browser(inp: TargetInput) -> TargetReport:
    from .web_assets import assets_dir
    t0 = time.perf_counter()
    tflite = Path(inp.tflite_path).read_bytes()
    try:
        cell = prepare_cell(inp)
    except Refusal as e:
        return TargetReport(NAME, False, str(e), DOES_NOT_RUN, (), {"litertjs": _version()})
    try:
        assets = assets_dir(inp.store_root)
    except Exception as e:   # noqa: BLE001 - UnsupportedCombination: the npm packages are missing
        return TargetReport(NAME, False, str(e), DOES_NOT_RUN, (), {})
    payload = {"assets": str(assets), "cell": str(cell), "accelerator": inp.options.get("accelerator", "wasm")}
    try:
        raw = run_isolated("tflite_lab.targets.browser", "chromium_child", payload, timeout_s=RUN_TIMEOUT_S)
    except IsolatedCrash as e:
        return TargetReport(NAME, False, f"headless Chromium failed ({e})", DOES_NOT_RUN, (), {})
    rep = report_from_raw(cell, raw, inp.reference_path)
    bundle = None
    if inp.options.get("bundle", True) is not False:
        from .web_bundle import write_web_bundle
        bundle = str(write_web_bundle(cell, assets, cell.parent.parent / "browser-web" / cell.name))
    figures = {**rep.figures, "target_s": round(time.perf_counter() - t0, 3), "blocked_requests": raw.get("blocked", []),
               "where": "headless Chromium (Playwright) on the server", "source_bytes": len(tflite)}
    return TargetReport(rep.target, rep.runs, rep.error, rep.verdict, rep.outputs, figures, bundle)


HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>LiteRT.js</title>{importmap}</head>
<body><p id="status">loading</p></body></html>"""


def serve_root(assets: Path, cell: Path):
    """A threaded loopback HTTP server: ``/`` the host page, LiteRT.js from ``assets``, ``/cell/``
    the cell folder. Returns (server, port); stop with ``server.shutdown()``."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from .web_assets import import_map_tag
    page = HOST_PAGE.format(importmap=import_map_tag()).encode()

    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path):
            rel = path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
            base = cell if rel.startswith("cell/") else assets
            rel = rel.removeprefix("cell/")
            p = (base / rel).resolve()
            return str(p) if p.is_relative_to(base.resolve()) else str(base / "__none__")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(assets)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def chromium_child(p: dict) -> dict:
    """In the isolated child: serve on loopback, open Chromium, run the cell, return runForServer's result."""
    from playwright.sync_api import sync_playwright
    srv, port = serve_root(Path(p["assets"]), Path(p["cell"]))
    origin = f"http://127.0.0.1:{port}"
    blocked: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                ctx = browser.new_context()

                def route(r):
                    if r.request.url.startswith(origin + "/"):
                        r.continue_()
                    else:
                        blocked.append(r.request.url[:200])
                        r.abort()
                ctx.route("**/*", route)
                page = ctx.new_page()
                page.set_default_timeout(RUN_TIMEOUT_S * 1000)
                page.goto(origin + "/")
                res = page.evaluate("async (acc) => (await import('./runner.js')).runForServer('./cell/', {accelerator: acc})",
                                    p.get("accelerator", "wasm"))
            finally:
                browser.close()
    finally:
        srv.shutdown()
    res["blocked"] = blocked
    return res


# ---------------------------------------------------------------- the dashboard's "Run on this device"

def device_input(report: dict, signature: dict, store_root: str | None = None) -> TargetInput:
    """A judged cell report (and its model's signature) as the browser target's input."""
    return TargetInput(report["tflite_path"], report["samples_path"], report.get("reference_path"), signature,
                       store_root=store_root)


def refusal(report: dict) -> str | None:
    """Why LiteRT.js cannot take this cell (said before anything runs), or None."""
    try:
        check(Path(report["tflite_path"]).read_bytes())
    except Refusal as e:
        return str(e)
    return None


def judge_device(report: dict, cell: Path, raw: dict, tolerances) -> dict:
    """What a visitor's browser sent back, judged exactly like the ``browser`` target of this cell
    (same tolerances, metrics and NaN rules): the target dict with ``verdict`` and ``failures``."""
    from ..types import Optimization
    from .base import judge_targets
    opt = report["optimization"]
    optimization = Optimization.NONE if opt == "provided" else Optimization(opt)
    rep = report_from_raw(Path(cell), raw, report.get("reference_path"), target="device")
    figures = {**rep.figures, "where": "the visitor's browser (Run on this device)", "wall_ms": raw.get("wall_ms")}
    t = TargetReport("device", rep.runs, rep.error, rep.verdict, rep.outputs, figures).to_json()
    judged, failures = judge_targets({"targets": {"device": t}, "reference_path": report.get("reference_path")},
                                     tolerances, optimization)
    return {**judged["device"], "failures": [f.removeprefix("device: ") for f in failures]}


def device_job(report: dict, signature: dict, store_root: str | None = None, progress=None) -> dict:
    """Worker job: the cell folder a visitor's browser will fetch (``served``: relative to the
    component's page), or why LiteRT.js cannot take the cell (``refusal``)."""
    from .web_assets import serve_cell
    inp = device_input(report, signature, store_root)
    try:
        cell = prepare_cell(inp)
    except Refusal as e:
        return {"refusal": str(e), "cell_dir": None, "served": None}
    man = json.loads((cell / "manifest.json").read_text())
    return {"refusal": None, "cell_dir": str(cell), "served": serve_cell(cell, store_root),
            "invocations": man["invocations"], "made_batch_1": json.loads((cell / "context.json").read_text())["made_batch_1"],
            "model_bytes": (cell / "model.tflite").stat().st_size}


def judge_device_job(report: dict, cell_dir: str, raw: dict, tolerances: dict, progress=None) -> dict:
    """Worker job: ``judge_device`` with tolerances as JSON."""
    from ..types import Tolerances
    return judge_device(report, Path(cell_dir), raw, Tolerances.from_json(tolerances))
