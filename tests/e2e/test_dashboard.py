"""The dashboard in Chromium: upload, convert, compare, matrix (cancelled, then finished), and a corrupt upload."""
from __future__ import annotations

import os
import re
import shutil
import time

import psutil
import pytest
from e2e_helpers import ARTIFACTS, ROOT
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e
SAMPLES = ROOT / "sample_models"
SLOW_MS = 180_000          # a conversion or the matrix on a cold 2-core CI box


def upload(page: Page, label: str, path) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=label)
    uploader.locator("input[type=file]").set_input_files(str(path))


def upload_model(page: Page, path) -> None:
    upload(page, "Model file", path)


def open_page(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()


def metric(page: Page, label: str):
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def no_traceback(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)


def test_upload_convert_compare(page: Page):
    expect(page.get_by_role("heading", name="Model", exact=True).first).to_be_visible(timeout=60_000)   # first paint on a busy box
    upload_model(page, SAMPLES / "digits_cnn.keras")
    expect(metric(page, "Parameters")).to_have_text("38,282", timeout=SLOW_MS)
    expect(metric(page, "Format")).to_have_text("keras")
    page.get_by_role("radiogroup", name="Samples come from").get_by_text("a file I upload").click()
    upload(page, "Sample inputs", SAMPLES / "digits_cnn.samples.npz")
    expect(page.get_by_test_id("stSidebar").get_by_text("Samples: digits_cnn.samples.npz")).to_be_visible()

    open_page(page, "Convert")
    page.get_by_text("Dynamic range", exact=True).click()
    page.get_by_role("button", name="Convert", exact=True).click()
    expect(metric(page, "Verdict")).to_have_text("PASS", timeout=SLOW_MS)
    expect(page.get_by_text("Reproduce it")).to_be_visible()
    expect(page.get_by_role("button", name="Download .tflite")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "convert.png"), full_page=True)

    open_page(page, "Compare")
    expect(metric(page, "Verdict")).to_have_text("PASS")
    expect(metric(page, "Samples compared")).to_have_text("64")
    charts = page.get_by_test_id("stPlotlyChart")
    expect(charts.nth(1)).to_be_visible(timeout=30_000)
    expect(charts.locator(".main-svg").nth(1)).to_be_visible()
    assert charts.count() >= 2
    expect(page.get_by_text("Sample drill-down")).to_be_visible()
    no_traceback(page)
    page.set_viewport_size({"width": 1440, "height": 1500})
    page.wait_for_timeout(1500)           # let plotly finish drawing before the picture
    page.screenshot(path=str(ARTIFACTS / "compare.png"))
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):      # the README's picture: UPDATE_DOCS_SCREENSHOT=1 pytest tests/e2e
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / "compare.png", ROOT / "docs" / "compare.png")

    open_page(page, "Size & speed")
    expect(metric(page, "Size reduction")).to_have_text(re.compile(r"^\d+(\.\d)?×$"))
    no_traceback(page)


def workers(server_process) -> set[int]:
    """The server's live worker processes (a killed one not yet reaped is a zombie: gone)."""
    live = set()
    for p in psutil.Process(server_process[0].pid).children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "tflite_lab.worker" in " ".join(p.cmdline()):
                live.add(p.pid)
        except psutil.Error:
            pass                # exited while listed
    return live


def test_matrix_on_a_small_model_cancelled_then_finished(page: Page, server_process):
    upload_model(page, SAMPLES / "diabetes_regressor_savedmodel.zip")
    expect(metric(page, "Format")).to_have_text("saved_model", timeout=SLOW_MS)
    open_page(page, "Matrix")
    expect(metric(page, "Supported")).to_have_text("13")
    page.get_by_role("button", name="Run matrix").click()
    # 1 to 9 of 13: cells are still converting on both threads (12 or 13 may be the last cell or the
    # bench phase's end), so a worker is busy when Cancel lands.
    progress = page.get_by_text(re.compile(r"^[1-9] of 13 cells finished"))
    expect(progress).to_be_visible(timeout=SLOW_MS)
    running = workers(server_process)
    seen = progress.inner_text()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("The matrix run was cancelled and its worker stopped")).to_be_visible(timeout=30_000)
    deadline = time.monotonic() + 10
    while running <= workers(server_process) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running <= workers(server_process), \
        f"the cancelled cells' worker processes are stopped (cancelled at {seen!r}; workers {running} -> {workers(server_process)})"
    no_traceback(page)
    rest = page.get_by_role("button", name=re.compile(r"^Run \d+ remaining cells$"))
    expect(rest).to_be_visible()
    left = int(re.search(r"\d+", rest.inner_text()).group())
    assert 0 < left < 13
    expect(metric(page, "Errors")).to_have_text("0")         # a cancel is not a failure
    rest.click()
    # A cell whose result came in while the cancel landed is kept (results go straight into the
    # session), so the button read a moment earlier may count one cell more than is left to run.
    ran = page.get_by_text(re.compile(r"^Ran \d+ cells in"))
    expect(ran).to_be_visible(timeout=SLOW_MS)
    assert 0 < int(re.search(r"\d+", ran.inner_text()).group()) <= left
    expect(metric(page, "Computed")).to_have_text("13")
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "matrix.png"), full_page=True)

    page.get_by_role("button", name="Open on Compare").click()
    expect(page.get_by_role("heading", name="Compare", exact=True).first).to_be_visible()
    expect(metric(page, "Verdict")).to_have_text("PASS")      # the best cell is, by definition, within tolerance


def test_a_corrupt_upload_shows_one_clear_line(page: Page, tmp_path):
    broken = tmp_path / "model.keras"
    broken.write_bytes((SAMPLES / "digits_cnn.keras").read_bytes()[:3000])     # a truncated zip
    upload_model(page, broken)
    alert = page.get_by_test_id("stAlertContentError")
    expect(alert).to_contain_text("model.keras is a truncated or corrupt zip archive", timeout=60_000)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "corrupt-upload.png"), full_page=True)


def test_an_upload_left_at_once_for_another_page_is_not_lost(page: Page):
    """Leaving the Model page as soon as the file name shows, while the worker still reads the model
    (MobileNetV2: seconds): the next page waits for the model instead of saying "No model yet"."""
    expect(page.get_by_role("heading", name="Model", exact=True).first).to_be_visible(timeout=60_000)   # first paint on a busy box
    upload_model(page, SAMPLES / "mobilenet_v2_small.keras")
    expect(page.get_by_role("button", name="Remove mobilenet_v2_small.keras")).to_be_visible()
    assert page.get_by_test_id("stMetric").count() == 0         # not read yet: the race this test is about
    page.get_by_test_id("stSidebarNav").get_by_text("Convert", exact=True).click()
    expect(page.get_by_role("heading", name="Convert", exact=True).first).to_be_visible()
    expect(page.get_by_role("button", name="Convert", exact=True)).to_be_visible(timeout=SLOW_MS)
    expect(page.get_by_text("No model yet")).to_have_count(0)
    expect(page.get_by_test_id("stSidebar").get_by_text("mobilenet_v2_small.keras")).to_be_visible()
    no_traceback(page)
