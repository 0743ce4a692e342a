"""A fork server per Ray node: one process imports TensorFlow once, and each upload's jobs run in a
process forked from it, so a Ray task does not pay TensorFlow's import (~4 s of CPU) per upload.

- **Isolation stays**: a forked worker serves one upload (and one set of job settings) only, in a
  session of its own; the server itself never runs a job or a TensorFlow op: it only forks, so each
  child starts with TensorFlow imported and no thread pool created (``set_tf_threads`` still applies).
- **Warm across Ray workers**: a Ray task connects, names its upload, and the server hands the
  connection (``socket.send_fds``) to an idle fork of that upload, else forks a new one. Ray gives a
  task to any idle Ray worker, so an upload's forks are the node's, not a Ray worker's: one warm
  process per upload and concurrent task, its model loaded once. Idle forks are kept ``IDLE_S``
  (at most ``MAX_IDLE``).
- **No orphan**: a caller that closes its connection during a job (its Ray task was cancelled, timed
  out or killed) makes the fork kill its own process group at once; closing between jobs hands the
  fork back. A fork ends with the server, and the server when the process it was started for (the
  node's raylet) is gone.
- **One per node and user**: a Unix socket in the temp folder named after the raylet's pid; the
  first task to find none starts it under a file lock, the others wait on the lock and connect.

The wire protocol of a fork is the local worker's (``worker.call_job`` per job).
"""
from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from .config import cache_dir
from .errors import WorkerError

STARTUP_LIMIT_S = 180.0
ROOT = str(Path(__file__).resolve().parent.parent)


def socket_path(anchor_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"tflite-lab-fork-{os.getuid()}-{anchor_pid}.sock")


def fork_worker(anchor_pid: int, env: dict[str, str], timeout_s: float = STARTUP_LIMIT_S) -> tuple[Connection, int]:
    """A worker of the caller's upload (``env["TFLITE_LAB_UPLOAD"]``) with ``env`` applied: an idle fork
    of the same upload and settings, else a fresh one; (its connection, its pid). Starts the node's
    server (TensorFlow imported once) when there is none. Close the connection when the task is done.

    Raises: WorkerError when the server cannot be started or the fork does not answer."""
    conn = Connection(_server_connection(anchor_pid, env, timeout_s).detach())
    try:
        conn.send(env)
        if not conn.poll(timeout_s):
            raise WorkerError(f"A forked worker did not answer within {timeout_s:g} s.")
        kind, _, pid = conn.recv()
    except (EOFError, OSError) as e:
        conn.close()
        raise WorkerError(f"A forked worker exited while starting ({type(e).__name__}); see the fork server's "
                          f"log in {cache_dir() / 'logs'}.") from None
    return conn, pid


def ensure_server(anchor_pid: int, env: dict[str, str], timeout_s: float = STARTUP_LIMIT_S) -> None:
    """Start the node's server now (when a run begins), so the first job does not wait for its import."""
    _server_connection(anchor_pid, env, timeout_s).close()       # no upload named: nothing is forked


def _server_connection(anchor_pid: int, env: dict[str, str], timeout_s: float) -> socket.socket:
    path = socket_path(anchor_pid)
    sock = _connect(path)
    if sock is None:
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)            # one starts the server; the others wait here
            sock = _connect(path) or _start(path, anchor_pid, env, timeout_s)
    return sock


def _connect(path: str) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return s
    except (FileNotFoundError, ConnectionRefusedError):   # none yet, or a dead server's stale socket
        s.close()
        return None


