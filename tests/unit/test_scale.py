"""Scale out: the zoo on the local pool and on Ray (a local instance, 2 CPUs), with the same limits.

Ray here is always a local instance that binds to 127.0.0.1 only (see ray_executor._loopback_env);
test_ray_listens_on_loopback_only checks that, since this machine must not talk over eth0.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import psutil
import pytest

from lab_helpers import SAMPLES, run_cli

from tflite_lab import orchestrate, zoo
from tflite_lab.errors import Cancelled, WorkerError
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import source_from_path

ZOO = ["digits_cnn.keras", "breast_cancer_mlp.h5", "diabetes_regressor_savedmodel.zip"]
ZOO_CELLS = ["--routes", "saved_model", "--optimizations", "dynamic"]
NO_BENCH = BenchSpec(enabled=False)


@pytest.fixture(scope="module")
def ray_executor():
    from tflite_lab.ray_executor import RayExecutor
    ex = RayExecutor(num_cpus=2)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def fresh_digits(ray_executor):
    """digits_cnn prepared on samples no other test converts, so every cell really converts."""
    src = source_json(source_from_path(SAMPLES / "digits_cnn.keras"))
    return orchestrate.prepare(ray_executor, src, SampleSpec(count=24, seed=1212), NO_BENCH)


def _zoo(tmp_path, name, *extra):
    store = tmp_path / f"store-{name}"
    r = run_cli("zoo", *(SAMPLES / m for m in ZOO), *ZOO_CELLS, "--no-latency", "--json", "--out", tmp_path / name,
                *extra, env={"TFLITE_LAB_CACHE": str(store)})
    return r


@pytest.mark.slow
def test_zoo_gives_identical_metrics_on_local_and_ray(tmp_path):
    local = _zoo(tmp_path, "local", "--executor", "local")
    assert local.returncode == 0, local.stderr
    ray = _zoo(tmp_path, "ray", "--executor", "ray", "--report", tmp_path / "zoo.html")
    assert ray.returncode == 0, ray.stderr
    a, b = json.loads(local.stdout), json.loads(ray.stdout)
    assert a["executor"].startswith("local") and b["executor"].startswith("ray at 127.0.0.1:")
    jobs_a, jobs_b = a["executor_info"].pop("jobs"), b["executor_info"].pop("jobs")
    assert a["executor_info"] == {"name": "local", "address": None, "startup_s": 0.0}
    # three prepares and three cells (latency timed apart in one bench job per model) on each side
    assert jobs_a["count"] == jobs_b["count"] >= 6 and jobs_b["worker_processes"] >= 3   # one process per upload
    info = b["executor_info"]
    assert info["name"] == "ray" and info["address"].startswith("127.0.0.1:") and info["own_instance"]
    assert 0 < info["startup_s"] < 120
    assert [m["model"] for m in a["models"]] == ["digits_cnn", "breast_cancer_mlp", "diabetes_regressor_savedmodel"]
    for ma, mb in zip(a["models"], b["models"]):
        assert ma["samples"].endswith(".samples.npz") or ma["samples"].endswith((".csv", ".npy"))
        assert len(ma["cells"]) == len(mb["cells"]) == 1
        for ca, cb in zip(ma["cells"], mb["cells"]):
            assert (ca["route"], ca["optimization"]) == (cb["route"], cb["optimization"])
            assert ca.get("error") is None and cb.get("error") is None, (ca.get("error"), cb.get("error"))
            assert ca["cached"] is False and cb["cached"] is False        # two stores: both really converted
            assert ca["outputs"] == cb["outputs"], (ma["model"], ca["route"], ca["optimization"])
            assert ca["tflite_bytes"] == cb["tflite_bytes"] and ca["ok"] == cb["ok"]
        assert {k: v for k, v in ma.items() if k not in ("cells", "run_id")} == \
            {k: v for k, v in mb.items() if k not in ("cells", "run_id")}
        assert ma["run_id"] and mb["run_id"]                        # each model's matrix run is in the history
    # The summary: dynamic range is within tolerance on every model and shrinks the digits CNN ~3x.
    digits = a["models"][0]
    assert digits["best"] == "saved_model-dynamic" and digits["size_reduction"] > 0.5
    assert all(m["within_tolerance"] >= 1 for m in a["models"])
    cell_dir = tmp_path / "ray" / "digits_cnn" / "saved_model-dynamic"
    assert (cell_dir / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert json.loads((cell_dir / "report.json").read_text())["outputs"] == digits["cells"][0]["outputs"]
    html = (tmp_path / "zoo.html").read_text()
    assert html.startswith("<!DOCTYPE html>") or "<html" in html[:500]
    assert all(m in html for m in ("digits_cnn", "breast_cancer_mlp", "diabetes_regressor"))
    md = (tmp_path / "ray" / "zoo.md").read_text()
    assert "| digits_cnn | saved_model-dynamic |" in md and (tmp_path / "ray" / "zoo.csv").exists()

    # Again on the local store, judged strictly: nothing is recomputed, and no model passes (exit 1).
    again = _zoo(tmp_path, "local", "--executor", "local", "--max-abs-error", "1e-30")
    assert again.returncode == 1, again.stderr
    c = json.loads(again.stdout)
    assert all(cell["cached"] for m in c["models"] for cell in m["cells"])
    assert all(m["best"] is None and m["failures"] == {"out of tolerance": 1} for m in c["models"])


def test_ray_listens_on_loopback_only(ray_executor):
    ray_pids = {p.pid for p in psutil.process_iter(["name", "cmdline"])
                if "ray" in (p.info["name"] or "") or "gcs_server" in (p.info["name"] or "")
                or any("ray/" in c for c in (p.info["cmdline"] or []))}
    assert ray_pids
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "no Ray server found"
    outside = [c for c in listening if c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not outside, outside


@pytest.mark.slow
def test_a_task_killed_mid_conversion_fails_only_its_cell(ray_executor, fresh_digits):
    cells = [orchestrate.Cell("saved_model", o) for o in ("none", "float16", "dynamic")]
    target = "saved_model-float16"
    # Tasks are never retried (max_retries=0), so a killed cell in `done` means the kill landed after
    # its result was already sent (the progress state lags the task by one render under load): try again.
    for _attempt in range(3):
        done, failed, killed = {}, {}, []

        def render(states):
            step = states[target][0]
            pid = next((p for p, what in ray_executor.busy.items() if what.endswith(target)), None)
            if step not in ("queued", "done", "failed") and pid and not killed:   # any running step: under load "convert" can pass between two renders
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        orchestrate.run_cells(ray_executor, [orchestrate.CellJob(c.id, c, fresh_digits) for c in cells], NO_BENCH,
                              done, failed, render)
        if not (killed and target in done):
            break
    assert killed, "the target cell was never seen running"
    assert set(done) == {"saved_model-none", "saved_model-dynamic"}, failed
    assert failed[target]["kind"] == "WorkerError"
    assert failed[target]["message"].startswith(f"Converting {target} crashed: the worker process ")
    assert "The next job starts a fresh worker." in failed[target]["message"]
    assert "\n" not in failed[target]["message"]
    # Retried later (pending_cells keeps worker crashes pending), it converts.
    pending = [c.id for c in orchestrate.pending_cells("keras", done, failed)]
    assert target in pending and "saved_model-none" not in pending
    report = orchestrate.run_cell(ray_executor, cells[1], fresh_digits, NO_BENCH, done, failed)
    assert report["tflite_bytes"] > 0 and target in done and target not in failed


def _maps_tensorflow(pid: int) -> bool:
    """TensorFlow's libraries are mapped in the process (/proc maps: read fast, so the job is still running)."""
    with open(f"/proc/{pid}/maps") as f:
        return "tensorflow" in f.read()


