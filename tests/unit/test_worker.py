"""Worker isolation through ``tflite_lab.worker.WorkerPool``: a killed, hung or oversized job fails
alone with a clear WorkerError and the next job is correct; concurrent sessions never mix; job
workspaces are removed; the parent never imports TensorFlow.

Every conversion here gets a fresh store root, so it really converts (no cache hit) and its bytes
can be compared with the same conversion run elsewhere.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from lab_helpers import ROOT, SAMPLES
from tflite_lab.config import Limits
from tflite_lab.errors import SampleError, UnsupportedCombination, WorkerError
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path
from tflite_lab.worker import WorkerPool

OFF = BenchSpec(enabled=False)
MOBILENET = SAMPLES / "mobilenet_v2_small.keras"
MOBILENET_SAMPLES = SAMPLES / "mobilenet_v2_small.samples"


def _fingerprint(report: dict) -> dict:
    """What must be identical between two runs of the same conversion."""
    return {"tflite": Path(report["tflite_path"]).read_bytes(), "tflite_bytes": report["tflite_bytes"],
            "metrics": report["metrics"], "num_samples": report["num_samples"],
            "route": report["route"], "optimization": report["optimization"],
            "sha256": report["source"]["sha256"]}


def _cell(pool: WorkerPool, prepared: dict, store: Path, route="saved_model", optimization="none", **kw) -> dict:
    return pool.run("cell", prepared=prepared, route=route, optimization=optimization, bench=OFF,
                    store_root=str(store), **kw)


def _workspaces(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("tflite-lab-job"))


@pytest.fixture
def job_tmp(tmp_path, monkeypatch):
    """A private temp folder for this test: ``tempfile.gettempdir()`` here (where the pool makes each
    job's workspace) and TMPDIR for the workers it starts. It must be empty after every job."""
    d = tmp_path / "jobtmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.setenv("TMPDIR", str(d))
    return d


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV2 prepared once (its PNG samples, reference outputs, export), and the
    saved_model-none conversion run once in its own pool: the numbers every rerun must give."""
    store = tmp_path_factory.mktemp("mobilenet-store")
    src = source_from_path(MOBILENET, store=store)
    with WorkerPool(1) as pool:
        prepared = pool.run("prepare", source=source_json(src), spec=SampleSpec(path=str(MOBILENET_SAMPLES)),
                            bench=OFF, store_root=str(store))
        baseline = _cell(pool, prepared, store)
    assert prepared["num_samples"] == 8
    assert baseline["metrics"][0]["max_abs_error"] < 1e-4
    return {"prepared": prepared, "baseline": _fingerprint(baseline)}


def _assert_baseline(report: dict, mobilenet) -> None:
    assert not report["cached"], "the rerun must convert, not read the store"
    assert _fingerprint(report) == mobilenet["baseline"]
    assert report["metrics"][0]["max_abs_error"] < 1e-4
    assert report["metrics"][0]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_worker_killed_mid_conversion_fails_that_job_only(mobilenet, tmp_path, job_tmp):
    prepared = mobilenet["prepared"]
    with WorkerPool(1) as pool:
        converting = threading.Event()
        out: dict = {}
        seen: list[str] = []

        def progress(step, _elapsed):
            if step == "convert":
                seen.extend(_workspaces(job_tmp))
                converting.set()

        def job():
            try:
                out["report"] = _cell(pool, prepared, tmp_path / "killed", progress=progress)
            except Exception as e:  # noqa: BLE001 - the assertion below names what arrived
                out["error"] = e

        t = threading.Thread(target=job)
        t.start()
        assert converting.wait(120), "the conversion never started"
        time.sleep(0.3)                              # inside the converter now
        (pid,) = tuple(pool.busy_pids)
        os.kill(pid, signal.SIGKILL)
        t.join(60)
        assert not t.is_alive()
        err = out.get("error")
        assert isinstance(err, WorkerError), out
        msg = err.user_message
        assert "Converting saved_model-none crashed" in msg
        assert "killed by SIGKILL" in msg
        assert "next job starts a fresh worker" in msg
        assert "\n" not in msg
        assert pid not in pool.busy_pids
        assert not list((tmp_path / "killed").rglob("*.tflite")), "a killed conversion must store nothing"
        assert seen and _workspaces(job_tmp) == [], "the killed job's workspace must be removed"

        pids = []
        report = _cell(pool, prepared, tmp_path / "after",
                       progress=lambda step, _e: pids.extend(pool.busy_pids))
        assert pids and pid not in pids, "the next job must run in a fresh worker"
    _assert_baseline(report, mobilenet)
    assert list(job_tmp.iterdir()) == []


@pytest.mark.slow
def test_job_over_its_time_limit_is_stopped(mobilenet, tmp_path, job_tmp):
    prepared = mobilenet["prepared"]
    with WorkerPool(1) as pool:
        pool.run("describe", source=prepared["source"])     # worker up and model open: the limit times the conversion
        t0 = time.monotonic()
        with pytest.raises(WorkerError) as ei:
            _cell(pool, prepared, tmp_path / "slow", time_limit_s=1.0)
        elapsed = time.monotonic() - t0
        msg = ei.value.user_message
        assert "Converting saved_model-none ran longer than the limit of 1 s and was stopped" in msg
        assert "TFLITE_LAB_JOB_TIME_S" in msg
        assert elapsed < 8, f"stopped after {elapsed:.1f} s, not promptly after the 1 s limit"
        assert _workspaces(job_tmp) == [], "the stopped job's workspace must be removed"
        report = _cell(pool, prepared, tmp_path / "after")
    _assert_baseline(report, mobilenet)
    assert list(job_tmp.iterdir()) == []


@pytest.mark.slow
def test_job_over_the_memory_limit_is_stopped(mobilenet, tmp_path, job_tmp):
    """A bare worker holds ~800 MB (TensorFlow imported); route 'cli' adds a tflite_convert child
    (~1.9 GB together), so 1,300 MB lets the worker start and stops the conversion."""
    prepared = mobilenet["prepared"]
    oom_store = tmp_path / "oom"
    with WorkerPool(1, Limits(job_memory_mb=1300)) as small:
        with pytest.raises(WorkerError) as ei:
            _cell(small, prepared, oom_store, route="cli")
    msg = ei.value.user_message
    m = re.search(r"Converting cli-none used ([\d,]+) MB, more than the limit of 1,300 MB, and was stopped", msg)
    assert m, msg
    assert int(m.group(1).replace(",", "")) > 1300
    assert "TFLITE_LAB_JOB_MEMORY_MB" in msg
    # the whole process group went: no tflite_convert child is left writing into the job's workspace
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [p for p in psutil.process_iter(["cmdline"])
                if str(job_tmp) in " ".join(p.info["cmdline"] or []) or str(oom_store) in " ".join(p.info["cmdline"] or [])]
        if not left:
            break
        time.sleep(0.2)
    assert not left, left
    assert _workspaces(job_tmp) == [], "the stopped job's workspace must be removed"

    with WorkerPool(1) as normal:
        report = _cell(normal, prepared, tmp_path / "after", route="cli")
    assert not report["cached"]
    assert report["metrics"][0]["max_abs_error"] < 1e-4
    assert report["metrics"][0]["top1_agreement"] == 1.0
    assert list(job_tmp.iterdir()) == []


@pytest.mark.slow
def test_memory_limit_below_a_bare_worker_fails_at_startup():
    src = source_from_path(SAMPLES / "digits_cnn.keras")
    with WorkerPool(1, Limits(job_memory_mb=400)) as pool:
        with pytest.raises(WorkerError, match=r"A worker process used more than the limit of 400 MB while starting"):
            pool.run("describe", source=source_json(src))


SESSIONS = [   # (model, samples, route, optimization): four users, four models, four recipes
    ("digits_cnn.keras", "digits_cnn.samples.npz", "saved_model", "none"),
    ("mobilenet_v2_small.keras", "mobilenet_v2_small.samples", "keras", "dynamic"),
    ("diabetes_regressor_savedmodel.zip", "diabetes_regressor.samples.npy", "concrete_function", "float16"),
    ("breast_cancer_mlp.h5", "breast_cancer_mlp.samples.csv", "saved_model", "int8"),
]


def _session(pool: WorkerPool, store: Path, model: str, samples: str, route: str, optimization: str) -> dict:
    src = source_from_path(SAMPLES / model, store=store)
    prepared = pool.run("prepare", source=source_json(src), spec=SampleSpec(path=str(SAMPLES / samples)),
                        bench=OFF, store_root=str(store))
    return _cell(pool, prepared, store, route, optimization)


@pytest.mark.slow
def test_four_concurrent_sessions_give_the_numbers_they_give_alone(tmp_path):
    alone_store, together_store = tmp_path / "alone", tmp_path / "together"
    with WorkerPool(1) as pool:
        alone = [_session(pool, alone_store, *s) for s in SESSIONS]

    results: dict[int, dict] = {}
    errors: dict[int, BaseException] = {}
    busy_max = 0
    with WorkerPool(4) as pool:
        barrier = threading.Barrier(len(SESSIONS))

        def user(i):
            barrier.wait()
            try:
                results[i] = _session(pool, together_store, *SESSIONS[i])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors[i] = e

        threads = [threading.Thread(target=user, args=(i,)) for i in range(len(SESSIONS))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            busy_max = max(busy_max, len(pool.busy_pids))
            time.sleep(0.02)
    assert not errors, errors
    assert busy_max == 4, f"the four jobs never ran at the same time (at most {busy_max} busy workers)"

    for i, (model, _samples, route, optimization) in enumerate(SESSIONS):
        got, want = results[i], alone[i]
        assert got["source"]["filename"] == model
        assert (got["route"], got["optimization"]) == (route, optimization)
        assert Path(got["tflite_path"]).is_relative_to(together_store)
        assert not got["cached"] and not want["cached"]
        assert _fingerprint(got) == _fingerprint(want), f"session {i} ({model} {route}-{optimization}) differs"
    assert len({_fingerprint(r)["tflite"] for r in alone}) == 4


@pytest.mark.slow
def test_each_job_workspace_is_removed(job_tmp, tmp_path):
    seen: set[str] = set()

    def progress(_step, _elapsed):
        seen.update(_workspaces(job_tmp))

    store = tmp_path / "store"
    src = source_json(source_from_path(SAMPLES / "digits_cnn.keras", store=store))
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 7), np.float32))
    with WorkerPool(1) as pool:
        pool.run("describe", source=src)
        prepared = pool.run("prepare", progress=progress, source=src,
                            spec=SampleSpec(path=str(SAMPLES / "digits_cnn.samples.npz")), bench=OFF,
                            store_root=str(store))
        assert _workspaces(job_tmp) == []
        report = _cell(pool, prepared, store, progress=progress)
        assert report["metrics"][0]["max_abs_error"] < 1e-4
        assert _workspaces(job_tmp) == []
        with pytest.raises(SampleError, match=r"shape \(3, 7\)"):          # a job that fails inside
            pool.run("prepare", source=src, spec=SampleSpec(path=str(wrong)), bench=OFF, store_root=str(store))
        with pytest.raises(UnsupportedCombination, match="route 'cli' cannot calibrate"):
            _cell(pool, prepared, store, route="cli", optimization="int8")
    assert seen and all(re.fullmatch(r"tflite-lab-job\d+-\w+", n) for n in seen), seen
    assert list(job_tmp.iterdir()) == [], "jobs left files in the temp folder"


@pytest.mark.slow
def test_parent_never_imports_tensorflow(tmp_path):
    code = """
import json, sys
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path
from tflite_lab.worker import WorkerPool
src = source_json(source_from_path(sys.argv[1]))
with WorkerPool(1) as pool:
    d = pool.run("describe", source=src)
    p = pool.run("prepare", source=src, spec=SampleSpec(), bench=BenchSpec(enabled=False))
    r = pool.run("cell", prepared=p, route="saved_model", optimization="dynamic", bench=BenchSpec(enabled=False))
print(json.dumps({"input": d["signature"]["inputs"][0]["name"], "bytes": r["tflite_bytes"],
                  "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules,
                  "litert": "ai_edge_litert" in sys.modules}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TFLITE_LAB_CACHE=str(tmp_path / "store"))
    proc = subprocess.run([sys.executable, "-c", code, str(SAMPLES / "digits_cnn.keras")], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["input"] == "image" and got["bytes"] > 0
    assert (got["tensorflow"], got["keras"], got["litert"]) == (False, False, False)
