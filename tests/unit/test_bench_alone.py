"""Latency timed alone on the whole server, not only within one run (issue 16, item 7).

Two sessions share one store root (the test session's): session A keeps converting a real model
in its own worker pool (back to back, each conversion into a fresh store so it really converts),
session B benches meanwhile, from its own pool or as a separate CLI process. B's bench must wait
for A's conversion and keep A's next one from starting (their windows never overlap), and with the
wait bound set tiny it must time anyway and name A's job in its ``conditions`` and next to the
number in the CLI table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

import pytest

from lab_helpers import run_cli
from tflite_lab import activity
from tflite_lab.config import Limits
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path
from tflite_lab.worker import WorkerPool

pytestmark = pytest.mark.slow
OFF = BenchSpec(enabled=False)


@pytest.fixture(scope="module")
def busy_model(tmp_path_factory):
    """A conv net whose int8 conversion takes seconds (so a bench can start in the middle of it)."""
    d = tmp_path_factory.mktemp("busy")
    code = f"""
import keras
keras.utils.set_random_seed(0)
x = inp = keras.Input((32, 32, 3), name="image")
for i in range(12):
    x = keras.layers.Conv2D(16, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
x = keras.layers.GlobalAveragePooling2D()(x)
keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x)).save(r"{d}/busy.keras")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d / "busy.keras"


@pytest.fixture(scope="module")
def sessions(busy_model):
    """Session A's and session B's pools (one worker each), the prepared model and a .tflite to time."""
    with WorkerPool(1) as a, WorkerPool(1) as b:
        src = source_from_path(busy_model)
        prepared = a.run("prepare", source=source_json(src), spec=SampleSpec(count=16), bench=OFF)
        cell = b.run("cell", prepared=prepared, route="saved_model", optimization="none", bench=OFF)
        yield a, b, prepared, cell["tflite_path"]


class Converting:
    """Session A: converts saved_model-int8 back to back until stopped; keeps each job's window."""

    def __init__(self, pool: WorkerPool, prepared: dict):
        self.pool, self.prepared = pool, prepared
        self.windows: list[tuple[float, float]] = []
        self.pids: set[int] = set()
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            try:
                with tempfile.TemporaryDirectory() as fresh:    # no cache hit: it really converts
                    rep = self.pool.run("cell", prepared=self.prepared, route="saved_model", optimization="int8",
                                        bench=OFF, store_root=fresh)
                self.windows.append(tuple(rep["job_window"]))
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
                return

    def __enter__(self):
        self.thread.start()
        return self

    def wait_converting(self, timeout_s: float = 120.0) -> dict:
        """Until one of A's conversions has just started (so it still runs for a while)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert not self.errors, self.errors
            fresh = [e for e in activity.running() if e["kind"] == "cell" and time.time() - e["started_at"] < 0.3]
            if fresh:
                self.pids.add(fresh[0]["pid"])
                return fresh[0]
            time.sleep(0.02)
        raise AssertionError("session A's conversion never showed up in the activity registry")

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=300)
        assert not self.errors, self.errors


def _overlaps(window, start, end) -> bool:
    a, b = window
    return a < end and b > start


def test_a_bench_waits_for_another_sessions_conversion_and_holds_off_the_next(sessions, busy_model):
    a, b, prepared, tflite = sessions
    with Converting(a, prepared) as conv:
        entry = conv.wait_converting()
        timed = b.run("bench", prepared=prepared, tflite_paths={"x": tflite}, bench=BenchSpec())
        time.sleep(0.5)            # A's next conversion was held at the gate: let it start and be recorded
    cond = timed["conditions"]
    start, end = cond["phase_start"], cond["phase_end"]
    assert cond["alone"] is True and cond["concurrent"] == [], cond
    assert cond["waited_s"] > 0, "the bench started while A converted, so it must have waited"
    assert entry["started_at"] < start, "A's conversion was running when the bench was asked for"
    for w in conv.windows:
        assert not _overlaps(w, start, end), f"bench {start:.3f}-{end:.3f} overlaps A's conversion {w}"
    before = [w for w in conv.windows if w[1] <= start]
    after = [w for w in conv.windows if w[0] >= end]
    assert before and after, "A converted both before and after the bench, never during it"
    assert timed["tflite"]["x"]["median_ms"] > 0 and activity.timing_note(cond) is None


def test_with_a_tiny_wait_bound_the_bench_names_the_job_that_ran(sessions, busy_model):
    a, b, prepared, tflite = sessions
    tiny = replace(Limits.from_env(), bench_wait_s=0.2)
    with Converting(a, prepared) as conv:
        entry = conv.wait_converting()
        timed = b.run("bench", prepared=prepared, tflite_paths={"x": tflite}, bench=BenchSpec(), limits=tiny)
    cond = timed["conditions"]
    assert cond["alone"] is False and cond["wait_limit_s"] == 0.2 and 0.2 <= cond["waited_s"] < 5, cond
    label = f"convert saved_model-int8 of {busy_model.name}"
    assert [(j["kind"], j["label"], j["pid"]) for j in cond["concurrent"]] == [("cell", label, entry["pid"])]
    assert any(_overlaps(w, cond["phase_start"], cond["phase_end"]) for w in conv.windows)
    note = activity.timing_note(cond)
    assert note.startswith(f"timed while 1 other job ran: {label} (pid {entry['pid']})"), note


def test_a_cli_convert_times_alone_while_another_session_converts_or_says_what_ran(sessions, busy_model, tiny_models):
    """The CLI's bench runs inside its own cell job: it must not wait for itself (nor deadlock),
    waits for session A, and with a tiny bound prints what ran next to the latency."""
    a, _b, prepared, _ = sessions
    with Converting(a, prepared) as conv:
        conv.wait_converting()
        r = run_cli("convert", tiny_models / "single.keras", "--route", "saved_model", "--num-samples", "8",
                    "--json", "--no-history")
        assert r.returncode == 0, r.stderr
        cond = json.loads(r.stdout)["latency_conditions"]
        conv.wait_converting()
        r2 = run_cli("convert", tiny_models / "single.keras", "--route", "keras", "--num-samples", "8",
                     "--no-history", env={"TFLITE_LAB_BENCH_WAIT_S": "0.2"})
    assert cond["alone"] is True and cond["concurrent"] == [], cond
    for w in conv.windows:
        assert not _overlaps(w, cond["phase_start"], cond["phase_end"]), (w, cond)
    assert r2.returncode == 0, r2.stderr
    line = next((x for x in r2.stdout.splitlines() if "timed while" in x), None)
    assert line and line.strip().startswith(
        f"warning: timed while 1 other job ran: convert saved_model-int8 of {busy_model.name} (pid "), r2.stdout
    assert "timed alone" not in r2.stdout