@pytest.mark.slow
def test_jobs_run_in_a_fork_of_one_server_per_node_and_a_cancel_ends_the_fork(ray_executor):
    """TensorFlow is imported once per node (the fork server, started by this driver for its own
    instance while Ray starts), not in the Ray worker; the job runs in a process forked from it,
    which ends when its Ray task is cancelled."""
    seen = {}

    def watch():
        while not seen:
            for task, child in list(ray_executor.forked.items()):
                try:
                    server = psutil.Process(psutil.Process(child).ppid())
                    seen.update(task=task, child=child, server=server.pid, cmdline=server.cmdline(),
                                task_tf=_maps_tensorflow(task), child_tf=_maps_tensorflow(child))
                except (psutil.Error, OSError):
                    continue
            time.sleep(0.02)

    cancel = threading.Event()
    threading.Thread(target=lambda: (watch(), cancel.set()), daemon=True).start()
    with pytest.raises(Cancelled):
        # Preparing MobileNetV2 (load, reference run, export: seconds) on samples no other test uses:
        # still running when the cancel lands, even in a warm fork (a job that answered first would
        # rightly leave its fork in the pool).
        ray_executor.run("prepare", source=source_json(source_from_path(SAMPLES / "mobilenet_v2_small.keras")),
                         spec=SampleSpec(count=8, seed=4242), bench=NO_BENCH, cancel=cancel)
    assert seen, "the job was never seen in its forked worker"
    assert "tflite_lab.fork_server" in " ".join(seen["cmdline"]) and seen["cmdline"][-1] == str(os.getpid())
    assert seen["child_tf"] and not seen["task_tf"]     # the Ray worker never imports TensorFlow
    servers = [p for p in psutil.process_iter(["cmdline", "ppid"])
               if "tflite_lab.fork_server" in " ".join(p.info["cmdline"] or [])
               and p.info["cmdline"][-1] == str(os.getpid()) and p.info["ppid"] != seen["server"]]
    assert [p.pid for p in servers] == [seen["server"]]          # one per node (its forks have it as parent)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(seen["child"]) and psutil.Process(seen["child"]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the cancelled task's forked worker is still running"
        time.sleep(0.1)


