"""Jobs on Ray: each job is a Ray task in a Ray worker process, with the local pool's limits and errors.

- **Same jobs**: a task sends ``worker._jobs()[job]`` (the pipeline functions, unchanged) with its own
  temporary workspace to its upload's worker, with the local worker's wire protocol.
- **Isolation**: a job runs in its upload's own process, forked from the node's fork server
  (``fork_server``: TensorFlow is imported once per node instead of once per upload); no process
  that runs model code ever serves two uploads. Ray's worker processes only relay (they never
  import TensorFlow), so Ray reuses them across uploads; each task borrows a warm fork of its upload
  from the server for its one job and hands it back, or kills it when the job did not answer.
- **Wall time**: the driver waits with ``ray.wait`` timeouts and stops an overrun with
  ``ray.cancel(force=True)`` (the worker process exits). **Memory**: each task declares
  ``memory=`` the job limit as a Ray resource, and the task polls the RSS of its process and of
  the forked worker with their children; over the limit it kills the forked worker, reports, and
  the driver force-cancels the task.
- **Errors**: a crashed, killed, timed-out or over-memory task is a WorkerError for that job only,
  with the local pool's one-line messages; tasks are never retried by Ray (``max_retries=0``).
- **Artifacts**: the jobs write them into the store (``TFLITE_LAB_CACHE``, passed to every task), and
  results carry their paths. On one machine that is simply the same folder; on a cluster the store,
  the models and the sample files must be on a path every node sees (a shared mount) — see README.
- **Progress**: a task is a Ray generator: it yields ``started``, each ``progress`` step, then the result.

Without an address a local Ray instance is started for the run, loopback-only (see ``LOOPBACK_ENV``).
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

from .config import Limits, cache_dir
from .errors import Cancelled, TFLiteLabError, WorkerError, mid_sentence
from .executor import Executor

ROOT = str(Path(__file__).resolve().parent.parent)
STARTUP_LIMIT_S = 180.0         # submitted but not running: no free CPU/memory for that long
FORK_ANCHOR = "TFLITE_LAB_FORK_ANCHOR"
CONNECT_TIMEOUT_S = 5.0


def LOCAL_SYSTEM_CONFIG(num_cpus: int) -> dict:  # noqa: N802
    """Keep warm Ray workers: Ray's defaults (soft limit = CPUs, idle workers killed after 1 s) start
    a new Ray worker (a Python start, ~0.5 s) for most tasks of a zoo; idle ones are kept 5 min, like
    the fork server's idle forks. The default-env workers Ray prestarts are not ours to use."""
    return {"num_workers_soft_limit": 3 * num_cpus, "idle_worker_killing_time_threshold_ms": 300_000,
            "enable_worker_prestart": False}


def _loopback_env(closed_port: int) -> dict[str, str]:
    """Environment for a local Ray instance that never leaves 127.0.0.1.

    Ray (2.60) otherwise takes the node IP from the default route and binds its servers there, and
    its dashboard probes cloud metadata (169.254.169.254, metadata.google.internal) even with
    usage stats off. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes the node IP 127.0.0.1 (every
    server binds to loopback); the HTTP proxy on a closed loopback port turns the probes into
    an immediate "connection refused" without a DNS lookup.
    """
    proxy = f"http://127.0.0.1:{closed_port}"
    local = "127.0.0.1,localhost,::1"
    return {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
            "http_proxy": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "HTTPS_PROXY": proxy,
            "no_proxy": local, "NO_PROXY": local}


