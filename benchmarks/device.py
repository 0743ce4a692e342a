"""LiteRT.js (wasm, headless Chromium) against server LiteRT (``ai_edge_litert``, one thread), same
machine, same run, on the bundled MobileNetV2 (alpha 0.35, 96x96) converted float32.

This measures LiteRT.js and Chromium, not TFLite Lab's code: the ratio says how much slower (or
faster) the same batch-1 model bytes run in a browser tab's wasm than in the server's interpreter.

1. ``python -m tflite_lab convert sample_models/mobilenet_v2_small.keras --samples ... --out DIR``
   (float32, no optimization, in a child process with its own cache), then
   ``browser.prepare_cell(..., runs=N)``: the batch-1 ``cell/model.tflite`` both sides run.
2. Warm batch-1 latency, alternating sides per round ((browser, litert), then (litert, browser)):
   the browser side is ``browser.chromium_child`` (what ``--target browser`` runs: Playwright,
   Debian's Chromium, LiteRT.js wasm; its figures come from runner.js), the LiteRT side is
   ``Interpreter(model_content=cell/model.tflite, num_threads=1)`` timed like runner.js: the same
   warm-up, the same number of runs, sample 0 copied in with ``set_tensor`` and the output copied out
   with ``get_tensor``, median and p90 by linear interpolation.
3. Time to verdict as the CLI target sees it: ``run_browser(TargetInput(...))`` cold (a new store
   dir: no cell folder, no LiteRT.js asset layout; Playwright always starts Chromium with a fresh
   profile) and warm (the cell folder exists), split into: a bare headless Chromium start in the
   same kind of isolated child (Python child + Playwright + Chromium + the loopback host page, no
   LiteRT.js), LiteRT.js's wasm load (``load_ms``), model load+compile (``compile_ms``), and
   ``prepare_cell`` on its own (cold and warm, timed apart in other store dirs).
4. Time to verdict as a visitor sees it: the real dashboard (``streamlit run app.py`` on a free port, its
   own cache and run history, the cell converted by the CLI with ``--route keras``) in Debian's Chromium,
   each "context" a fresh Chromium profile (empty disk HTTP cache). Baseline: the page's own time for
   the run (``wall_ms`` of the device run in the history: LiteRT.js load, model compile, every sample,
   the timed runs). Measured: pressing "Run on this device" in the component's frame -> the new row in
   "Devices this cell ran on" with the verdict shown, cold (first press in a fresh profile), warm on a
   new page of the same profile (the HTTP cache could hold the wasm) and warm in the same page (the
   wasm already instantiated); and the QR permalink ``?run=<id>&device=1`` (autostart) from ``goto`` to
   the verdict, first page after the server started and again on a new page. Each is split into: to
   the run's start (the frame's manifest.json fetch), the in-browser run (wasm load, compile, the
   rest), and after it (the component value's rerun, the judge_device job, the history, the render).

Run: .venv/bin/python benchmarks/device.py [--rounds 3] [--runs 50] [--presses 2] [--json]
With --json the human-readable lines go to stderr and stdout gets one JSON object at the end.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "sample_models" / "mobilenet_v2_small.keras"
SAMPLES = ROOT / "sample_models" / "mobilenet_v2_small.samples"
WARMUP = 3
_out = sys.stdout


def say(line: str = "") -> None:
    print(line, file=_out, flush=True)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def machine_line() -> str:
    m = machine()
    return f"{m['cpus']} CPUs, load average {', '.join(f'{x:.1f}' for x in m['loadavg'])} (1/5/15 min)"


def pct(xs: list[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q * 100))   # linear, like runner.js


# ---------------------------------------------------------------- step 1: the float32 cell

def convert(d: Path) -> dict:
    """The CLI's float32 conversion into ``d/out``; returns what a TargetInput needs."""
    import subprocess
    cache = d / "convert-cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", TFLITE_LAB_CACHE=str(cache))
    cmd = [sys.executable, "-m", "tflite_lab", "convert", str(MODEL), "--samples", str(SAMPLES),
           "--optimize", "none", "--no-latency", "--no-history", "--out", str(d / "out"), "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    convert_s = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"convert failed ({r.returncode}):\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}")
    report = json.loads((d / "out" / "report.json").read_text())
    # The signature and the original's outputs: the prepared model's record in the CLI's store.
    prepared = None
    for p in sorted((cache / "reports").glob("*.json")):
        rec = json.loads(p.read_text())
        if rec.get("signature") and rec.get("reference_path") and Path(rec["reference_path"]).is_file():
            prepared = rec
    if prepared is None:
        raise SystemExit(f"no prepared model record with a signature under {cache / 'reports'}")
    return {"tflite": str(d / "out" / "model.tflite"), "samples": str(d / "out" / "samples.npz"),
            "reference": prepared["reference_path"], "signature": prepared["signature"],
            "verdict": report.get("verdict"), "convert_s": convert_s, "tflite_bytes": report.get("tflite_bytes"),
            "num_samples": report.get("num_samples")}