CLUSTER_LIKE = """
import json, os, sys, time, psutil
import tflite_lab.ray_executor as rx
# As on a cluster with Ray's defaults: idle Ray workers exit at once (and Ray kills their children).
rx.LOCAL_SYSTEM_CONFIG = lambda n: {"enable_worker_prestart": False, "num_workers_soft_limit": 0,
                                    "idle_worker_killing_time_threshold_ms": 300}
from tflite_lab.pipeline import source_json
from tflite_lab.sources import source_from_path
ex = rx.RayExecutor(num_cpus=1, _server_here=False)
try:
    src = source_json(source_from_path(sys.argv[1]))
    ex.run("describe", source=src)
    server = psutil.Process(next(iter(ex.stats.pids))).parent()
    anchor = psutil.Process(int(server.cmdline()[-1]))
    starter = psutil.Process(int(server.environ()["TFLITE_LAB_FORK_STARTER"]))     # the Ray worker that started it
    deadline = time.monotonic() + 60
    while starter.is_running() and starter.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.2)
    idle_exited = not starter.is_running() or starter.status() == psutil.STATUS_ZOMBIE
    alive = server.is_running() and server.status() != psutil.STATUS_ZOMBIE
    first = set(ex.stats.pids)
    ex.run("describe", source=src)
    second = psutil.Process(next(iter(set(ex.stats.pids) - first or first))).ppid()   # a new fork, or the same one
    print(json.dumps({"server": " ".join(server.cmdline()), "anchor": anchor.name(), "driver": anchor.pid == os.getpid(),
                      "idle_exited": idle_exited, "alive": alive, "same_server": second == server.pid}))
finally:
    ex.close()
"""


