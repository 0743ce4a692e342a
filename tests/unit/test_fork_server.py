"""The fork server on its own (what Ray's tasks use): a stale socket is replaced; a fork serves one
upload, goes back to the server between callers and kills itself when its caller leaves during a
job; the server ends with the process it was started for, and its forks with it."""
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
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path


def _gone(pid: int, within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def _job(conn, job_id, name, kwargs, workspace):
    conn.send((job_id, name, kwargs, str(workspace)))
    kind, got, payload = conn.recv()
    while kind == "progress":
        kind, got, payload = conn.recv()
    assert (kind, got) == ("ok", job_id), payload
    return payload


@pytest.mark.slow
def test_forks_serve_one_upload_stay_warm_between_callers_end_on_a_dropped_job_and_with_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("TFLITE_LAB_CACHE", str(tmp_path / "cache"))
    anchor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    path = fork_server.socket_path(anchor.pid)
    stale = socket.socket(socket.AF_UNIX)          # a dead server's socket file: connecting is refused
    stale.bind(path)
    stale.close()
    ws = iter(tmp_path / f"ws{i}" for i in range(100))

    def workspace():
        w = next(ws)
        w.mkdir()
        return w
    try:
        env = {"TFLITE_LAB_CACHE": str(tmp_path / "cache"), "TFLITE_LAB_UPLOAD": "a"}
        src = source_json(source_from_path(SAMPLES / "digits_cnn.keras"))
        conn, child = fork_server.fork_worker(anchor.pid, env)
        server = psutil.Process(child).ppid()
        assert "tflite_lab.fork_server" in " ".join(psutil.Process(server).cmdline())
        assert psutil.Process(child).cmdline() == psutil.Process(server).cmdline()      # forked, not spawned
        w = workspace()
        assert _job(conn, 1, "describe", {"source": src}, w)["signature"]["inputs"]    # a real job ran in the fork
        assert not w.exists()                                                        # and cleaned its workspace

        # Another caller while the first holds it: a process of its own. Another upload: never a shared one.
        conn2, child2 = fork_server.fork_worker(anchor.pid, env)
        other, child3 = fork_server.fork_worker(anchor.pid, {**env, "TFLITE_LAB_UPLOAD": "b"})
        assert len({child, child2, child3}) == 3 and {psutil.Process(c).ppid() for c in (child2, child3)} == {server}
        other.close()
        # A caller done says goodbye, and once it is answered the fork is the server's again: the
        # upload's next caller gets it, warm (no wait: a Ray task starts right after the last ended).
        conn.send(None)
        assert conn.recv()[0] == "bye"
        conn.close()
        again, same = fork_server.fork_worker(anchor.pid, env)
        assert same == child
        # A caller that just closes between jobs hands its fork back too (the server hears of it shortly).
        conn2.close()
        time.sleep(1.0)
        conn2, pid = fork_server.fork_worker(anchor.pid, env)
        assert pid == child2, "a fork closed between jobs did not come back to the pool"
        assert _job(again, 2, "describe", {"source": src}, workspace())["signature"]["inputs"]
        # A caller gone in the middle of a job (a cancelled Ray task): the fork kills itself at once.
        again.send((3, "prepare", {"source": src, "spec": SampleSpec(count=4), "bench": BenchSpec(enabled=False)},
                    str(workspace())))
        assert again.poll(60) and again.recv()[0] == "progress"          # the job is running
        again.close()
        assert _gone(child), "a fork ran on after its caller left in the middle of a job"
        last, fresh = fork_server.fork_worker(anchor.pid, env)
        assert fresh not in (child, child2, child3)        # never handed a dead fork
        anchor.kill()
        anchor.wait()
        assert _gone(server), "the server outlived the process it was started for"
        assert not os.path.exists(path) and not os.path.exists(path + ".lock")
        for c in (conn2, last):
            c.close()
        assert _gone(child2) and _gone(fresh) and _gone(child3), "a fork outlived its server"
    finally:
        if anchor.poll() is None:
            anchor.kill()
