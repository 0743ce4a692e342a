"""The Debug page in Chromium: upload -> Debug -> tables, chart and graph render -> keep float -> the
new cell is on Compare."""
from __future__ import annotations

import pytest
from e2e_helpers import ARTIFACTS
from playwright.sync_api import Page, expect
from test_dashboard import SLOW_MS, metric, no_traceback, open_page, upload, upload_model

pytestmark = pytest.mark.e2e


def test_debug_keep_float_then_compare(page: Page, sensitive_model):
    upload_model(page, sensitive_model / "sensitive.keras")
    expect(metric(page, "Format")).to_have_text("keras", timeout=SLOW_MS)
    page.get_by_role("radiogroup", name="Samples come from").get_by_text("a file I upload").click()
    upload(page, "Sample inputs", sensitive_model / "sensitive.samples.npz")
    expect(page.get_by_test_id("stSidebar").get_by_text("Samples: sensitive.samples.npz")).to_be_visible()

    open_page(page, "Debug")
    page.get_by_role("button", name="Debug", exact=True).click()
    expect(page.get_by_role("heading", name="Layer-isolated error")).to_be_visible(timeout=SLOW_MS)
    # On a busy 2-core box the charts' scripts load seconds after the page's text.
    expect(page.get_by_role("heading", name="Accumulated error")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stGraphVizChart").locator("svg")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Smallest model within tolerance: 1 layer(s) in float")).to_be_visible(timeout=60_000)
    no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "debug.png"), full_page=True)

    page.get_by_role("button", name="Convert with these in float").click()
    expect(page.get_by_text("saved_model-int8 (1 float)").first).to_be_visible(timeout=SLOW_MS)
    no_traceback(page)
    open_page(page, "Compare")
    expect(page.get_by_test_id("stSelectbox").filter(has_text="Converted model").locator("input")).to_have_value(
        "saved_model-int8 (1 float)", timeout=60_000)
    expect(metric(page, "Verdict")).to_have_text("PASS", timeout=60_000)
    no_traceback(page)
