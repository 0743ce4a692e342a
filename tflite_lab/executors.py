"""Picking where jobs run: this machine's worker pool (``executor.LocalExecutor``) or Ray
(``ray_executor.RayExecutor``), per run or for the whole server. The one module that knows both.
"""
from __future__ import annotations

import os
import threading

from .config import Limits
from .executor import Executor, LocalExecutor, executor_name
from .ray_executor import RayExecutor


def make_executor(name: str | None = None, *, size: int = 2, limits: Limits | None = None,
                  prestart: int = 0, ray_address: str | None = None) -> Executor:
    """A new executor of the given kind (see ``executor_name``); close it when done.

    ``size``: local workers, or the CPUs of a local Ray instance (a cluster brings its own).
    ``ray_address``: the cluster to join (else RAY_ADDRESS, else a local instance for the run).
    Raises: TFLiteLabError for an unknown name or an unreachable cluster.
    """
    if executor_name(name) == "ray":
        return RayExecutor(ray_address, limits, num_cpus=size)
    return LocalExecutor(size, limits, prestart)


_DEFAULT: Executor | None = None
_DEFAULT_LOCK = threading.Lock()


def default_executor() -> Executor:
    """The process-wide executor (the Streamlit server's): TFLITE_LAB_EXECUTOR, local by default.

    Local: the shared worker pool, size from TFLITE_LAB_WORKERS (default 2), one worker started at once.
    Ray: RAY_ADDRESS's cluster, else a local instance with TFLITE_LAB_WORKERS CPUs.
    Raises: TFLiteLabError (unknown executor, unreachable cluster).
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or getattr(getattr(_DEFAULT, "pool", None), "_closed", False):
            if executor_name() == "ray":
                import atexit
                _DEFAULT = make_executor("ray", size=int(os.environ.get("TFLITE_LAB_WORKERS", "2")))
                atexit.register(_DEFAULT.close)
            else:
                from .worker import default_pool
                _DEFAULT = LocalExecutor(pool=default_pool())
        return _DEFAULT