def target_input(c: dict, store_root: Path):
    from tflite_lab.targets import TargetInput
    return TargetInput(c["tflite"], c["samples"], c["reference"], c["signature"], store_root=str(store_root))


# ---------------------------------------------------------------- step 2: the two sides

def browser_side(assets: Path, cell: Path) -> dict:
    """runner.js's figures from one headless Chromium (a fresh isolated child, like --target browser)."""
    from tflite_lab.targets import run_isolated
    t0 = time.perf_counter()
    raw = run_isolated("tflite_lab.targets.browser", "chromium_child",
                       {"assets": str(assets), "cell": str(cell), "accelerator": "wasm"}, timeout_s=300)
    wall = time.perf_counter() - t0
    if not raw.get("ok"):
        raise SystemExit(f"LiteRT.js failed: {raw.get('error')}")
    f = raw["figures"]
    lat = f["latency_ms"]
    return {"median_ms": lat["median"], "p90_ms": lat["p90"], "runs": lat["runs"], "warmup": lat["warmup"],
            "runs_per_timing": lat.get("runs_per_timing", 1),
            "load_ms": f.get("load_ms"), "compile_ms": f.get("compile_ms"), "wasm_build": f.get("wasm_build"),
            "hardware_concurrency": f.get("hardware_concurrency"), "user_agent": f.get("user_agent"),
            "child_s": wall, "blocked": raw.get("blocked", [])}