@pytest.mark.slow
def test_on_a_cluster_each_node_s_fork_server_lives_as_long_as_its_raylet(tmp_path):
    """Where the driver is not on the node (a joined cluster), a warm-up task starts the node's
    server, anchored to the raylet; it is nobody's child, so the Ray worker that started it exiting
    idle (Ray then kills its children) does not take it along: the next job uses the same server."""
    import subprocess
    import sys
    from lab_helpers import ROOT
    p = subprocess.run([sys.executable, "-c", CLUSTER_LIKE, str(SAMPLES / "digits_cnn.keras")], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert "tflite_lab.fork_server" in got["server"] and got["anchor"] == "raylet" and not got["driver"]
    assert got["idle_exited"], "the Ray workers did not exit idle: the test proves nothing"
    assert got["alive"] and got["same_server"], got


@pytest.mark.slow
def test_a_task_over_its_memory_limit_stops_its_forked_worker(ray_executor, fresh_digits):
    forked, stop = [], threading.Event()

    def watch():
        while not stop.is_set() and not forked:
            forked.extend(c for p, c in list(ray_executor.forked.items())
                          if ray_executor.busy.get(p, "").endswith("keras-int8"))
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    with pytest.raises(WorkerError) as e:       # a forked worker holds ~0.3 GB (TensorFlow): over 64 MB at once
        ray_executor.run("cell", prepared=fresh_digits, route="keras", optimization="int8", bench=NO_BENCH,
                         memory_limit_mb=64)
    stop.set()
    m = e.value.user_message
    assert m.startswith("Converting keras-int8 used ") and m.endswith(
        "MB, more than the limit of 64 MB, and was stopped. Raise TFLITE_LAB_JOB_MEMORY_MB for larger models.")
    assert forked, "the job was never seen in its forked worker"
    deadline = time.monotonic() + 15
    while psutil.pid_exists(forked[0]) and psutil.Process(forked[0]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the forked worker over its memory limit is still running"
        time.sleep(0.1)
    # the next job of that upload gets a fresh fork and converts
    report = ray_executor.run("cell", prepared=fresh_digits, route="keras", optimization="int8", bench=NO_BENCH)
    assert report["tflite_bytes"] > 0


@pytest.mark.slow
def test_a_task_over_its_time_limit_is_cancelled(ray_executor, fresh_digits):
    seen = []

    def watch():
        while not seen:
            pids = [p for p, what in ray_executor.busy.items() if what.endswith("saved_model-int8")]
            if pids:
                seen.append(pids[0])
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as e:
        ray_executor.run("cell", prepared=fresh_digits, route="saved_model", optimization="int8", bench=NO_BENCH,
                         time_limit_s=0.1)      # its conversion lasts ~0.4 s on a quiet machine
    assert e.value.user_message == ("Converting saved_model-int8 ran longer than the limit of 0.1 s and was stopped. "
                                    "Raise TFLITE_LAB_JOB_TIME_S for larger models.")
    assert time.monotonic() - t0 < 30
    assert seen
    deadline = time.monotonic() + 15              # ray.cancel(force=True) ends the worker process
    while psutil.pid_exists(seen[0]) and psutil.Process(seen[0]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the timed-out task's process is still running"
        time.sleep(0.1)


def test_unreachable_ray_address_is_one_line_exit_2(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))             # bound, never listening: connecting is refused
    address = f"127.0.0.1:{closed.getsockname()[1]}"
    try:
        t0 = time.monotonic()
        r = run_cli("zoo", SAMPLES / "digits_cnn.keras", "--executor", "ray", timeout=60,
                    env={"RAY_ADDRESS": address})
        took = time.monotonic() - t0
    finally:
        closed.close()
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines == [f"error: Cannot reach the Ray cluster at {address} (connection refused). Start its head with "
                     "`ray start --head`, or fix RAY_ADDRESS / --ray-address; without an address a local Ray "
                     "instance is started."], r.stderr
    assert took < 30


def test_zoo_finds_models_and_their_samples(tmp_path):
    models = zoo.find_models([str(SAMPLES)])
    names = [m.name for m in models]
    assert names == sorted(names) and len(names) == 6
    assert not any(".samples" in n for n in names) and "catalog.json" not in names
    samples = {m.name: (zoo.match_samples(m) or tmp_path).name for m in models}
    assert samples["diabetes_regressor_savedmodel.zip"] == "diabetes_regressor.samples.npy"
    assert samples["mobilenet_v2_small.keras"] == "mobilenet_v2_small.samples"       # a folder of images
    assert samples["digits_lstm.keras"] == "digits_lstm.samples.npz"
    listing = tmp_path / "zoo.txt"
    listing.write_text(f"# two models\n{SAMPLES / 'digits_cnn.keras'}\n\n{SAMPLES / 'multi_io.keras'}\n")
    assert [m.name for m in zoo.find_models([str(listing)])] == ["digits_cnn.keras", "multi_io.keras"]
    assert zoo.match_samples(SAMPLES / "digits_cnn.keras", tmp_path) is None          # none there: random


@pytest.mark.parametrize("args,expect", [
    (["nope_dir"], "does not exist"),
    (["LIST"], "line 1: missing.keras does not exist"),
    (["EMPTY"], "No models in"),
    ([str(SAMPLES / "digits_cnn.keras"), "--report", "zoo.pdf"], "give a .csv, .md or .html"),
    ([str(SAMPLES / "digits_cnn.keras"), "--executor", "spark"], "invalid choice"),
])
def test_zoo_bad_input_is_exit_2(tmp_path, args, expect):
    (tmp_path / "list.txt").write_text("missing.keras\n")
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "list.txt") if a == "LIST" else str(tmp_path / "empty") if a == "EMPTY" else
            str(tmp_path / a) if a == "nope_dir" else a for a in args]
    r = run_cli("zoo", *args, timeout=60)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and expect in errors[0], r.stderr


