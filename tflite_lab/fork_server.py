"""A fork server per Ray node: one process imports TensorFlow once, and each upload's jobs run in a
fresh process forked from it, so a Ray task does not pay TensorFlow's import (~4 s of CPU) per upload.

- **Isolation stays**: every upload gets its own forked worker (the Ray task of an upload keeps one
  connection to it; a Ray worker process serves one upload, see ``ray_executor``), in a session of its
  own. The server itself never runs a job or a TensorFlow op: it only forks, so each child starts
  with TensorFlow imported and no thread pool created (``set_tf_threads`` still applies).
- **No orphan**: a child runs its jobs in its main thread while a watcher thread waits on the
  connection; when the Ray task's process ends (a cancel, a time limit, a kill) the connection
  closes and the child kills its own process group at once, also in the middle of a job. The server exits when the process it
  was started for (the node's raylet) is gone.
- **One per node and user**: a Unix socket in the temp folder named after the raylet's pid; the
  first task to find none starts it under a file lock, the others wait on the lock and connect.

The wire protocol of a child is the local worker's (``worker.serve_jobs``).
"""
from __future__ import annotations

import fcntl
import os
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
    """A fresh worker forked for the caller: (its connection, its pid), ready for jobs with ``env``
    applied. Starts the node's server (TensorFlow imported once) when there is none.

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
    _server_connection(anchor_pid, env, timeout_s).close()       # the fork it makes sees EOF and exits


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
    server_env["PYTHONPATH"] = ROOT + (os.pathsep + server_env["PYTHONPATH"] if server_env.get("PYTHONPATH") else "")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "tflite_lab.fork_server", path, str(anchor_pid)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=server_env,
                                start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock = _connect(path)
        if sock is not None:
            return sock
        if proc.poll() is not None:
            raise WorkerError(f"The fork server exited with code {proc.returncode} while starting; see {log_path}.")
        time.sleep(0.05)
    proc.kill()
    raise WorkerError(f"The fork server did not start within {timeout_s:g} s; see {log_path}.")


# ---- the server ----

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
    listener.settimeout(1.0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)       # children are reaped by the kernel
    print(f"fork server {os.getpid()} ready on {path} for process {anchor_pid}", flush=True)
    while alive(anchor_pid):
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)     # its own children (tflite_convert) are waited for
            os.setsid()
            _child(conn, jobs)
        conn.close()
    try:                                # its raylet is gone: nobody will look for this path again
        if os.stat(path).st_ino == mine:
            os.unlink(path)
        os.unlink(path + ".lock")
    except OSError:
        pass
    os._exit(0)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _child(sock: socket.socket, jobs: dict) -> None:
    """A forked worker: the caller's environment, then the local worker's job loop; never returns."""
    conn = Connection(sock.detach())
    try:
        os.environ.update(conn.recv())
        from .bench import default_threads
        from .runtime import set_tf_threads
        set_tf_threads(default_threads())      # no TensorFlow op ran in the server: its pools are not fixed yet
        threading.Thread(target=_watch, args=(conn.fileno(),), daemon=True).start()
        from .worker import serve_jobs
        serve_jobs(conn, jobs)
    finally:
        os._exit(0)


def _watch(fd: int) -> None:
    """End the child and its process group the moment the caller's end of the connection closes
    (the Ray task's process was cancelled, timed out or killed), also in the middle of a job."""
    peek = socket.socket(fileno=os.dup(fd))
    while True:
        try:
            data = peek.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data:
            os.killpg(0, signal.SIGKILL)
        time.sleep(0.05)                # a message not yet read by the job loop: look again shortly


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