def litert_side(cell: Path, reps: int = 1) -> dict:
    """The same batch-1 bytes in ai_edge_litert, one thread, timed the way runner.js times LiteRT.js
    (each timing a group of ``reps`` runs, divided, when runner.js grouped its runs)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    man = json.loads((cell / "manifest.json").read_text())
    it = Interpreter(model_content=(cell / man["model"]).read_bytes(), num_threads=1)
    it.allocate_tensors()
    by_name = {d["name"]: d for d in it.get_input_details()}
    feed = []
    blobs = json.loads((cell / man["inputs_file"]).read_text())["inputs"] if man.get("inputs_file") else {}
    for t in man["inputs"]:
        d = by_name[t["name"]]
        le = np.dtype(t["dtype"]).newbyteorder("<")
        raw = base64.b64decode(blobs[t["name"]]) if t["name"] in blobs else (cell / t["file"]).read_bytes()
        a = np.frombuffer(raw, dtype=le).astype(t["dtype"])
        k = int(np.prod(t["shape"])) if t["shape"] else 1
        feed.append((d["index"], a[:k].reshape(t["shape"])))          # sample 0, as runner.js times
    outs = [d["index"] for d in it.get_output_details()]

    def run_one():
        for idx, x in feed:
            it.set_tensor(idx, x)
        it.invoke()
        for idx in outs:
            it.get_tensor(idx).copy()

    warmup, runs = man.get("warmup", WARMUP), man.get("runs", 30)
    for _ in range(warmup):
        run_one()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            run_one()
        times.append((time.perf_counter() - t0) * 1000 / reps)
    return {"median_ms": pct(times, 0.5), "p90_ms": pct(times, 0.9), "runs": len(times), "warmup": warmup,
            "runs_per_timing": reps}


# ---------------------------------------------------------------- step 3: time to verdict

def bare_chromium_child(p: dict) -> dict:
    """In an isolated child: chromium_child without LiteRT.js (the same server, Chromium, context,
    route and host page), to split Chromium's start from LiteRT.js's load."""
    from playwright.sync_api import sync_playwright
    from tflite_lab.targets.browser import CHROMIUM_ARGS, chromium, serve_root
    t0 = time.perf_counter()
    srv, port = serve_root(Path(p["assets"]), Path(p["cell"]))
    origin = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as pw:
            t1 = time.perf_counter()
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            t2 = time.perf_counter()
            try:
                ctx = browser.new_context()
                ctx.route("**/*", lambda r: r.continue_() if r.request.url.startswith(origin + "/") else r.abort())
                page = ctx.new_page()
                page.goto(origin + "/")
                page.evaluate("() => document.title")
                t3 = time.perf_counter()
            finally:
                browser.close()
    finally:
        srv.shutdown()
    return {"playwright_s": t1 - t0, "launch_s": t2 - t1, "page_s": t3 - t2, "in_child_s": time.perf_counter() - t0}


def bare_chromium(assets: Path, cell: Path) -> dict:
    from tflite_lab.targets import run_isolated
    t0 = time.perf_counter()
    r = run_isolated("benchmarks.device", "bare_chromium_child", {"assets": str(assets), "cell": str(cell)},
                     timeout_s=300)
    return {**r, "child_s": time.perf_counter() - t0}


def verdict_run(c: dict, store_root: Path) -> dict:
    from tflite_lab.targets.browser import run_browser
    t0 = time.perf_counter()
    rep = run_browser(target_input(c, store_root))
    wall = time.perf_counter() - t0
    if not rep.runs:
        raise SystemExit(f"run_browser: {rep.error}")
    f = rep.figures
    lat = f.get("latency_ms") or {}
    return {"wall_s": wall, "target_s": f.get("target_s"), "load_ms": f.get("load_ms"), "compile_ms": f.get("compile_ms"),
            "median_ms": lat.get("median"), "runs": lat.get("runs"), "runs_per_timing": lat.get("runs_per_timing") or 1,
            "max_abs_diff_vs_litert": max((v["max_abs_diff"] for v in f.get("vs_litert", [])), default=None),
            "max_abs_error_vs_original": max((o.get("max_abs_error", 0.0) for o in rep.outputs), default=None),
            "blocked": f.get("blocked_requests", []), "bundle_dir": rep.bundle_dir}


def timed_prepare(c: dict, store_root: Path, runs: int) -> float:
    from tflite_lab.targets.browser import prepare_cell
    t0 = time.perf_counter()
    prepare_cell(target_input(c, store_root), runs=runs)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- step 4: "Run on this device" in the dashboard

DASH_TIMEOUT_MS = 180_000
IFRAME = 'iframe[title*="litertjs_device"]'
# Rows of the "Devices this cell ran on" table (st.dataframe: its grid's aria-rowcount counts the header and
# the server's row), 0 before the table exists.
DEVICE_ROWS_JS = """() => {
  const label = [...document.querySelectorAll('[data-testid=stMarkdownContainer]')]
    .find((e) => e.textContent.trim() === 'Devices this cell ran on');
  const box = label && label.closest('[data-testid=stElementContainer]');
  const grid = box && box.nextElementSibling && box.nextElementSibling.querySelector('[aria-rowcount]');
  return grid ? Number(grid.getAttribute('aria-rowcount')) - 2 : 0;
}"""
# In the component's frame: the resources it fetched (epoch ms, bytes), to place the run in time and to
# tell a wasm fetched over the wire from one out of the HTTP cache or not fetched at all.
RESOURCES_JS = """() => performance.getEntriesByType('resource').map((e) => ({
  file: e.name.split('?')[0].split('/').pop(), start_ms: performance.timeOrigin + e.startTime,
  end_ms: performance.timeOrigin + e.responseEnd, transfer_bytes: e.transferSize, body_bytes: e.encodedBodySize}))"""


def dashboard_convert(d: Path) -> dict:
    """The CLI conversion the dashboard opens (``--route keras``, recorded in a private run history)."""
    import subprocess
    env = {"TFLITE_LAB_CACHE": str(d / "dash-cache"), "TFLITE_LAB_HOME": str(d / "dash-home")}
    cmd = [sys.executable, "-m", "tflite_lab", "convert", str(MODEL), "--samples", str(SAMPLES), "--route", "keras",
           "--json"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **env))
    convert_s = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"dashboard convert failed ({r.returncode}):\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}")
    rep = json.loads(r.stdout)
    return {"run_id": rep["run_id"], "verdict": rep["verdict"], "convert_s": convert_s, "env": env,
            "cell": f"{rep['route']}-{rep['optimization']}"}


def device_runs(home: str, run_id: str) -> list[dict]:
    from tflite_lab.history import DB_NAME, History
    with History(Path(home) / DB_NAME) as h:
        return h.devices(run_id)


def component_frame(page):
    return page.locator(IFRAME).first.element_handle().content_frame()


def verdict_value(page):
    return page.get_by_test_id("stMetric").filter(has_text="Verdict on this device").get_by_test_id("stMetricValue")


def wait_verdict(page, rows_before: int) -> float:
    """Blocks until the device run shows: a new row in the devices table and the verdict metric; epoch s."""
    page.wait_for_function(f"(n) => ({DEVICE_ROWS_JS})() >= n", arg=rows_before + 1, timeout=DASH_TIMEOUT_MS)
    verdict_value(page).wait_for(timeout=DASH_TIMEOUT_MS)
    return time.time()


def device_figures(page, home: str, run_id: str, n_before: int, t0: float, t_shown: float) -> dict:
    """One device run as the page and the history saw it: times in s from ``t0`` (epoch s)."""
    runs = device_runs(home, run_id)
    if len(runs) != n_before + 1:
        raise SystemExit(f"expected {n_before + 1} device runs of {run_id} in the history, found {len(runs)}")
    dev = runs[-1]["device"] or {}
    res = [r for r in component_frame(page).evaluate(RESOURCES_JS) if r["start_ms"] >= t0 * 1000 - 50]
    manifests = [r for r in res if r["file"] == "manifest.json"]
    if not manifests:
        raise SystemExit("the component fetched no manifest.json during the run")
    run_start = manifests[-1]["start_ms"] / 1000 - t0          # runCell's first fetch, right after its t0
    wasm = [r for r in res if r["file"].endswith(".wasm")]
    wall = dev["wall_ms"] / 1000
    lat = dev.get("latency_ms") or {}
    return {"shown_s": t_shown - t0, "before_run_s": run_start, "wall_s": wall, "after_run_s": t_shown - t0 - run_start - wall,
            "load_s": dev["load_ms"] / 1000, "compile_s": dev["compile_ms"] / 1000,
            "median_ms": lat.get("median"), "runs": lat.get("runs"), "runs_per_timing": lat.get("runs_per_timing") or 1,
            "verdict": runs[-1]["verdict"], "shown": verdict_value(page).text_content(),
            "wasm": wasm[-1] if wasm else None, "max_abs_diff_vs_litert": max(
                (v["max_abs_diff"] for v in dev.get("vs_litert") or []), default=None)}


def open_autostart(ctx, url: str, home: str, run_id: str) -> tuple:
    """A new page on the QR permalink (``&device=1``: Deploy, the run starts by itself) -> verdict."""
    page = ctx.new_page()
    page.set_default_timeout(DASH_TIMEOUT_MS)
    n = len(device_runs(home, run_id))
    t0 = time.time()
    page.goto(f"{url}/?run={run_id}&device=1")
    page.get_by_role("heading", name="Deploy", exact=True).first.wait_for()
    t_page = time.time()
    page.locator(IFRAME).first.wait_for()
    t_frame = component_frame(page).evaluate("() => performance.timeOrigin") / 1000
    verdict_value(page).wait_for()
    t_metric = time.time()
    f = device_figures(page, home, run_id, n, t0, wait_verdict(page, n))
    return {**f, "page_s": t_page - t0, "frame_s": t_frame - t0, "metric_s": t_metric - t0}, page


def open_deploy(ctx, url: str) -> tuple:
    """A new page on Compare (``?run=<id>``, no autostart), then Deploy -> Browser: the button, unpressed."""
    page = ctx.new_page()
    page.set_default_timeout(DASH_TIMEOUT_MS)
    t0 = time.time()
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text("Deploy", exact=True).click()
    page.get_by_text("Browser (LiteRT.js)", exact=True).click()
    from playwright.sync_api import expect
    expect(page.frame_locator(IFRAME).first.get_by_role("button", name="Run on this device")).to_be_enabled(
        timeout=DASH_TIMEOUT_MS)
    return page, time.time() - t0


def press(page, home: str, run_id: str) -> dict:
    """Press "Run on this device" in the component's frame -> the new device row and its verdict."""
    n = len(device_runs(home, run_id))
    button = page.frame_locator(IFRAME).first.get_by_role("button", name="Run on this device")
    from playwright.sync_api import expect
    expect(button).to_be_enabled(timeout=DASH_TIMEOUT_MS)
    t0 = time.time()
    button.click()
    return device_figures(page, home, run_id, n, t0, wait_verdict(page, n))


