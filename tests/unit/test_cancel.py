"""Cancel: a running job stops promptly when asked, its worker is killed, nothing of it is kept, and
the next job works; a long step keeps reporting (the ticks a page's Cancel button needs)."""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from tflite_lab import orchestrate
from tflite_lab.errors import Cancelled
from tflite_lab.executor import LocalExecutor
from tflite_lab.orchestrate import Cell, CellJob
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path
from tflite_lab.worker import TICK_S, WorkerPool

OFF = BenchSpec(enabled=False)


@pytest.fixture(scope="module")
def pool_and_prepared(tiny_models):
    with WorkerPool(2, prestart=1) as pool:
        src = source_json(source_from_path(tiny_models / "multi_sm.zip"))
        prepared = pool.run("prepare", source=src, spec=SampleSpec(count=4, seed=3), bench=OFF)
        yield pool, prepared


def _cancel_after(ev: threading.Event, steps: list, first: str, delay: float = 0.2):
    """Set ``ev`` ``delay`` s after the job reports ``first``; returns the progress callback."""
    def progress(step, elapsed):
        steps.append((step, elapsed, time.monotonic()))
        if step == first and not ev.is_set():
            threading.Timer(delay, ev.set).start()
    return progress


@pytest.mark.slow
def test_cancel_stops_the_job_kills_its_worker_and_the_next_job_works(pool_and_prepared, tmp_path):
    pool, prepared = pool_and_prepared
    ev, steps = threading.Event(), []
    before = set(psutil.Process().children())
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match=r"Converting saved_model-int8 was cancelled; its worker was stopped"):
        pool.run("cell", prepared=prepared, route="saved_model", optimization="int8", bench=OFF,
                 store_root=str(tmp_path / "cancelled"), cancel=ev,
                 progress=_cancel_after(ev, steps, "convert"))
    set_at = next(t for s, _, t in steps if s == "convert") + 0.2
    assert time.monotonic() - set_at < 1.0, "the job must stop within a tick of the cancel"
    gone = [p for p in before if not p.is_running()]
    assert len(gone) == 1, "the cancelled job's worker is killed (and only it)"
    assert not any((tmp_path / "cancelled").rglob("*.tflite")), "a cancelled conversion leaves no .tflite"
    report = pool.run("cell", prepared=prepared, route="saved_model", optimization="int8", bench=OFF,
                      store_root=str(tmp_path / "after"))
    assert report["tflite_bytes"] > 0 and report["metrics"]


@pytest.mark.slow
def test_a_long_step_is_reported_again_every_tick(tiny_models):
    """Without the repeats a page could not move its clock, nor stop, during a step of minutes.
    A worker's start (importing TensorFlow) is a step of seconds on any machine."""
    steps = []
    with WorkerPool(1) as pool:
        pool.run("describe", source=source_json(source_from_path(tiny_models / "single.keras")),
                 progress=lambda s, e: steps.append((s, e, time.monotonic())))
    gaps = [b[2] - a[2] for a, b in zip(steps, steps[1:])]
    assert max(gaps) < TICK_S + 0.3, f"a silent gap of {max(gaps):.2f} s between progress calls"
    starts = [e for s, e, _ in steps if s == "start worker"]
    assert len(starts) >= 3, f"the worker's start is re-sent while it lasts: {steps}"
    elapsed = [e for _, e, _ in steps]
    assert starts == sorted(starts) and starts[-1] > 2 * TICK_S, elapsed


@pytest.mark.slow
def test_a_cancelled_matrix_keeps_nothing_of_its_stopped_cells_and_they_are_pending_again(pool_and_prepared):
    pool, prepared = pool_and_prepared
    cells = [Cell("saved_model", o) for o in ("int8", "dynamic", "float16", "int16x8")]
    jobs = [CellJob(c.id, c, prepared) for c in cells]
    done, failed, ev = {}, {}, threading.Event()
    started, last = [], {}

    def render(states):
        last.update(states)
        if any(step not in ("queued", "start worker") for step, _ in states.values()) and not started:
            started.append(time.monotonic())
            threading.Timer(0.2, ev.set).start()
    orchestrate.run_cells(LocalExecutor(pool=pool), jobs, OFF, done, failed, render, cancel=ev)
    assert started and time.monotonic() - started[0] < 10
    cancelled = {k for k, (step, _) in last.items() if step == "cancelled"}
    assert cancelled, f"the running and queued cells were stopped: {last}"
    assert not failed, "a cancel is not a failure"
    assert cancelled.isdisjoint(done) and set(done) | cancelled == {c.id for c in cells}
    pending = {c.id for c in orchestrate.pending_cells("saved_model", done, failed)}
    assert cancelled <= pending, "a cancelled cell runs again on the next run"


def test_a_job_cancelled_before_it_starts_leaves_its_worker_alone(pool_and_prepared):
    pool, prepared = pool_and_prepared
    ev = threading.Event()
    ev.set()
    before = {p.pid for p in psutil.Process().children() if p.is_running()}
    with pytest.raises(Cancelled, match="was cancelled before it started"):
        pool.run("cell", prepared=prepared, route="saved_model", optimization="int8", bench=OFF, cancel=ev)
    assert before <= {p.pid for p in psutil.Process().children() if p.is_running()}, "no worker was killed"
