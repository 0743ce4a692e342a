"""Isolated worker processes: all model loading, conversion and inference runs here.

Each worker is a fresh Python (``python -m tflite_lab.worker FD``) that imports TensorFlow once and
then serves jobs over a socket, one at a time, each in its own temporary workspace that is removed
afterwards. The parent enforces a wall-time and a memory limit per job; a crash, hang or
out-of-memory kills that worker and becomes a WorkerError for that job only. The parent never
imports TensorFlow.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from .config import Limits, cache_dir
from .errors import Cancelled, TFLiteLabError, WorkerError, mid_sentence, wrapped

log = logging.getLogger("tflite_lab.worker")
STARTUP_LIMIT_S = 180.0


def _jobs():
    """Job name -> function; each runs registered in the server's activity registry (``activity.py``):
    it waits while another session's bench holds the gate, and benches see it while it runs."""
    from . import bench, debug, pipeline, tryit
    from .activity import tracked
    from .targets import browser, mobile_bundle
    jobs = {
        "try_sample": tryit.try_job,
        "try_browser_outputs": tryit.browser_outputs,
        "mobile_bundles": mobile_bundle.mobile_job,
        "device_cell": browser.device_job,
        "judge_device": browser.judge_device_job,
        "debug": debug.run_debug,
        "selective": debug.run_selective,
        "describe": pipeline.describe,
        "prepare": pipeline.prepare,
        "cell": pipeline.run_cell,
        "bench": bench.bench_phase,
        "provided": pipeline.run_provided,
    }
    return {name: tracked(name, fn) for name, fn in jobs.items()}


class JobStats:
    """Where an executor's time went, summed over its jobs (``Executor.job_stats()``): ``wait_s`` from the
    call to the job starting in a process (a free slot, a worker's start-up, Ray's scheduling),
    ``run_s`` from there to its result, ``after_s`` from the result to the slot being free again
    (Ray: the task's end), and the distinct worker processes that ran them."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.wait_s = self.run_s = self.after_s = 0.0
        self.pids: set[int] = set()

    def add(self, wait_s: float, run_s: float, after_s: float = 0.0, pid: int | None = None) -> None:
        with self._lock:
            self.count += 1
            self.wait_s += wait_s
            self.run_s += run_s
            self.after_s += after_s
            if pid is not None:
                self.pids.add(pid)

    def as_dict(self) -> dict:
        with self._lock:
            return {"count": self.count, "wait_s": round(self.wait_s, 3), "run_s": round(self.run_s, 3),
                    "after_s": round(self.after_s, 3), "worker_processes": len(self.pids)}


class _Worker:
    def __init__(self, limits: Limits, log_dir: Path):
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"),
                   CUDA_VISIBLE_DEVICES="-1", PYTHONUNBUFFERED="1")
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log_path = log_dir / f"worker-{time.time_ns()}.log"
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tflite_lab.worker", str(child_sock.fileno())],
                                     pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()
        child_sock.close()
        self.conn = Connection(os.dup(parent_sock.fileno()))
        parent_sock.close()
        self.ready = False
        self.jobs_done = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the worker and its children (see ``tree_rss_mb``)."""
        return tree_rss_mb(self.proc.pid)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the worker and its tflite_convert children
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=3)   # the socket closes a moment before the exit status exists
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "stopped"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            return f"was killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        return f"exited with code {code}"


class MemoryPollError(Exception):
    """The worker's own memory could not be read (so its limit cannot be checked)."""


def tree_rss_mb(pid: int, attempts: int = 3) -> float:
    """Resident MB of process ``pid`` and all its descendants.

    A child that exits between listing and reading is skipped (its memory is freed); the others
    still count. If the process itself cannot be read, retry, then raise MemoryPollError: a failed
    poll must never read as 0 MB, which would switch the limit off.
    """
    import psutil
    last: Exception | None = None
    for i in range(attempts):
        try:
            p = psutil.Process(pid)
            total = p.memory_info().rss
            children = p.children(recursive=True)
        except (psutil.Error, OSError) as e:
            last = e
            time.sleep(0.01 * (i + 1))
            continue
        for q in children:
            try:
                total += q.memory_info().rss
            except (psutil.Error, OSError):
                pass          # exited mid-poll
        return total / 2**20
    raise MemoryPollError(f"cannot read the memory of process {pid}: {type(last).__name__}: {last}")


TICK_S = 0.5             # progress is re-sent this often during a long step
MAX_FAILED_POLLS = 8      # consecutive unreadable polls (~2 s) before a job is stopped unchecked


