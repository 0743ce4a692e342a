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


def benchmark_tflite(model, one: dict[str, np.ndarray], threads: int | None, warmup: int = 3, runs: int = 30,
                     throughput: tuple[float, int] | None = None) -> Latency:
    """``model`` is a runtime.TFLiteModel; ``one`` one sample keyed by its input keys.

    ``throughput`` (samples/s, batch) comes from timing the comparison run itself, so measuring
    it costs nothing extra; without it, throughput is 1 / median batch-1 latency.
    """
    times, w = measure(lambda: model._invoke(one), warmup, runs)
    sps, bsize = throughput or (1e3 / float(np.median(times)), 1)
    return summarize(times, w, threads, sps, bsize)


def benchmark_original(original, one: dict[str, np.ndarray], warmup: int = 3, runs: int = 30,
                       throughput: tuple[float, int] | None = None) -> Latency:
    """``original`` is a models.OriginalModel, run as a TensorFlow graph (tf.function)."""
    times, w = measure(lambda: original.call(one), warmup, runs)
    sps, bsize = throughput or (1e3 / float(np.median(times)), 1)
    return summarize(times, w, None, sps, bsize)