def _start(path: str, anchor_pid: int, env: dict[str, str], timeout_s: float) -> socket.socket:
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"fork-server-{anchor_pid}-{time.time_ns()}.log"
    server_env = {k: v for k, v in os.environ.items() if k != "TFLITE_LAB_UPLOAD"}   # it serves every upload
    server_env.update({k: v for k, v in env.items() if k != "TFLITE_LAB_UPLOAD"})
    server_env["TFLITE_LAB_FORK_STARTER"] = str(os.getpid())     # for the operator (and a test): who started it
    server_env["PYTHONPATH"] = ROOT + (os.pathsep + server_env["PYTHONPATH"] if server_env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as logf:
        # The launcher forks the server and exits: the server is nobody's child. Ray kills the
        # children of a Ray worker that exits (idle workers do, after 1 s by Ray's default), which
        # would take the node's server and its forks along with the worker that started it.
        launcher = subprocess.Popen([sys.executable, "-m", "tflite_lab.fork_server", path, str(anchor_pid)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf, env=server_env,
                                    start_new_session=True)
        first = launcher.stdout.readline().strip()
        launcher.wait()
    if not first.isdigit():
        raise WorkerError(f"The fork server could not be started (exit code {launcher.returncode}); see {log_path}.")
    server = int(first)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock = _connect(path)
        if sock is not None:
            return sock
        if not alive(server):
            raise WorkerError(f"The fork server exited while starting; see {log_path}.")
        time.sleep(0.05)
    _kill_quietly(server)
    raise WorkerError(f"The fork server did not start within {timeout_s:g} s; see {log_path}.")


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _detach() -> None:
    """In the launcher: fork; the parent tells the server's pid and exits, the child goes on with its
    output in the log (the launcher's stderr)."""
    pid = os.fork()
    if pid:
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os._exit(0)
    os.dup2(2, 1)                      # stdout: the log too, no longer the launcher's pipe


# ---- the server ----

IDLE_S = 300.0      # an idle fork (its upload's model warm) is kept this long, as Ray keeps idle workers
# Idle forks kept on a node, least recently used ended first: Ray reserves memory for running
# tasks only, so an idle fork (TensorFlow shared copy-on-write, its model its own) is bounded by count.
MAX_IDLE = 2 * (os.cpu_count() or 1)


class _Fork:
    def __init__(self, pid: int, ctrl: socket.socket, key: tuple):
        self.pid, self.ctrl, self.key = pid, ctrl, key
        self.idle_since: float | None = None     # None while a caller holds it


def _serve(path: str, anchor_pid: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow  # noqa: F401  (the import every forked worker inherits)
    import keras  # noqa: F401
    # What a job imports lazily on its first call (modules only: no TensorFlow op runs in the server)
    import ai_edge_litert.interpreter  # noqa: F401
    import tensorflow.lite.python.optimize.calibrator  # noqa: F401
    import tensorflow.saved_model  # noqa: F401
    from .worker import _jobs
    jobs = _jobs()                      # imports the pipeline's modules too
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    listener.bind(tmp)
    listener.listen(64)
    os.rename(tmp, path)                # appears whole, replacing a dead server's stale socket
    mine = os.stat(path).st_ino
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)       # children are reaped by the kernel
    print(f"fork server {os.getpid()} ready on {path} for process {anchor_pid}", flush=True)
    forks: dict[int, _Fork] = {}
    while alive(anchor_pid):
        ready, _, _ = select.select([listener, *(f.ctrl for f in forks.values())], [], [], 1.0)
        for r in sorted(ready, key=lambda r: r is listener):     # forks back in the pool before new callers
            if r is listener:
                _hand_out(listener, forks, jobs)
                continue
            f = next(f for f in forks.values() if f.ctrl is r)
            try:
                back = r.recv(1)
            except OSError:
                back = b""
            if back:
                f.idle_since = time.monotonic()          # its caller is done: it waits for the next one
            else:                                        # it ended (a killed job, a memory limit)
                forks.pop(f.pid).ctrl.close()
        idle = sorted((f for f in forks.values() if f.idle_since is not None), key=lambda f: f.idle_since)
        for i, f in enumerate(idle):
            if i < len(idle) - MAX_IDLE or time.monotonic() - f.idle_since > IDLE_S:
                forks.pop(f.pid).ctrl.close()            # it sees the end of its control socket and exits
    try:                                # its raylet is gone: nobody will look for this path again
        if os.stat(path).st_ino == mine:
            os.unlink(path)
        os.unlink(path + ".lock")
    except OSError:
        pass
    os._exit(0)


def _hand_out(listener: socket.socket, forks: dict, jobs: dict) -> None:
    """A caller's connection to an idle fork of the same upload and settings, else to a new fork."""
    conn, _ = listener.accept()
    try:
        reader = Connection(os.dup(conn.fileno()))
        env = reader.recv() if reader.poll(10.0) else None
        reader.close()
    except (EOFError, OSError):
        env = None
    if not isinstance(env, dict):        # ensure_server's probe, or a caller that gave up
        conn.close()
        return
    key = tuple(sorted(env.items()))     # one upload only, with its own job settings
    idle = [f for f in forks.values() if f.key == key and f.idle_since is not None]
    for f in sorted(idle, key=lambda f: -f.idle_since):       # the warmest first
        try:
            socket.send_fds(f.ctrl, [b"c"], [conn.fileno()])
        except OSError:
            forks.pop(f.pid).ctrl.close()
            continue
        f.idle_since = None
        conn.close()
        return
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        listener.close()
        ours.close()
        for f in forks.values():         # a sibling's control socket held here would hide its end
            f.ctrl.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)     # its own children (tflite_convert) are waited for
        os.setsid()
        _child(conn, theirs, env, jobs)
    theirs.close()
    conn.close()
    forks[pid] = _Fork(pid, ours, key)


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True                     # no /proc: signal 0 is all there is


def _child(sock: socket.socket, ctrl: socket.socket, env: dict, jobs: dict) -> None:
    """A forked worker of one upload: serves one caller at a time, each handed over by the server,
    until the server closes its control socket; never returns."""
    try:
        os.environ.update(env)
        from .bench import default_threads
        from .runtime import set_tf_threads
        set_tf_threads(default_threads())      # no TensorFlow op ran in the server: its pools are not fixed yet
        while True:
            if not _serve_caller(Connection(sock.detach()), jobs, lambda: ctrl.sendall(b"i")):
                ctrl.sendall(b"i")             # the caller went away between jobs: idle again
            _, fds, _, _ = socket.recv_fds(ctrl, 1, 1)
            if not fds:
                break                          # the server ended, or dropped this fork
            sock = socket.socket(fileno=fds[0])
    except OSError:
        pass
    finally:
        os._exit(0)


def _serve_caller(conn: Connection, jobs: dict, idle) -> bool:
    """One caller's jobs, until it says goodbye (None): then ``idle()`` tells the server before the
    caller hears back, so the upload's next task, which can only start after this one ended, finds
    this fork idle (True). Or until it closes its end (False). Closing it during a job (the Ray
    task was cancelled, timed out or killed) kills this process group at once: the job never runs
    on unseen."""
    from .worker import call_job
    running, over = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(conn.fileno(), running, over), daemon=True)
    watcher.start()
    try:
        conn.send(("ready", 0, os.getpid()))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return False
            if msg is None:
                idle()
                conn.send(("bye", 0, None))
                return True
            running.set()
            job_id, name, kwargs, workspace = msg
            kind, payload = call_job(jobs, name, kwargs, lambda step: conn.send(("progress", job_id, step)),
                                     workspace, f"job {job_id} {name}")
            running.clear()                    # before the answer: a caller that then leaves is no cancel
            conn.send((kind, job_id, payload))
    finally:
        over.set()
        watcher.join()
        conn.close()


def _watch(fd: int, running: threading.Event, over: threading.Event) -> None:
    peek = socket.socket(fileno=os.dup(fd))
    try:
        while not over.is_set():
            try:
                data = peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                data = None                    # open, nothing unread
            except OSError:
                data = b""
            if data == b"" and running.is_set():
                os.killpg(0, signal.SIGKILL)
            over.wait(0.05)                    # unread data, or closed between jobs: the job loop sees it
    finally:
        peek.close()


if __name__ == "__main__":
    _detach()
    _serve(sys.argv[1], int(sys.argv[2]))