@pytest.mark.slow
def test_pages_run_on_ray_and_say_so(ray_executor, monkeypatch):
    """TFLITE_LAB_EXECUTOR=ray: the dashboard's jobs are Ray tasks; the Matrix page names the executor."""
    from streamlit.testing.v1 import AppTest

    from lab_helpers import ROOT
    from tflite_lab import executors
    monkeypatch.setenv("TFLITE_LAB_EXECUTOR", "ray")
    monkeypatch.setattr(executors, "_DEFAULT", ray_executor)      # the server's executor: this Ray instance
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.selectbox(key="gallery_pick").set_value("breast_cancer_mlp").run()
    at.button(key="gallery_use").click().run()
    at.switch_page("pages/matrix.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"executor: {ray_executor.describe()}" in [c.value for c in at.caption]
    assert ray_executor.describe().startswith("ray at 127.0.0.1:") and ray_executor.describe().endswith(", 2 CPUs")
    at.switch_page("pages/convert.py").run()
    at.radio(key="conv_route").set_value("saved_model")
    at.radio(key="conv_opt").set_value("dynamic").run()
    at.button(key="convert").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Verdict"] == "PASS", [e.value for e in at.error]
    report = at.session_state["lab_reports"]["saved_model-dynamic"]
    assert report["tflite_bytes"] > 0 and report["cached"] is False


@pytest.mark.slow
def test_a_worker_process_never_serves_two_uploads(ray_executor, fresh_digits):
    """One upload's jobs share a warm forked worker; another upload's job runs in a different process,
    even when the same Ray worker relays both."""
    def pid_of(prepared, route, opt):
        pids = set()
        what = f"Converting {route}-{opt}"

        def seen(_s, _t):
            pids.update(ray_executor.forked[p] for p, w in list(ray_executor.busy.items())
                        if w == what and p in ray_executor.forked)
        ray_executor.run("cell", prepared=prepared, route=route, optimization=opt, bench=NO_BENCH, progress=seen)
        assert len(pids) == 1
        return pids.pop()

    other = orchestrate.prepare(ray_executor, source_json(source_from_path(SAMPLES / "breast_cancer_mlp.h5")),
                                SampleSpec(count=16, seed=1212), NO_BENCH)
    a1 = pid_of(fresh_digits, "concrete_function", "none")
    b = pid_of(other, "saved_model", "none")
    a2 = pid_of(fresh_digits, "keras", "none")
    assert a1 == a2 and b != a1          # warm for its upload; never the other upload's process
    assert psutil.Process(a1).ppid() == psutil.Process(b).ppid()    # both forked from the node's fork server


@pytest.mark.slow
def test_a_stale_ray_cluster_file_does_not_capture_the_tools_own_instance(tmp_path):
    """Without RAY_ADDRESS, a /tmp/ray/ray_current_cluster left by a crashed Ray (here: a port nobody
    listens on) used to be joined, failing with 'num_cpus and num_gpus must not be provided'."""
    from pathlib import Path
    stale = Path("/tmp/ray/ray_current_cluster")
    before = stale.read_text() if stale.exists() else None
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("127.0.0.1:9")
    try:
        r = run_cli("zoo", SAMPLES / "digits_cnn.keras", *ZOO_CELLS, "--no-latency", "--json", "--executor", "ray",
                    env={"TFLITE_LAB_CACHE": str(tmp_path / "store")})
    finally:
        if before is None:
            stale.unlink(missing_ok=True)
        else:
            stale.write_text(before)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["executor_info"]["own_instance"]
