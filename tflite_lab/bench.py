"""Stage 8: latency (warm-up, then median and p90 of batch-1 runs) and batch throughput."""
from __future__ import annotations

import time

import numpy as np

from .types import Latency


def measure(call, warmup: int = 3, runs: int = 30, budget_s: float = 3.0) -> tuple[list[float], int]:
    """Time ``call()`` after ``warmup`` untimed calls; stops early when ``budget_s`` is spent
    (after at least 5 runs) so a slow model cannot stall a page."""
    for _ in range(warmup):
        call()
    times = []
    start = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
        if i >= 4 and time.perf_counter() - start > budget_s:
            break
    return times, warmup


def summarize(times_ms: list[float], warmup: int, threads: int | None,
              throughput_sps: float | None = None, batch: int | None = None) -> Latency:
    a = np.asarray(times_ms)
    return Latency(float(np.median(a)), float(np.percentile(a, 90)), len(a), warmup, threads,
                   tuple(float(x) for x in a), throughput_sps, batch)


def benchmark_tflite(model, one: dict[str, np.ndarray], batch: dict[str, np.ndarray] | None,
                     threads: int | None, warmup: int = 3, runs: int = 30) -> Latency:
    """``model`` is a runtime.TFLiteModel; ``one`` one sample keyed by its input keys."""
    times, w = measure(lambda: model._invoke(one), warmup, runs)
    sps, bsize = _throughput(lambda: model._invoke(batch), batch) if batch and model.batch_size is None else (None, None)
    if sps is None:
        sps, bsize = 1e3 / float(np.median(times)), 1
    return summarize(times, w, threads, sps, bsize)


def benchmark_original(original, one: dict[str, np.ndarray], batch: dict[str, np.ndarray] | None,
                       warmup: int = 3, runs: int = 30) -> Latency:
    """``original`` is a models.OriginalModel, run as a TensorFlow graph (tf.function)."""
    times, w = measure(lambda: original.call(one), warmup, runs)
    sps, bsize = _throughput(lambda: original.call(batch), batch) if batch else (None, None)
    return summarize(times, w, None, sps, bsize)


def _throughput(call, batch, repeats: int = 3) -> tuple[float, int]:
    n = len(next(iter(batch.values())))
    call()
    best = min(_time(call) for _ in range(repeats))
    return n / best, n


def _time(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0