class WorkerPool:
    """A few long-lived workers shared by threads (Streamlit sessions, matrix cells).

    ``run`` blocks the calling thread until its job is done; at most ``size`` jobs run at once.
    """

    def __init__(self, size: int = 2, limits: Limits | None = None, prestart: int = 0):
        self.size = max(1, size)
        self.limits = limits or Limits.from_env()
        self.log_dir = cache_dir() / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self.busy_pids: set[int] = set()
        self.stats = JobStats()
        for _ in range(min(prestart, self.size)):
            self._idle.append(self._spawn())

    def _spawn(self) -> _Worker:
        self._count += 1
        return _Worker(self.limits, self.log_dir)

    def _acquire(self) -> _Worker:
        with self._cv:
            while True:
                if self._closed:
                    raise WorkerError("The worker pool is shut down.")
                while self._idle:
                    w = self._idle.pop()
                    if w.alive():
                        return w
                    self._count -= 1
                if self._count < self.size:
                    try:
                        return self._spawn()
                    except OSError as e:
                        self._count -= 1
                        raise WorkerError(wrapped("Cannot start a worker process: ", e)) from None
                self._cv.wait()

    def _release(self, w: _Worker, healthy: bool) -> None:
        with self._cv:
            self.busy_pids.discard(w.pid)
            if healthy and w.alive() and not self._closed:
                self._idle.append(w)
            else:
                self._count -= 1
                if w.alive():
                    w.kill()
            self._cv.notify()

    def run(self, job: str, progress=None, time_limit_s: float | None = None,
            memory_limit_mb: float | None = None, label: str | None = None, cancel=None, **kwargs):
        """Run ``job`` (see ``_jobs``) with ``kwargs`` in a worker; return its result.

        ``progress(step, elapsed_s)`` is called as the job reports its stages, and again with the
        same step every ``TICK_S`` (elapsed time keeps moving; a Streamlit script can be stopped there).
        ``cancel`` (a ``threading.Event``): once set, the worker is killed and Cancelled raised.
        Raises the job's TFLiteLabError, Cancelled, or WorkerError on crash, timeout or memory overrun.
        """
        what = label or _label(job, kwargs)
        time_limit = time_limit_s or self.limits.job_time_s
        mem_limit = memory_limit_mb or self.limits.job_memory_mb
        called = time.monotonic()
        w = self._acquire()
        if cancel is not None and cancel.is_set():      # cancelled while waiting for a worker: keep it
            self._release(w, True)
            raise Cancelled(f"{what} was cancelled before it started.")
        self.busy_pids.add(w.pid)
        healthy = False
        workspace = None
        start = time.monotonic()
        try:
            if not w.ready:
                self._wait_ready(w, progress, start, cancel)
            job_id = next(self._ids)
            # The parent owns the workspace, so it is removed even when the worker is killed.
            workspace = tempfile.mkdtemp(prefix=f"tflite-lab-job{job_id}-")
            w.conn.send((job_id, job, kwargs, workspace))
            started = time.monotonic()
            next_mem_check = 0.0
            failed_polls = 0
            step, next_tick = None, started + TICK_S
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"{what} was cancelled; its worker was stopped.")
                if w.conn.poll(0.05):
                    try:
                        kind, _, payload = w.conn.recv()
                    except (EOFError, OSError):
                        raise WorkerError(_crash_message(what, w.death_reason(), kwargs)) from None
                    if kind == "progress":
                        step, next_tick = payload, time.monotonic() + TICK_S
                        if progress:
                            progress(payload, time.monotonic() - started)
                        continue
                    healthy = True
                    w.jobs_done += 1
                    self.stats.add(started - called, time.monotonic() - started, pid=w.pid)
                    if kind == "ok":
                        return payload
                    raise TFLiteLabError.from_dict(payload)
                now = time.monotonic()
                if progress and step is not None and now >= next_tick:
                    next_tick = now + TICK_S
                    progress(step, now - started)
                if not w.alive():
                    time.sleep(0.05)
                    if w.conn.poll(0):
                        continue
                    raise WorkerError(_crash_message(what, w.death_reason(), kwargs))
                if now - started > time_limit:
                    raise WorkerError(f"{what} ran longer than the limit of {time_limit:g} s and was stopped. "
                                      "Raise TFLITE_LAB_JOB_TIME_S for larger models.")
                if now >= next_mem_check:
                    next_mem_check = now + 0.25
                    try:
                        rss = w.rss_mb()
                        failed_polls = 0
                    except MemoryPollError as e:
                        if not w.alive():
                            continue            # exited: the socket or exit status says why, above
                        failed_polls += 1
                        if failed_polls >= MAX_FAILED_POLLS:
                            raise WorkerError(f"{what} was stopped: its memory could not be read ({mid_sentence(e, drop_period=True)}), so the "
                                              f"limit of {mem_limit:,.0f} MB could not be enforced.") from None
                        continue
                    if rss > mem_limit:
                        raise WorkerError(f"{what} used {rss:,.0f} MB, more than the limit of {mem_limit:,.0f} MB, "
                                          "and was stopped. Raise TFLITE_LAB_JOB_MEMORY_MB for larger models.")
        finally:
            if not healthy:
                w.kill()
            self._release(w, healthy)
            if workspace:
                shutil.rmtree(workspace, ignore_errors=True)

    def _wait_ready(self, w: _Worker, progress, start: float, cancel=None) -> None:
        if progress:
            progress("start worker", 0.0)
        failed_polls, next_tick = 0, start + TICK_S
        while not w.conn.poll(0.1):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled while its worker was starting.")
            if progress and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                progress("start worker", time.monotonic() - start)
            if not w.alive():
                raise WorkerError(f"A worker process {w.death_reason()} while starting; see {w.log_path}.")
            if time.monotonic() - start > STARTUP_LIMIT_S:
                raise WorkerError(f"A worker process did not start within {STARTUP_LIMIT_S:g} s.")
            try:
                rss = w.rss_mb()
                failed_polls = 0
            except MemoryPollError as e:
                failed_polls += 1               # not alive: said next round; else stop once it stays unreadable
                if failed_polls >= MAX_FAILED_POLLS and w.alive():
                    raise WorkerError(f"A worker process was stopped while starting: its memory could not be "
                                      f"read ({mid_sentence(e, drop_period=True)}), so the memory limit could not be enforced.") from None
                continue
            if rss > self.limits.job_memory_mb:
                raise WorkerError(f"A worker process used more than the limit of {self.limits.job_memory_mb:,.0f} MB "
                                  "while starting.")
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            raise WorkerError(f"A worker process {w.death_reason()} while starting; see {w.log_path}.") from None
        if msg[0] != "ready":
            raise WorkerError(f"A worker process failed to start: {msg}")
        w.ready = True

    def close(self) -> None:
        with self._cv:
            self._closed = True
            idle, self._idle = self._idle, []
            self._cv.notify_all()
        for w in idle:
            if w.ready:   # a worker still importing TensorFlow would only answer in seconds
                try:
                    w.conn.send(None)
                    w.proc.wait(timeout=5)
                except Exception:
                    pass
            if w.alive():
                w.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _label(job: str, kwargs: dict) -> str:
    if job == "cell":
        return f"Converting {kwargs.get('route')}-{kwargs.get('optimization')}"
    return {"prepare": "Loading and running the original model", "describe": "Reading the model",
            "provided": "Running the given .tflite"}.get(job, f"Job '{job}'")


