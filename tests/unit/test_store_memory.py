"""The result store never outlives the code that made a result, a cached result says so (with the
date of the run that made it), and a failed memory poll never switches the memory limit off."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime

import psutil
import pytest

from lab_helpers import ROOT
from tflite_lab.commands.base import _table
from tflite_lab import worker
from tflite_lab.config import Limits
from tflite_lab.errors import WorkerError
from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, report_json, run_cell, source_json
from tflite_lab.sources import source_from_path
from tflite_lab.worker import MemoryPollError, WorkerPool, tree_rss_mb

NO_BENCH = BenchSpec(enabled=False)


def _key_in_copy(pkg_root) -> str:
    code = "from tflite_lab.store import key_of; print(key_of(kind='tflite', model='m'))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=pkg_root,
                          env=dict(os.environ, PYTHONPATH=str(pkg_root))).stdout.strip()


def test_any_source_change_gives_new_store_keys(tmp_path):
    """The key of the same model and settings changes when one line of one module changes."""
    shutil.copytree(ROOT / "tflite_lab", tmp_path / "tflite_lab", ignore=shutil.ignore_patterns("__pycache__"))
    before = _key_in_copy(tmp_path)
    assert before == _key_in_copy(tmp_path)            # stable while nothing changes
    recipes = tmp_path / "tflite_lab" / "recipes.py"
    recipes.write_text(recipes.read_text() + "\n# a changed recipe\n")
    after = _key_in_copy(tmp_path)
    assert after != before
    (tmp_path / "tflite_lab" / "new_stage.py").write_text("X = 1\n")
    assert _key_in_copy(tmp_path) not in (before, after)


def test_a_cached_cell_is_marked_and_dated_from_the_run_that_made_it(tiny_models, tmp_path):
    store = str(tmp_path / "store")
    src = source_from_path(tiny_models / "single.keras", store=tmp_path / "store")
    p = prepare(source_json(src), SampleSpec(count=8), NO_BENCH, store_root=store)
    first = run_cell(p, "saved_model", "none", bench=NO_BENCH, store_root=store)
    assert first["cached"] is False and first["cached_at"] is None
    made = datetime.fromisoformat(first["converted_at"])
    assert abs(time.time() - made.timestamp()) < 600
    time.sleep(1.1)                                     # a later run: its own clock must not be reported
    again = run_cell(p, "saved_model", "none", bench=NO_BENCH, store_root=store)
    assert again["cached"] is True
    assert again["cached_at"] == first["converted_at"]
    assert again["convert_s"] == first["convert_s"], "the conversion time shown is the original run's"
    pub = report_json({**again, "ok": True, "verdict": "pass"})
    assert pub["cached"] is True and pub["cached_at"] == first["converted_at"]
    assert json.loads(json.dumps(pub))["cached_at"] == first["converted_at"]
    assert f"cached: converted {first['converted_at']}" in _table(pub)
    assert "cached:" not in _table(report_json({**first, "ok": True, "verdict": "pass"}))


# ---- memory limit ----

CHURN = """
import subprocess, sys, time
ballast = bytearray(300 * 2**20)             # 300 MB resident
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
print("ready", flush=True)
while True:                                  # children that exit all the time, some mid-poll
    kids = [subprocess.Popen(["/bin/true"]) for _ in range(4)]
    for k in kids:
        k.wait()
"""


def test_memory_poll_counts_the_processes_it_can_read_while_children_come_and_go():
    proc = subprocess.Popen([sys.executable, "-c", CHURN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        polls = [tree_rss_mb(proc.pid) for _ in range(300)]
    finally:
        proc.kill()
        proc.wait()
    assert min(polls) >= 300, f"a poll read {min(polls):.0f} MB of a process holding 300 MB"


def test_memory_poll_of_a_process_that_cannot_be_read_raises_not_zero():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()                                  # gone and reaped: nothing to read
    with pytest.raises(MemoryPollError):
        tree_rss_mb(proc.pid)


@pytest.mark.slow
def test_unreadable_memory_stops_the_job_instead_of_lifting_the_limit(monkeypatch, tiny_models):
    """If the worker's memory stays unreadable (permissions, /proc gone), the job is stopped with a
    one-line reason rather than run without its limit; the next job in a readable pool works."""
    src = source_from_path(tiny_models / "single.keras")
    with WorkerPool(1, Limits(job_memory_mb=4000), prestart=1) as pool:
        # started while memory was readable; a SavedModel conversion then lasts seconds, a prepare
        # of this tiny model can end before the second poll on a quiet machine
        prepared = pool.run("prepare", source=source_json(src), spec=SampleSpec(count=4, seed=8081), bench=NO_BENCH)

        def denied(self):
            raise psutil.AccessDenied(self.pid)
        monkeypatch.setattr(psutil.Process, "memory_info", denied)
        # the first poll (~0.05 s in) stops it: a conversion never ends that fast, while with 2 polls
        # (0.3 s) CI's warm worker once finished the tiny model's cell first
        monkeypatch.setattr(worker, "MAX_FAILED_POLLS", 1)
        with pytest.raises(WorkerError, match=r"memory could not be read .* limit of 4,000 MB could not be enforced"):
            pool.run("cell", prepared=prepared, route="saved_model", optimization="none", bench=NO_BENCH,
                     store_root=str(tiny_models / "store-unreadable"))
        monkeypatch.undo()
        assert pool.run("describe", source=source_json(src))["signature"]["inputs"][0]["name"] == "x"
