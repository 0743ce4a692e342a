"""Fixtures: a real `streamlit run app.py` on a free port and Debian's Chromium driven by Playwright."""
from __future__ import annotations

import pytest
from e2e_helpers import ARTIFACTS, free_port, start_server, stop_server, wait_healthy


@pytest.fixture(scope="session")
def server_process():
    """The streamlit process and its URL."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    proc = start_server(port, ARTIFACTS / "streamlit-server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield proc, url
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def server(server_process):
    return server_process[1]


@pytest.fixture
def page(browser, server, request):
    """A fresh browser session (so a fresh Streamlit session) on the app; screenshot on the way out."""
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    p = context.new_page()
    p.set_default_timeout(60_000)
    p.goto(server)
    yield p
    p.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"))
    context.close()