def _parse_address(address: str) -> tuple[str, int]:
    a = address.strip()
    for prefix in ("ray://", "http://", "https://"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    host, sep, port = a.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TFLiteLabError(f"Ray address '{address}' is not HOST:PORT (for example 127.0.0.1:6379).")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One TCP connect to the cluster's head before ``ray.init``, which would otherwise retry for minutes.

    Raises: TFLiteLabError (exit 2) naming the address and what to do.
    """
    host, port = _parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__).lower()
        raise TFLiteLabError(f"Cannot reach the Ray cluster at {host}:{port} ({reason}). Start its head with "
                             "`ray start --head`, or fix RAY_ADDRESS / --ray-address; without an address a "
                             "local Ray instance is started.") from None


class RayExecutor(Executor):
    """Jobs as Ray tasks, on the cluster at ``address`` (or RAY_ADDRESS), else on a local instance."""

    name = "ray"

    def __init__(self, address: str | None = None, limits: Limits | None = None, num_cpus: int | None = None,
                 _server_here: bool = True):
        self.limits = limits or Limits.from_env()
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.busy: dict[int, str] = {}       # pid of each running task -> what it does ("Converting ...")
        self.forked: dict[int, int] = {}     # pid of each running task -> its upload's forked worker
        from .worker import JobStats
        self.stats = JobStats()
        self._closed_sock = None
        import logging
        t0 = time.perf_counter()
        if self.address:
            check_reachable(self.address)
            import ray
            self._ray = ray
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.ERROR, namespace="tflite_lab")
            except Exception as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise TFLiteLabError(f"Cannot join the Ray cluster at {self.address}: {first}") from None
            self._owns_instance = self._server_here = False
        else:
            self._owns_instance = True
            # The node is this machine: its fork server imports TensorFlow while Ray starts, anchored
            # to this process (the tasks find it by FORK_ANCHOR), instead of after, from a task.
            # (``_server_here=False``: as on a cluster, for its test.)
            self._server_here = _server_here
            if _server_here:
                env = _task_env(environ=self._runtime_env()["env_vars"])
                threading.Thread(target=_start_fork_server, args=(os.getpid(), env), daemon=True).start()
            self._start_local(num_cpus or 2, logging.ERROR)
        self.startup_s = time.perf_counter() - t0
        self._task = self._ray.remote(_ray_task)
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        self.nodes = len(nodes)
        self.cpus = int(self._ray.cluster_resources().get("CPU", 0))
        self._warming = [] if self._server_here else [self._warm_node(n["NodeID"]) for n in nodes]
        largest = max((n["Resources"].get("memory", 0) for n in nodes), default=0) / 2**20
        if largest and largest < self.limits.job_memory_mb:
            raise TFLiteLabError(f"No Ray node offers the {self.limits.job_memory_mb:,.0f} MB a job may use "
                                 f"(largest: {largest:,.0f} MB). Lower TFLITE_LAB_JOB_MEMORY_MB or add a larger node.")

    def _start_local(self, num_cpus: int, level: int) -> None:
        # A port that is bound but never listened on: connecting to it is refused at once.
        self._closed_sock = socket.socket()
        self._closed_sock.bind(("127.0.0.1", 0))
        env = _loopback_env(self._closed_sock.getsockname()[1])
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)      # Ray's processes inherit it at start; restored for ours below
        try:
            import ray
            from ray._private import ray_constants
            ray_constants.ENABLE_RAY_CLUSTER = False     # the same switch, in case ray was imported before
            self._ray = ray
            memory = int(num_cpus * self.limits.job_memory_mb * 2**20)
            # address="local": an instance of our own, never whatever /tmp/ray/ray_current_cluster
            # names (a crashed Ray's stale file, another user's cluster).
            ray.init(address="local", num_cpus=num_cpus, _memory=memory, object_store_memory=256 * 2**20,
                     _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                     logging_level=level, namespace="tflite_lab", _system_config=LOCAL_SYSTEM_CONFIG(num_cpus))
        except TFLiteLabError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise WorkerError(f"Cannot start a local Ray instance: {first}", detail=str(e)) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.address = self._ray.get_runtime_context().gcs_address

    def _warm_node(self, node_id: str):
        """Start the node's fork server while the run gets ready (no CPU claimed, so no job waits
        for it; the first job of the node waits on the server's start-up lock instead)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        return self._ray.remote(_warm_fork_server).options(
            num_cpus=0, max_retries=0, runtime_env=self._runtime_env(),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

    @property
    def size(self) -> int:
        return max(1, self.cpus)

    @property
    def busy_pids(self) -> set[int]:
        return set(self.busy) | set(self.forked.values())

    def info(self) -> dict:
        return {"name": "ray", "address": self.address, "startup_s": round(self.startup_s, 3),
                "own_instance": self._owns_instance}

    def job_stats(self) -> dict:
        return self.stats.as_dict()

    def describe(self) -> str:
        where = self.address + ("" if not self._owns_instance else " (local instance)")
        return f"ray at {where}, {self.cpus} CPUs" + (f" on {self.nodes} nodes" if self.nodes > 1 else "")

    def _runtime_env(self) -> dict:
        """The same for every task of this driver, so Ray reuses its worker processes across uploads:
        they only relay, and each upload's jobs run in forked workers of its own (``fork_server``)."""
        env = {k: v for k, v in os.environ.items() if k.startswith("TFLITE_LAB_")
               and k not in ("TFLITE_LAB_EXECUTOR", FORK_ANCHOR)}
        if self._server_here:
            env[FORK_ANCHOR] = str(os.getpid())
        env.update(TFLITE_LAB_CACHE=str(cache_dir()), CUDA_VISIBLE_DEVICES="-1",
                   TFLITE_LAB_JOB_TIME_S=f"{self.limits.job_time_s:g}",
                   TFLITE_LAB_JOB_MEMORY_MB=f"{self.limits.job_memory_mb:g}",
                   TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"), PYTHONUNBUFFERED="1",
                   PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
        return {"env_vars": env}

    def run(self, job: str, progress=None, time_limit_s: float | None = None,
            memory_limit_mb: float | None = None, label: str | None = None, cancel=None, **kwargs):
        from .worker import TICK_S, _crash_message, _label
        ray = self._ray
        what = label or _label(job, kwargs)
        time_limit = time_limit_s or self.limits.job_time_s
        mem_limit = memory_limit_mb or self.limits.job_memory_mb
        gen = self._task.options(num_cpus=1, memory=int(mem_limit * 2**20), max_retries=0,
                                 runtime_env=self._runtime_env()).remote(job, kwargs, mem_limit, what,
                                                                                        _upload_of(kwargs))
        submitted, started, pid = time.monotonic(), None, None
        step, next_tick, finished = "start worker", submitted + TICK_S, False
        if progress:
            progress(step, 0.0)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"{what} was cancelled; its Ray task was stopped.")
                ready, _ = ray.wait([gen], timeout=0.25)
                now = time.monotonic()
                if started is not None and now - started > time_limit:      # also while events keep coming
                    raise WorkerError(f"{what} ran longer than the limit of {time_limit:g} s and was stopped. "
                                      "Raise TFLITE_LAB_JOB_TIME_S for larger models.")
                if progress and not ready and now >= next_tick:
                    next_tick = now + TICK_S
                    progress(step, now - (started or submitted))
                if ready:
                    try:
                        kind, payload = ray.get(next(gen))
                    except StopIteration:
                        finished = True
                        raise WorkerError(_crash_message(what, "stopped", kwargs)) from None
                    except ray.exceptions.RayError as e:
                        finished = True
                        raise WorkerError(_crash_message(what, _death_reason(e), kwargs), detail=str(e)) from None
                    if kind == "started":
                        started, pid = now, payload
                        self.busy[pid] = what
                    elif kind == "forked":          # the process doing the work, for busy_pids
                        self.forked[pid] = payload
                    elif kind == "progress":
                        step, next_tick = payload, now + TICK_S
                        if progress:
                            progress(payload, now - started)
                    elif kind == "ok":
                        finished = True
                        _drain(ray, gen)
                        self.stats.add(started - submitted, now - started, time.monotonic() - now,
                                       self.forked.get(pid, pid))      # the process that ran it
                        return payload
                    else:
                        finished = True
                        if payload.pop("kill", False):
                            ray.cancel(gen, force=True)
                        else:
                            _drain(ray, gen)
                        raise TFLiteLabError.from_dict(payload)
                    continue
                if started is None and now - submitted > STARTUP_LIMIT_S:
                    raise WorkerError(f"{what} did not start on Ray within {STARTUP_LIMIT_S:g} s: no node had a free "
                                      f"CPU and {mem_limit:,.0f} MB of memory.")
        except BaseException:
            # cancelled, timed out, or the caller stopped (a Streamlit rerun raises in progress()):
            # the task must not run on unseen
            if not finished:
                ray.cancel(gen, force=True)
            raise
        finally:
            if pid is not None:
                self.busy.pop(pid, None)
                self.forked.pop(pid, None)

    def close(self) -> None:
        if getattr(self, "_ray", None) is not None and self._ray.is_initialized():
            if self._owns_instance:
                _kill_monitor(self._ray)
            self._ray.shutdown()
        if self._closed_sock is not None:
            self._closed_sock.close()
            self._closed_sock = None


def _kill_monitor(ray) -> None:
    """End the own instance's autoscaler monitor at once: ``ray.shutdown()`` gives it SIGTERM and
    then waits its full second before SIGKILL (Ray 2.60), on every run. A local instance of fixed
    size has nothing to autoscale. Private API: where it changed, shutdown simply waits."""
    try:
        from ray._private import ray_constants
        node = ray._private.worker._global_node
        for info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception:       # noqa: BLE001 - a Ray without these internals only loses the second
        pass


def _start_fork_server(anchor_pid: int, env: dict) -> None:
    from . import fork_server
    try:
        fork_server.ensure_server(anchor_pid, env)
    except TFLiteLabError:
        pass                # the first job says why, with its own message


def _drain(ray, gen, timeout_s: float = 10.0) -> None:
    """Wait for the task to end after its last item: by then it has handed its fork back to the
    server, and the next job finds a Ray worker free instead of Ray starting another."""
    ready, _ = ray.wait([gen], timeout=timeout_s)
    if ready:
        try:
            next(gen)
        except (StopIteration, ray.exceptions.RayError):
            pass


def _upload_of(kwargs: dict) -> str:
    """The upload a job works on (its worker process serves no other): the model's sha256."""
    for key in ("source", "prepared"):
        v = kwargs.get(key)
        if isinstance(v, dict):
            src = v.get("source", v)
            if isinstance(src, dict) and src.get("sha256"):
                return src["sha256"]
    return "none"


def _death_reason(e: Exception) -> str:
    """The local pool's wording where Ray tells enough (it does not pass the signal through)."""
    text = str(e)
    if "SIGKILL" in text or "killed" in text.lower():
        return "was killed by SIGKILL (out of memory?)"
    if "cancel" in text.lower():
        return "was stopped"
    return "exited unexpectedly"


# ---- the task side (runs in a Ray worker process) ----

def _warm_fork_server() -> None:
    _start_fork_server(_anchor(), _task_env())


def _anchor() -> int:
    """The process the node's fork server lives as long as: the tool's own instance names its driver
    (this machine is its only node); on a cluster it is the Ray worker's parent, the raylet."""
    return int(os.environ.get(FORK_ANCHOR) or os.getppid())


def _task_env(upload: str | None = None, environ=None) -> dict[str, str]:
    """What a forked worker gets: from a task's environment, or (the driver, before Ray starts) from
    the runtime env the tasks will have."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k.startswith(("TFLITE_LAB_", "TF_"))}
    env.update(CUDA_VISIBLE_DEVICES="-1", PYTHONUNBUFFERED="1")
    if upload is not None:
        env["TFLITE_LAB_UPLOAD"] = upload
    return env


def _ray_task(job: str, kwargs: dict, mem_limit_mb: float, what: str, upload: str):
    """A Ray generator task: ("started", pid), ("forked", its worker's pid), ("progress", step)..., then
    ("ok", result) or ("error", dict).

    The job runs in this upload's worker forked from the node's fork server (TensorFlow imported once
    per node), with the local pool's wire protocol, memory poll and error shaping."""
    import shutil
    import tempfile
    from . import fork_server
    from .worker import MAX_FAILED_POLLS, MemoryPollError, _crash_message, tree_rss_mb
    failed_polls, child, answered = 0, None, False
    job_id = time.monotonic_ns()
    yield "started", os.getpid()
    workspace = tempfile.mkdtemp(prefix="tflite-lab-ray-job-")
    try:
        try:
            conn, child = fork_server.fork_worker(_anchor(), _task_env(upload))
            conn.send((job_id, job, kwargs, workspace))
            yield "forked", child
        except TFLiteLabError as e:
            yield "error", e.to_dict()
            return
        except (OSError, EOFError):
            yield "error", WorkerError(_crash_message(what, "exited unexpectedly", kwargs)).to_dict()
            return
        while True:
            if conn.poll(0.25):
                try:
                    kind, msg_id, payload = conn.recv()
                except (EOFError, OSError):
                    yield "error", WorkerError(_crash_message(what, "exited unexpectedly", kwargs)).to_dict()
                    return
                if msg_id != job_id:
                    continue                    # never another job's answer
                answered = kind != "progress"
                yield kind, payload
                if kind != "progress":
                    return
                continue
            try:
                rss = tree_rss_mb(os.getpid()) + tree_rss_mb(child)     # the local pool's poll: never 0 MB on a failed read
                failed_polls = 0
            except MemoryPollError as e:        # as the local pool: stop once it stays unreadable
                failed_polls += 1
                if failed_polls < MAX_FAILED_POLLS:
                    continue
                _kill_group(child)
                yield "error", {**WorkerError(f"{what} was stopped: its memory could not be read ({mid_sentence(e, drop_period=True)}), so the "
                                              f"limit of {mem_limit_mb:,.0f} MB could not be enforced.").to_dict(),
                                "kill": True}
                time.sleep(30)
                os._exit(1)
            if rss > mem_limit_mb:
                _kill_group(child)
                yield "error", {**WorkerError(
                    f"{what} used {rss:,.0f} MB, more than the limit of {mem_limit_mb:,.0f} MB, and was stopped. "
                    "Raise TFLITE_LAB_JOB_MEMORY_MB for larger models.").to_dict(), "kill": True}
                time.sleep(30)            # the driver force-cancels this task; never serve another job
                os._exit(1)
    finally:
        if child is not None:
            if not answered:
                # Ray stopped this task without ending its process (a cancel can interrupt the
                # generator): its job must not run on unseen, nor leave its answer for the next job.
                _kill_group(child)
            else:
                _hand_back(conn)
            conn.close()
        shutil.rmtree(workspace, ignore_errors=True)     # the worker removes it; not when it was killed


def _hand_back(conn) -> None:
    """Give the fork back to the server for the upload's next task; returns once the server knows
    (otherwise that task, submitted the moment this one ends, could find it still busy and fork another)."""
    try:
        conn.send(None)
        if conn.poll(5.0):
            conn.recv()
    except (EOFError, OSError):
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)        # the forked worker and its tflite_convert children
    except (ProcessLookupError, PermissionError):
        pass
