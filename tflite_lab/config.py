"""Resource limits and places on disk, read once from the environment (all overridable)."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    upload_mb: float = 512             # largest model or sample file accepted
    unzip_total_mb: float = 2048       # sum of uncompressed sizes in one archive
    unzip_max_ratio: float = 200       # uncompressed/compressed, per entry and overall
    unzip_max_entries: int = 20000
    input_sample_mb: float = 256       # declared size of one sample of one input
    max_samples: int = 4096
    max_images: int = 1000
    max_image_pixels: int = 40_000_000
    job_time_s: float = 900            # wall time of one worker job
    job_memory_mb: float = 6144        # resident memory of one worker (and its children)
    bench_wait_s: float = 30           # a bench waits this long for other sessions' jobs, then times anyway

    @staticmethod
    def from_env() -> "Limits":
        d = Limits()
        return replace(
            d,
            upload_mb=_env_float("TFLITE_LAB_UPLOAD_MB", d.upload_mb),
            unzip_total_mb=_env_float("TFLITE_LAB_UNZIP_MB", d.unzip_total_mb),
            input_sample_mb=_env_float("TFLITE_LAB_INPUT_MB", d.input_sample_mb),
            max_samples=int(_env_float("TFLITE_LAB_MAX_SAMPLES", d.max_samples)),
            job_time_s=_env_float("TFLITE_LAB_JOB_TIME_S", d.job_time_s),
            job_memory_mb=_env_float("TFLITE_LAB_JOB_MEMORY_MB", d.job_memory_mb),
            bench_wait_s=_env_float("TFLITE_LAB_BENCH_WAIT_S", d.bench_wait_s),
        )


def home_dir() -> Path:
    """The data directory: the run history (history.sqlite) and, beside it, the store.

    ``TFLITE_LAB_HOME``, else a per-user folder (``$XDG_DATA_HOME/tflite_lab``, ``~/.local/share/tflite_lab``).
    """
    root = os.environ.get("TFLITE_LAB_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "tflite_lab")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir() -> Path:
    """Content-addressed store of uploads, exports and conversions: ``TFLITE_LAB_CACHE``, else
    ``store/`` in the data directory (beside the run history)."""
    root = os.environ.get("TFLITE_LAB_CACHE")
    p = Path(root) if root else home_dir() / "store"
    p.mkdir(parents=True, exist_ok=True)
    return p