def dashboard(d: Path, presses: int) -> dict:
    """Cold and warm "Run on this device" in the real dashboard (``streamlit run app.py``, Chromium)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from e2e_helpers import free_port, start_server, stop_server, wait_healthy
    from playwright.sync_api import sync_playwright
    from tflite_lab.targets.browser import CHROMIUM_ARGS, chromium
    c = dashboard_convert(d)
    home, run_id = c["env"]["TFLITE_LAB_HOME"], c["run_id"]
    port = free_port()
    log = d / "streamlit.log"
    t0 = time.perf_counter()
    proc = start_server(port, log, env=c["env"])
    url = f"http://127.0.0.1:{port}"
    offsite: list[str] = []

    def context(pw, name: str):
        """A fresh Chromium profile: an empty HTTP cache on disk that its pages share, as in a real browser.
        Not ``browser.new_context()``: its in-memory cache never keeps the 9.4 MB wasm (a second page
        fetches it again even from a server that allows caching), and not ``route()``: it turns the cache off."""
        ctx = pw.chromium.launch_persistent_context(d / name, executable_path=chromium(), args=CHROMIUM_ARGS,
                                                    viewport={"width": 1440, "height": 1800})
        ctx.on("request", lambda r: None if r.url.startswith((url + "/", "data:", "blob:")) else offsite.append(r.url))
        return ctx

    try:
        wait_healthy(url, proc)
        server_s = time.perf_counter() - t0
        with sync_playwright() as pw:
            a = context(pw, "profile-a")
            try:
                auto_cold, page = open_autostart(a, url, home, run_id)         # the first run of this profile
                same_page = [press(page, home, run_id) for _ in range(presses)]
                page.close()
                auto_warm, page = open_autostart(a, url, home, run_id)         # new page, same HTTP cache
                page.close()
            finally:
                a.close()
            b = context(pw, "profile-b")
            try:
                page, ready_cold_s = open_deploy(b, f"{url}/?run={run_id}")
                press_cold = press(page, home, run_id)                        # wasm not in this profile's cache
                page.close()
                page, ready_warm_s = open_deploy(b, f"{url}/?run={run_id}")
                press_warm = press(page, home, run_id)                        # a new page: the cache could hold it
            finally:
                b.close()
    except Exception:
        say(f"dashboard log ({log}):\n" + log.read_text()[-3000:])
        raise
    finally:
        stop_server(proc)
    return {"convert": {k: c[k] for k in ("convert_s", "verdict", "cell")}, "server_s": server_s,
            "autostart_cold": auto_cold, "autostart_warm": auto_warm, "press_cold": press_cold,
            "press_warm_http_cache": press_warm, "press_same_page": same_page,
            "deploy_ready_cold_s": ready_cold_s, "deploy_ready_warm_s": ready_warm_s, "offsite": offsite}


def ratio(f: dict) -> str:
    return f"{f['shown_s']:.2f} s / {f['wall_s']:.2f} s = {f['shown_s'] / f['wall_s']:.2f}x"


def wasm_note(f: dict) -> str:
    w = f["wasm"]
    if w is None:
        return "wasm not fetched (already instantiated in this page)"
    how = "from the HTTP cache" if w["transfer_bytes"] == 0 else f"{w['transfer_bytes'] / 1e6:.1f} MB over the wire"
    return f"wasm {how}, fetch {(w['end_ms'] - w['start_ms']) / 1000:.2f} s"


def press_line(tag: str, f: dict) -> str:
    return f"  {tag}: {f['shown_s']:.2f} s = {f['before_run_s']:.2f} s to the run's start + {run_parts(f)}"


def run_parts(f: dict) -> str:
    """The in-browser run and what follows it, as one clause."""
    infer = f["wall_s"] - f["load_s"] - f["compile_s"]
    return (f"{f['wall_s']:.2f} s in-browser run "
            f"(LiteRT.js wasm load {f['load_s']:.2f} s, model fetch+compile {f['compile_s']:.2f} s, "
            f"{infer:.2f} s fetches, samples and timed runs at {f['median_ms']:.2f} ms median) + "
            f"{f['after_run_s']:.2f} s to the verdict shown (rerun, judge_device job, history, render); {wasm_note(f)}")


# ---------------------------------------------------------------- main

def main(rounds: int, runs: int, as_json: bool, presses: int = 2) -> dict:
    from tflite_lab.targets.browser import RUNS, prepare_cell
    from tflite_lab.targets.web_assets import assets_dir, litertjs_version
    t_start = time.perf_counter()
    m_start = machine()
    say(machine_line() + " (start)")
    with tempfile.TemporaryDirectory(prefix="bench-device-") as tmp:
        d = Path(tmp)
        c = convert(d)
        say(f"MobileNetV2 (alpha 0.35, 96x96) float32 via the CLI: {c['convert_s']:.1f} s, {c['tflite_bytes']:,} bytes, "
            f"{c['num_samples']} samples, verdict {c['verdict']}")
        store = d / "store"
        # A budget large enough that runner.js never cuts the runs short: both sides do exactly `runs`.
        cell = prepare_cell(target_input(c, store), warmup=WARMUP, runs=runs, budget_ms=600_000)
        assets = assets_dir(store)

        # -- 2. warm batch-1 latency, alternating sides
        br, lr = [], []
        for i in range(rounds):
            order = ("browser", "litert") if i % 2 == 0 else ("litert", "browser")
            for side in order:
                if side == "browser":
                    br.append(browser_side(assets, cell))
                else:
                    # Groups as large as runner.js's (it groups runs shorter than ~2 ms: coarse page clock).
                    lr.append(litert_side(cell, br[0]["runs_per_timing"] if br else 1))
            say(f"round {i + 1} ({', '.join(order)}): LiteRT.js median {br[-1]['median_ms']:.2f} ms "
                f"p90 {br[-1]['p90_ms']:.2f} ms; LiteRT 1 thread median {lr[-1]['median_ms']:.2f} ms "
                f"p90 {lr[-1]['p90_ms']:.2f} ms -> {br[-1]['median_ms'] / lr[-1]['median_ms']:.2f}x")
        med = statistics.median
        b_med, l_med = med(x["median_ms"] for x in br), med(x["median_ms"] for x in lr)
        b_p90, l_p90 = med(x["p90_ms"] for x in br), med(x["p90_ms"] for x in lr)
        say(f"warm batch-1, median of {rounds} rounds x {runs} timings ({WARMUP} warm-up; each timing "
            f"{br[0]['runs_per_timing']} run(s), divided, on both sides): "
            f"LiteRT.js wasm ({br[0]['wasm_build']}, Chromium) {b_med:.2f} ms (p90 {b_p90:.2f}); "
            f"ai_edge_litert num_threads=1 {l_med:.2f} ms (p90 {l_p90:.2f})")
        say(f"browser/litert ratio: {b_med / l_med:.2f}x median, {b_p90 / l_p90:.2f}x p90 "
            f"(LiteRT.js {litertjs_version()} vs the server's LiteRT: it measures LiteRT.js, not our code; "
            f"navigator.hardwareConcurrency {br[0]['hardware_concurrency']})")

        # -- 3. time to verdict
        bare = [bare_chromium(assets, cell) for _ in range(2)]
        colds = [verdict_run(c, d / f"verdict-store-{i}") for i in range(2)]   # each a new store dir
        warm = [verdict_run(c, d / "verdict-store-1") for _ in range(2)]       # its cell folder exists
        cold = min(colds, key=lambda x: x["wall_s"])
        prep_cold = timed_prepare(c, d / "prep-store", RUNS)
        prep_warm = timed_prepare(c, d / "prep-store", RUNS)
        bare_s = med(x["child_s"] for x in bare)
        w = min(warm, key=lambda x: x["wall_s"])
        say(f"time to verdict, run_browser(TargetInput(...)): cold {med(x['wall_s'] for x in colds):.2f} s "
            f"(runs {', '.join(format(x['wall_s'], '.2f') for x in colds)}), warm {med(x['wall_s'] for x in warm):.2f} s "
            f"(runs {', '.join(format(x['wall_s'], '.2f') for x in warm)}) -> warm/cold {med(x['wall_s'] for x in warm) / med(x['wall_s'] for x in colds):.2f}x; "
            f"breakdowns below are of the fastest of each")
        for tag, v, prep in (("cold", cold, prep_cold), ("warm", w, prep_warm)):
            n_runs = (v["runs"] or 0) * v["runs_per_timing"] + WARMUP + (c["num_samples"] or 0)
            run_s = (v["median_ms"] or 0) * n_runs / 1000
            rest = v["wall_s"] - prep - bare_s - v["load_ms"] / 1000 - v["compile_ms"] / 1000 - run_s
            say(f"  {tag}: prepare_cell {prep:.2f} s + bare Chromium child {bare_s:.2f} s + LiteRT.js wasm load "
                f"{v['load_ms'] / 1000:.2f} s + model load/compile {v['compile_ms'] / 1000:.2f} s + "
                f"~{run_s:.2f} s inference ({c['num_samples']} samples + {WARMUP} warm-up + {v['runs']}x{v['runs_per_timing']} "
                f"timed, at the median) "
                f"+ {rest:.2f} s rest (module import in the child, fetches, judging)")
        b0 = bare[0]
        py = b0["child_s"] - b0["in_child_s"]
        close = b0["in_child_s"] - b0["playwright_s"] - b0["launch_s"] - b0["page_s"]
        say(f"  bare Chromium child (first of 2, {b0['child_s']:.2f} s): Python child start + imports {py:.2f} s, "
            f"loopback server + Playwright driver {b0['playwright_s']:.2f} s, Chromium launch {b0['launch_s']:.2f} s, "
            f"context + host page {b0['page_s']:.2f} s, close {close:.2f} s")
        say(f"  outputs: LiteRT.js vs server LiteRT max abs diff {cold['max_abs_diff_vs_litert']:.2e}, "
            f"vs the original {cold['max_abs_error_vs_original']:.2e}; blocked requests: "
            f"{len(cold['blocked']) + sum(len(x['blocked']) for x in br)}")

        # -- 4. "Run on this device" in the dashboard
        say(machine_line() + " (dashboard)")
        dash = dashboard(d, presses)
        same = dash["press_same_page"]
        say(f"dashboard 'Run on this device' (streamlit run app.py, {dash['convert']['cell']} from the CLI in "
            f"{dash['convert']['convert_s']:.1f} s, server healthy in {dash['server_s']:.1f} s), press -> verdict shown / "
            f"the page's own run time (wall_ms): cold (fresh profile) {ratio(dash['press_cold'])}; warm, new page of the "
            f"same profile {ratio(dash['press_warm_http_cache'])}; warm, same page "
            f"{', '.join(ratio(f) for f in same)}")
        for tag, f in (("cold press", dash["press_cold"]), ("warm press, new page", dash["press_warm_http_cache"]),
                       *((f"warm press, same page #{i + 1}", f) for i, f in enumerate(same))):
            say(press_line(tag, f))
        say(f"  (before each press on a new page: ?run=<id> -> Deploy -> Browser, button enabled after "
            f"{dash['deploy_ready_cold_s']:.2f} s cold, {dash['deploy_ready_warm_s']:.2f} s warm; not in the figures above)")
        for tag, f in (("first page after the server started", dash["autostart_cold"]),
                       ("again on a new page of the same profile", dash["autostart_warm"])):
            say(f"autostart ?run=<id>&device=1, {tag}: goto -> verdict metric {f['metric_s']:.2f} s, -> new device row "
                f"{f['shown_s']:.2f} s = {f['shown_s'] / f['wall_s']:.2f}x the page's run ({f['wall_s']:.2f} s); "
                f"Deploy heading at {f['page_s']:.2f} s, component frame at {f['frame_s']:.2f} s, run start at "
                f"{f['before_run_s']:.2f} s (device_cell job, component load), then:")
            say(f"    {run_parts(f)}")
        every = (dash["press_cold"], dash["press_warm_http_cache"], dash["autostart_cold"], dash["autostart_warm"], *same)
        say(f"  device verdicts {sorted({f['verdict'] for f in every})}, shown {sorted({f['shown'] for f in every})}; "
            f"max |LiteRT.js - server "
            f"LiteRT| {dash['press_cold']['max_abs_diff_vs_litert']:.2e}; requests off the app's origin: {len(dash['offsite'])}")
        total = time.perf_counter() - t_start
        say(machine_line() + f" (end; whole benchmark {total:.0f} s)")
        return {"machine": {"start": m_start, "end": machine()}, "litertjs": litertjs_version(), "convert": {k: c[k] for k in (
                    "convert_s", "tflite_bytes", "num_samples", "verdict")},
                "latency": {"rounds": rounds, "runs": runs, "warmup": WARMUP, "browser": br, "litert": lr,
                            "browser_median_ms": b_med, "litert_median_ms": l_med,
                            "browser_p90_ms": b_p90, "litert_p90_ms": l_p90,
                            "ratio_median": b_med / l_med, "ratio_p90": b_p90 / l_p90},
                "time_to_verdict": {"cold": colds, "warm": warm, "bare_chromium": bare,
                                    "prepare_cell_cold_s": prep_cold, "prepare_cell_warm_s": prep_warm},
                "dashboard": dash, "total_s": total}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (browser, litert) / (litert, browser)")
    ap.add_argument("--runs", type=int, default=50, help="timed warm batch-1 runs per side per round")
    ap.add_argument("--json", action="store_true", help="human lines to stderr, one JSON object on stdout")
    ap.add_argument("--presses", type=int, default=2, help="dashboard: warm presses in the same page")
    a = ap.parse_args()
    if a.json:
        _out = sys.stderr
    result = main(a.rounds, a.runs, a.json, a.presses)
    if a.json:
        print(json.dumps(result))