def _crash_message(what: str, reason: str, kwargs: dict) -> str:
    return (f"{what} crashed: the worker process {reason}. Unless it was killed from outside, TensorFlow/LiteRT "
            "failed on this model; try another route or optimization. The next job starts a fresh worker.")


_DEFAULT: WorkerPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> WorkerPool:
    """The process-wide pool (the Streamlit server's); size from TFLITE_LAB_WORKERS (default 2)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT._closed:
            import atexit
            # One worker starts at once, so TensorFlow is imported before the first model arrives.
            _DEFAULT = WorkerPool(int(os.environ.get("TFLITE_LAB_WORKERS", "2")), prestart=1)
            atexit.register(_DEFAULT.close)
        return _DEFAULT


# ---- the worker side ----

def _serve(fd: int) -> None:
    conn = Connection(fd)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow  # noqa: F401  (imported once per worker: the whole point of keeping it alive)
    import keras  # noqa: F401
    from .bench import default_threads
    from .runtime import set_tf_threads
    set_tf_threads(default_threads())    # before TF runs anything: its pools are fixed after that
    serve_jobs(conn, _jobs())


def serve_jobs(conn: Connection, jobs: dict) -> None:
    """The job loop of a worker (spawned here, or forked by ``fork_server``): ready, then one job at a
    time until the parent sends None or closes the connection."""
    conn.send(("ready", 0, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is None:
            # Nothing is left to clean (each job's workspace is gone); TensorFlow's own teardown at
            # interpreter exit takes 1-3 s, which every CLI run would wait for.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        job_id, name, kwargs, workspace = msg
        kind, payload = call_job(jobs, name, kwargs, lambda step: conn.send(("progress", job_id, step)), workspace,
                                 f"job {job_id} {name}")
        conn.send((kind, job_id, payload))


def call_job(jobs: dict, name: str, kwargs: dict, progress, workspace: str, label: str) -> tuple[str, object]:
    """One job, as both executors run it: in its own workspace (the cwd and the converter's temp
    files, removed afterwards); ``("ok", result)`` or ``("error", the error as a dict)`` — a
    TFLiteLabError as raised, anything else an internal WorkerError. The details go to stderr
    (the worker's log, the operator's record); the user gets the one line."""
    home = os.getcwd()
    os.chdir(workspace)
    tempfile.tempdir = workspace
    try:
        return "ok", jobs[name](**kwargs, progress=progress)
    except TFLiteLabError as e:
        print(f"{label}: {type(e).__name__}: {e.user_message}\n{e.detail}", file=sys.stderr, flush=True)
        return "error", e.to_dict()
    except Exception as e:
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return "error", WorkerError(f"Internal error in '{name}': {type(e).__name__}: {first}", detail=tb).to_dict()
    finally:
        os.chdir(home)
        tempfile.tempdir = None
        shutil.rmtree(workspace, ignore_errors=True)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
