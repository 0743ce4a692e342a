"""Permalinks and the offline HTML report in Chromium, for a run the CLI recorded."""
from __future__ import annotations

import json

import pytest
from e2e_helpers import ARTIFACTS, ROOT
from playwright.sync_api import expect

from lab_helpers import run_cli

pytestmark = pytest.mark.e2e
SAMPLES = ROOT / "sample_models"
LOAD_MS = 60_000           # a page load on a busy 2-core CI box (expect's own default is 5 s)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One real CLI conversion, recorded in the history the server reads, with its HTML report."""
    report = tmp_path_factory.mktemp("report") / "report.html"
    p = run_cli("convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz",
                "--optimize", "dynamic", "--json", "--report", report)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), report


def test_permalink_in_a_fresh_context_shows_the_run(browser, server, cli_run):
    public, _ = cli_run
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{server}/?run={public['run_id']}")
        expect(page.get_by_role("heading", name="Compare", exact=True).first).to_be_visible(timeout=LOAD_MS)
        verdict = page.get_by_test_id("stMetric").filter(has_text="Verdict").get_by_test_id("stMetricValue")
        expect(verdict).to_have_text(public["verdict"].upper(), timeout=LOAD_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "permalink.png"))
        page.goto(f"{server}/?run=nosuchrun")
        expect(page.get_by_text("No run 'nosuchrun' in the run history")).to_be_visible(timeout=LOAD_MS)
        expect(page.get_by_role("heading", name="Model", exact=True).first).to_be_visible(timeout=LOAD_MS)
    finally:
        context.close()


def test_saved_report_renders_offline(browser, cli_run):
    public, report = cli_run
    context = browser.new_context(viewport={"width": 1440, "height": 1400})
    blocked = []

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()
    context.route("**/*", route)
    page = context.new_page()
    try:
        page.goto(report.as_uri())
        charts = page.locator(".js-plotly-plot .main-svg")
        expect(charts.nth(1)).to_be_visible(timeout=30_000)
        assert page.locator(".js-plotly-plot").count() >= 2
        table = page.locator("table.metrics")
        expect(table).to_be_visible()
        expect(table).to_contain_text(public["outputs"][0]["name"])
        expect(page.locator(".verdict").first).to_have_text(public["verdict"].upper())
        assert blocked == []          # nothing even tried to leave the file
        page.screenshot(path=str(ARTIFACTS / "report-offline.png"), full_page=True)
    finally:
        context.close()
