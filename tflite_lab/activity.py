"""Who is using the CPUs: a server-wide registry of running worker jobs, and the bench gate.

Every session of a server (and every CLI run) that shares one store root shares this registry,
``<store root>/activity/``:
  jobs/<pid>-<n>.json   one file per running job: pid, process start time, kind, label, start time,
                        state (``running``; ``waiting`` while it is blocked on the gate; ``bench``)
  bench.gate            a lock file: a job takes it shared for the moment it registers (a turnstile),
                        a bench holds it exclusively for its whole timing
So benches run one at a time, no job starts while a bench runs, and a bench first waits (bounded,
``Limits.bench_wait_s``) for the jobs already running, then times anyway and says which ones ran.

A job never holds the shared lock while it waits for anything but the gate itself, so a job that
benches inside itself (a single ``convert``) cannot deadlock with its own run's workers. An entry
whose process is gone (a killed worker) is ignored and removed; its flock died with it.
"""
from __future__ import annotations

import fcntl
import functools
import itertools
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .config import cache_dir

GATE = "bench.gate"
POLL_S = 0.1
_SEQ = itertools.count(1)


def activity_dir() -> Path:
    """``activity/`` in the store root (``config.cache_dir()``), created on first use."""
    d = cache_dir() / "activity"
    (d / "jobs").mkdir(parents=True, exist_ok=True)
    return d


def _start_time(pid: int) -> float | None:
    import psutil
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _alive(entry: dict) -> bool:
    """The entry's process still exists and is the same process (a recycled pid is another one)."""
    t = _start_time(int(entry.get("pid", -1)))
    return t is not None and abs(t - float(entry.get("create_time", 0))) < 1.0


def _write(path: Path, entry: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(entry, fh)
    os.replace(tmp, path)         # readers see the whole entry or none


def _entries() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted((activity_dir() / "jobs").glob("*.json")):
        try:
            entry = json.loads(p.read_text())
        except (OSError, ValueError):
            continue              # removed while listing
        if _alive(entry):
            out.append((p, entry))
        else:
            p.unlink(missing_ok=True)     # stale: its worker was killed before it could clean up
    return out


def running(exclude_pid: int | None = None) -> list[dict]:
    """Jobs that use the CPU now (state ``running``), oldest first, except those of ``exclude_pid``."""
    return [e for _, e in _entries() if e.get("state") == "running" and e["pid"] != exclude_pid]


def _set_state(pid: int, state: str) -> None:
    for p, e in _entries():
        if e["pid"] == pid:
            _write(p, {**e, "state": state})


def _open_gate() -> int:
    return os.open(activity_dir() / GATE, os.O_RDWR | os.O_CREAT, 0o644)


def _lock(fd: int, mode: int, on_wait=None) -> None:
    """flock ``mode``; ``on_wait()`` first when it has to wait."""
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        if on_wait:
            on_wait()
        fcntl.flock(fd, mode)


@contextmanager
def registered(kind: str, label: str, progress=None):
    """Register this process's job for its duration. Waits first while a bench holds the gate."""
    fd = _open_gate()
    try:
        _lock(fd, fcntl.LOCK_SH, progress and (lambda: progress("wait for a benchmark of another session")))
        pid = os.getpid()
        path = activity_dir() / "jobs" / f"{pid}-{time.time_ns()}-{next(_SEQ)}.json"
        _write(path, {"pid": pid, "create_time": _start_time(pid), "kind": kind, "label": label,
                      "started_at": time.time(), "state": "running"})
    finally:
        os.close(fd)              # the turnstile: registered, the shared lock is not kept
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def job_label(kind: str, kwargs: dict) -> str:
    """What a job does, for another session's bench: "convert saved_model-int8 of mobilenet.keras"."""
    src = (kwargs.get("prepared") or {}).get("source") or kwargs.get("source") or {}
    name = src.get("filename") or "a model"
    if kind == "cell":
        return f"convert {kwargs.get('route')}-{kwargs.get('optimization')} of {name}"
    if kind == "provided":
        return f"run of {(kwargs.get('tflite_source') or {}).get('filename') or 'a .tflite'} against {name}"
    what = {"prepare": "load and run", "describe": "read", "bench": "benchmark of", "debug": "debug of",
            "selective": "selective conversion of"}.get(kind, kind)
    return f"{what} {name}"


def tracked(kind: str, fn):
    """``fn`` (a worker job) wrapped so that it runs registered (see ``registered``)."""
    @functools.wraps(fn)
    def run(progress=None, **kwargs):
        with registered(kind, job_label(kind, kwargs), progress):
            return fn(**kwargs, **({"progress": progress} if progress is not None else {}))
    return run


@contextmanager
def bench_gate(wait_s: float, progress=None):
    """Hold the gate exclusively for a bench: after any other bench, with no new job starting.

    Jobs already running (of any session, except this process's own) are waited for up to
    ``wait_s`` seconds. Yields a dict that, once the block ends, holds the ``conditions`` entries:
    ``alone`` (no other job ran while timing), ``concurrent`` (those that did: pid, kind, label,
    started_at), ``waited_s`` and ``wait_limit_s``.
    """
    pid = os.getpid()
    fd = _open_gate()
    out: dict = {}
    try:
        _set_state(pid, "waiting")    # this job's own entry: blocked here, it uses no CPU
        _lock(fd, fcntl.LOCK_EX, progress and (lambda: progress("wait for another benchmark")))
        _set_state(pid, "bench")
        t0 = time.monotonic()
        others, said = running(pid), None
        while others and time.monotonic() - t0 < wait_s:
            if progress and len(others) != said:
                said = len(others)
                progress(f"wait for {said} other job{'s' if said != 1 else ''} to finish")
            time.sleep(POLL_S)
            others = running(pid)
        out.update(waited_s=round(time.monotonic() - t0, 3), wait_limit_s=wait_s)
        yield out
        # New jobs cannot start while the gate is held; one that did (outside this registry's
        # rules) and still runs counts as well.
        seen = {(e["pid"], e["started_at"]) for e in others}
        others += [e for e in running(pid) if (e["pid"], e["started_at"]) not in seen]
        out.update(alone=not others, concurrent=[{k: e.get(k) for k in ("pid", "kind", "label", "started_at")}
                                                 for e in others])
    finally:
        os.close(fd)              # releases the exclusive lock
        _set_state(pid, "running")


def timing_note(conditions: dict | None) -> str | None:
    """One line when a timing was taken while other jobs ran, else None (also for records made
    before the registry, which do not say)."""
    if not conditions or conditions.get("alone") is not False:
        return None
    jobs = conditions.get("concurrent") or []
    n = len(jobs)
    ran = ", ".join(f"{j.get('label')} (pid {j.get('pid')})" for j in jobs)
    waited = conditions.get("waited_s")
    return (f"timed while {n} other job{'s' if n != 1 else ''} ran: {ran}"
            + (f", after waiting {waited:.0f} s for {'it' if n == 1 else 'them'}" if waited and waited >= 1 else "")
            + ": other work on the same CPUs skews these numbers")
