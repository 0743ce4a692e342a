"""Start and stop `streamlit run app.py` on a free port; Chromium settings (shared by the e2e tests and benchmarks)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log_path: Path, env: dict | None = None, app: Path = ROOT / "app.py") -> subprocess.Popen:
    """`streamlit run app.py` bound to localhost (no external-IP lookup, no usage stats)."""
    log = open(log_path, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **(env or {})), start_new_session=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (its worker processes notice the closed socket and exit)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def settle(page, timeout_ms: float = 120_000) -> None:
    """Wait until the script run started by the last action has finished (Streamlit's running icon gone)."""
    from playwright.sync_api import expect
    page.wait_for_timeout(400)          # the icon shows only once a run has lasted a moment
    running = page.get_by_test_id("stStatusWidgetRunningIcon").or_(page.get_by_test_id("stStatusWidgetRunningManIcon"))
    expect(running).to_have_count(0, timeout=timeout_ms)


def click_until(page, target, effect, tries: int = 3, timeout_ms: float = 120_000) -> None:
    """Click ``target`` and wait for ``effect`` to be visible. A click that lands while the page is still
    re-rendering (a component's value arriving after the app's own run) can be lost on a busy machine,
    so the run is let finish first, and the click is repeated only when, after it, the effect is absent."""
    for attempt in range(tries):
        settle(page, timeout_ms)
        target.click()
        settle(page, timeout_ms)
        try:
            effect.first.wait_for(state="visible", timeout=10_000 if attempt < tries - 1 else timeout_ms)
            return
        except Exception:
            if attempt == tries - 1:
                raise
