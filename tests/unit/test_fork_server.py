"""The fork server on its own (what Ray's tasks use): a stale socket is replaced, a fork serves jobs and
ends when its caller's connection closes, and the server ends with the process it was started for."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from lab_helpers import SAMPLES
from tflite_lab import fork_server
from tflite_lab.pipeline import source_json
from tflite_lab.sources import source_from_path


def _gone(pid: int, within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_fork_serves_jobs_ends_with_its_caller_and_the_server_with_its_anchor(tmp_path, monkeypatch):
    monkeypatch.setenv("TFLITE_LAB_CACHE", str(tmp_path / "cache"))
    anchor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path = fork_server.socket_path(anchor.pid)
    stale = socket.socket(socket.AF_UNIX)          # a dead server's socket file: connecting is refused
    stale.bind(path)
    stale.close()
    try:
        env = {"TFLITE_LAB_CACHE": str(tmp_path / "cache"), "TFLITE_LAB_UPLOAD": "test"}
        conn, child = fork_server.fork_worker(anchor.pid, env)
        server = psutil.Process(child).ppid()
        assert "tflite_lab.fork_server" in " ".join(psutil.Process(server).cmdline())
        assert psutil.Process(child).cmdline() == psutil.Process(server).cmdline()      # forked, not spawned
        workspace = tmp_path / "ws"
        workspace.mkdir()
        src = source_json(source_from_path(SAMPLES / "digits_cnn.keras"))
        conn.send((1, "describe", {"source": src}, str(workspace)))
        kind, job_id, payload = conn.recv()
        while kind == "progress":
            kind, job_id, payload = conn.recv()
        assert (kind, job_id) == ("ok", 1), payload
        assert payload["signature"]["inputs"]                  # a real job ran in the fork
        assert not workspace.exists()                          # and cleaned its workspace

        conn2, child2 = fork_server.fork_worker(anchor.pid, env)       # a second caller: its own process
        assert child2 != child and psutil.Process(child2).ppid() == server
        conn.close()
        assert _gone(child), "a fork outlived its caller's connection"
        assert psutil.pid_exists(child2)
        anchor.kill()
        anchor.wait()
        assert _gone(server), "the server outlived the process it was started for"
        assert not os.path.exists(path) and not os.path.exists(path + ".lock")
        conn2.close()
        assert _gone(child2)
    finally:
        if anchor.poll() is None:
            anchor.kill()
