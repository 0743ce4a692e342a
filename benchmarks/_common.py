"""Shared helpers: the benchmark model and a timed subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_mobilenet(path: Path) -> Path:
    """MobileNetV2 (alpha 0.35, 96x96, weights=None), BatchNorm statistics set from one batch."""
    code = f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
m = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
bns = [l for l in m.layers if isinstance(l, keras.layers.BatchNormalization)]
for l in bns: l.momentum = 0.0
m(np.random.default_rng(0).random((16, 96, 96, 3), dtype=np.float32), training=True)
for l in bns: l.momentum = 0.99
m.save(r"{path}")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return path


def timed(cmd: list[str], env: dict | None = None) -> float:
    e = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt


def run_checked(cmd: list[str], env: dict | None = None, ok_codes=(0,)) -> tuple[float, str]:
    """Wall time of ``cmd`` (a whole process, TensorFlow import included) and its stdout.

    Any other exit code stops the benchmark: a time is only worth comparing if the work succeeded.
    """
    e = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode not in ok_codes:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}")
    return dt, r.stdout


def machine_line() -> str:
    """The conditions a number was taken under: CPUs and the load average while it ran."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} (1/5/15 min)"
