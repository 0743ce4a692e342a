"""Where jobs run: one interface, and this machine's worker pool behind it (``ray_executor``: a Ray
cluster behind the same interface; ``executors``: picking one).

An executor runs one job of ``tflite_lab.worker`` (``describe``, ``prepare``, ``cell``, ...) with the
job functions of ``tflite_lab.pipeline`` unchanged, and gives back its result or raises the
project's errors: the job's own TFLiteLabError, or WorkerError (one line) when the process running
it crashed, hung past its wall-time limit or ran out of memory. ``size`` says how many jobs it
runs at once; the orchestration (``orchestrate.py``) keeps that many in flight.

Pick one with ``executors.make_executor(name)``; ``name`` defaults to ``TFLITE_LAB_EXECUTOR`` (else ``local``).
"""
from __future__ import annotations

import os

from .config import Limits
from .errors import TFLiteLabError

EXECUTORS = ("local", "ray")


class Executor:
    """Runs worker jobs; thread-safe (``run`` blocks its calling thread until the job is done)."""

    name = "?"

    @property
    def size(self) -> int:
        """How many jobs can run at once."""
        raise NotImplementedError

    def run(self, job: str, progress=None, **kwargs):
        """Run ``job`` with ``kwargs``; ``progress(step, elapsed_s)`` follows its stages, and is
        called again with the same step every half second while a step lasts.

        ``cancel=`` a ``threading.Event``: once set, the job's process is stopped and Cancelled
        raised. An exception raised by ``progress`` (a Streamlit rerun) also stops the job.
        Returns the job's result; raises its TFLiteLabError, or WorkerError on crash/timeout/memory.
        """
        raise NotImplementedError

    def describe(self) -> str:
        """One line for people: "local, 2 workers", "ray at 127.0.0.1:6379, 16 CPUs"."""
        return self.name

    def info(self) -> dict:
        """For scripts: ``name``, ``address`` (None: this machine's worker pool) and ``startup_s``,
        the seconds from the first call to a ready instance or a joined cluster (0 for local)."""
        return {"name": self.name, "address": None, "startup_s": 0.0}

    def job_stats(self) -> dict:
        """``worker.JobStats.as_dict()`` of the jobs run so far (empty where not kept)."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    """Today's worker pool: a few long-lived worker processes on this machine."""

    name = "local"

    def __init__(self, size: int = 2, limits: Limits | None = None, prestart: int = 0, pool=None):
        from .worker import WorkerPool
        self.pool = pool or WorkerPool(size, limits, prestart=prestart)

    @property
    def size(self) -> int:
        return self.pool.size

    @property
    def limits(self) -> Limits:
        return self.pool.limits

    def run(self, job: str, progress=None, **kwargs):
        return self.pool.run(job, progress=progress, **kwargs)

    def describe(self) -> str:
        return f"local, {self.size} worker{'s' if self.size != 1 else ''}"

    def job_stats(self) -> dict:
        return self.pool.stats.as_dict()

    def close(self) -> None:
        self.pool.close()


def executor_name(name: str | None = None) -> str:
    """The executor asked for: ``name``, else TFLITE_LAB_EXECUTOR, else "local"."""
    chosen = (name or os.environ.get("TFLITE_LAB_EXECUTOR") or "local").strip().lower()
    if chosen not in EXECUTORS:
        raise TFLiteLabError(f"Unknown executor '{chosen}' (from TFLITE_LAB_EXECUTOR or --executor); "
                             f"choose one of: {', '.join(EXECUTORS)}.")
    return chosen
