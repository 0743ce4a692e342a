"""'Run on this device' through the dashboard: the QR permalink (?run=<id>&device=1) opened in Chromium
runs the cell in LiteRT.js in that browser, and the server records the judged device run."""
from __future__ import annotations

import json

import numpy as np

import pytest
from e2e_helpers import ARTIFACTS, ROOT, click_until
from playwright.sync_api import expect

from lab_helpers import run_cli

pytestmark = pytest.mark.e2e
SAMPLES = ROOT / "sample_models"
LOAD_MS = 120_000          # a worker start, the model's batch-1 copy and the wasm on a busy 2-core box


def test_device_permalink_runs_in_this_browser_and_is_recorded(browser, server):
    from tflite_lab.history import History
    p = run_cli("convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz",
                "--route", "keras", "--json")
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    context = browser.new_context(viewport={"width": 1440, "height": 1800})
    origin = server.rstrip("/")
    blocked = []
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(origin + "/")
                  else (blocked.append(r.request.url), r.abort()))
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    try:
        page.goto(f"{origin}/?run={run_id}&device=1")
        expect(page.get_by_role("heading", name="Deploy", exact=True).first).to_be_visible(timeout=LOAD_MS)
        verdict = page.get_by_test_id("stMetric").filter(has_text="Verdict on this device").get_by_test_id("stMetricValue")
        expect(verdict).to_have_text("PASS", timeout=LOAD_MS)
        expect(page.get_by_text("Devices this cell ran on")).to_be_visible(timeout=LOAD_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.get_by_text("Open on your phone").click()
        code = page.get_by_test_id("stCode").filter(has_text="device=1")
        expect(code).to_contain_text(f"?run={run_id}&device=1", timeout=LOAD_MS)
        expect(page.get_by_text("opened on loopback")).to_be_visible(timeout=LOAD_MS)   # the e2e server listens on 127.0.0.1 only
        page.screenshot(path=str(ARTIFACTS / "device-panel.png"), full_page=True)
    finally:
        context.close()
    assert blocked == []           # LiteRT.js, its wasm and the model all come from the app itself
    with History() as h:
        devices = h.devices(run_id)
    assert len(devices) == 1
    d = devices[0]
    assert d["kind"] == "device" and d["parent_run"] == run_id and d["verdict"] == "pass"
    dev = d["device"]
    assert "HeadlessChrome" in dev["user_agent"] and dev["accelerator"] == "wasm"
    n = json.loads(p.stdout)["num_samples"]
    assert dev["output_stats"][0]["shape"] == [n, 10]          # every sample ran, one at a time
    assert dev["latency_ms"]["median"] > 0 and dev["latency_ms"]["p90"] >= dev["latency_ms"]["median"]
    assert [v["name"] for v in dev["vs_litert"]] == ["probs"] and dev["vs_litert"][0]["max_abs_diff"] <= 1e-5
    # The device's outputs as the server kept them, against the original recomputed here with Keras.
    import keras
    import numpy as np
    got = np.load(dev["outputs_path"])["probs"]
    want = keras.saving.load_model(SAMPLES / "digits_cnn.keras").predict(
        np.load(SAMPLES / "digits_cnn.samples.npz")["image"][:n], verbose=0)
    assert abs(float(np.max(np.abs(got - want))) - dev["outputs"][0]["max_abs_error"]) <= 1e-6
    assert dev["outputs"][0]["max_abs_error"] <= 1e-5
    # History's view of the cell's run and its HTML report carry the device next to the server.
    from tflite_lab.history import device_label
    from tflite_lab.report_html import render_report
    with History() as h:
        run = h.get(run_id)
    assert [d["id"] for d in run["devices"]] == [d["id"]]
    html = render_report([run])
    assert "On devices" in html and device_label(dev) in html and "server / LiteRT" in html


def test_try_it_puts_a_dropped_image_through_all_three_with_the_runs_class_names(browser, server, tmp_path):
    import io

    from PIL import Image
    names = tmp_path / "digits.txt"
    names.write_text("\n".join(f"digit-{i}" for i in range(10)))
    p = run_cli("convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz",
                "--route", "keras", "--no-latency", "--class-names", names, "--json")
    assert p.returncode == 0, p.stderr
    run_id = json.loads(p.stdout)["run_id"]
    img = tmp_path / "three.png"
    buf = io.BytesIO()
    Image.fromarray((np.load(SAMPLES / "digits_cnn.samples.npz")["image"][3, :, :, 0] * 255).astype("uint8")).save(buf, "PNG")
    img.write_bytes(buf.getvalue())
    context = browser.new_context(viewport={"width": 1440, "height": 2400})
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    try:
        page.goto(f"{server.rstrip('/')}/?run={run_id}&device=1")
        expect(page.get_by_text("Verdict on this device")).to_be_visible(timeout=LOAD_MS)
        dropzone = page.locator("section[data-testid='stFileUploaderDropzone']")
        click_until(page, page.get_by_role("radio", name="An image file"), dropzone, timeout_ms=LOAD_MS)
        dropzone.locator("input[type=file]").set_input_files(str(img))
        expect(page.get_by_text("three.png")).to_be_visible(timeout=LOAD_MS)
        page.get_by_role("button", name="Try it").click()
        expect(page.get_by_text("Input: three.png resized to 8x8, grey")).to_be_visible(timeout=LOAD_MS)
        expect(page.get_by_text("max |Δ| vs server LiteRT")).to_be_visible(timeout=LOAD_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "try-it.png"), full_page=True)
        tables = page.get_by_test_id("stTable")
        texts = [tables.nth(i).inner_text() for i in range(tables.count())]
    finally:
        context.close()
    # The original's top class for this image, computed here; all three columns name it.
    import keras
    x = np.asarray(Image.open(img).convert("L"), np.float32)[None, :, :, None] / 255.0
    want = int(np.argmax(keras.saving.load_model(SAMPLES / "digits_cnn.keras").predict(x, verbose=0)))
    assert sum(f"digit-{want}" in t for t in texts) >= 3, texts
