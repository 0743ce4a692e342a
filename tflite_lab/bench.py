"""Stage 8: latency (warm-up, then median and p90 of batch-1 runs) and batch throughput, both sides
with the same threads, timed alone (``time_all``; the ``bench`` worker job is ``bench_phase``).

Alone on the whole server, not only within one run: ``bench_phase`` holds the bench gate of
``activity.py`` (one bench at a time, no job of any session starts meanwhile, running ones are
waited for up to ``Limits.bench_wait_s``) and its ``conditions`` say which jobs still ran."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .types import Latency


@dataclass(frozen=True)
class BenchSpec:
    """How latency is measured: on or off, threads (None: every core), warm-up and timed runs."""
    enabled: bool = True
    threads: int | None = None
    warmup: int = 3
    runs: int = 30


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


# ---- the bench phase: every timing of one model, alone, after its conversions ----

WHAT_ORIGINAL = ("TensorFlow: a concrete function traced for batch 1 (tf.function of the model in inference "
                 "mode, or the SavedModel's serving signature), inputs as prebuilt tensors, outputs copied to "
                 "numpy; no Keras per-call Python dispatch")
WHAT_TFLITE = "LiteRT: one invoke of the interpreter on batch 1, inputs copied in and outputs copied out"
WHAT_THROUGHPUT = ("throughput: samples/s of a warm pass over the first (up to) 64 samples as one batch (a "
                   "fixed-batch model one batch at a time), the same pass for both sides, median of up to 3 passes")


def _pass_rate(run_all, n: int, budget_s: float = 2.0) -> float:
    run_all()                                     # warm: the batch shape's first run allocates
    times, start = [], time.perf_counter()
    while len(times) < 3 and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run_all()
        times.append(time.perf_counter() - t0)
    return n / max(float(np.median(times)), 1e-9)


def time_all(prepared: dict, tflite_paths: dict[str, str], bench, limits=None, progress=None) -> dict:
    """Time the original and each .tflite of one prepared model, one after the other, all with
    ``threads`` (TensorFlow intra/inter-op and LiteRT ``num_threads``). Runs in a worker.

    Returns ``{"original": Latency dict | None, "tflite": {key: Latency dict}, "conditions": {...}}``;
    ``conditions`` says what was timed, with how many threads and CPUs, and when (epoch seconds).
    """
    from dataclasses import asdict
    from .models import open_cached
    from .store import load_npz
    from .types import source_from_json
    from .runtime import TFLiteModel, cpu_count, tf_threads
    from .types import Signature, SourceFormat
    threads = bench.threads or default_threads()
    intra, inter = tf_threads()
    started = time.time()
    from .config import Limits
    limits = limits or Limits.from_env()
    samples = load_npz(prepared["samples_path"])
    n = min(prepared["num_samples"], 64)
    samples = {k: v[:n] for k, v in samples.items()}          # one throughput batch
    original = None
    src = source_from_json(prepared["source"])
    if src.format is not SourceFormat.TFLITE:
        if progress:
            progress("benchmark original")
        om = open_cached(src, limits)
        call = om.timed_call({k: v[:1] for k, v in samples.items()})
        times, w = measure(call, bench.warmup, bench.runs)
        rate = _pass_rate(lambda: om.predict(samples), n)
        original = asdict(summarize(times, w, intra, rate, min(n, om.batch or 64)))
    sig = Signature.from_dict(prepared["signature"])
    out = {}
    for key, path in tflite_paths.items():
        if progress:
            progress(f"benchmark {key}")
        model = TFLiteModel(open(path, "rb").read(), threads)
        in_map, out_map = model.match(sig)
        one = {in_map[k]: v[:1] for k, v in samples.items()}
        times, w = measure(lambda: model._invoke(one), bench.warmup, bench.runs)
        rate = _pass_rate(lambda: model.predict(samples, in_map, out_map), n)
        out[key] = asdict(summarize(times, w, threads, rate, min(n, model.batch_size or 64)))
    conditions = {
        "threads": threads, "tf_intra_op_threads": intra, "tf_inter_op_threads": inter,
        "litert_num_threads": threads, "cpu_count": cpu_count(), "runs": bench.runs, "warmup": bench.warmup,
        "batch": 1, "original": WHAT_ORIGINAL, "tflite": WHAT_TFLITE, "throughput": WHAT_THROUGHPUT,
        "schedule": "timed in a bench phase of its own, after the conversions, one model at a time, one bench "
                    "at a time on this server",
        "phase_start": started, "phase_end": time.time(),
    }
    return {"original": original, "tflite": out, "conditions": conditions}


def default_threads() -> int:
    """Threads for both sides unless asked otherwise: the worker's setting, else every core."""
    import os
    from .runtime import cpu_count
    return int(os.environ.get("TFLITE_LAB_THREADS") or cpu_count())


def bench_phase(prepared: dict, tflite_paths: dict[str, str], bench, limits=None, progress=None) -> dict:
    """The ``bench`` worker job (also called inside a ``cell`` job when it times its own result).

    Holds the server's bench gate while timing (``activity.bench_gate``): the ``conditions`` get
    ``alone`` (bool), ``concurrent`` (the other jobs that ran meanwhile), ``waited_s`` and
    ``wait_limit_s``. TensorFlow's thread pools are fixed once it has run anything, so when this
    worker's differ from the threads asked for, the timing runs in a fresh process."""
    from .activity import bench_gate
    from .config import Limits
    limits = limits or Limits.from_env()
    with bench_gate(limits.bench_wait_s, progress) as gate:
        timed = _time_here_or_fresh(prepared, tflite_paths, bench, limits, progress)
    timed["conditions"].update(gate)
    return timed


def _time_here_or_fresh(prepared: dict, tflite_paths: dict[str, str], bench, limits, progress) -> dict:
    from .runtime import set_tf_threads
    threads = bench.threads or default_threads()
    if set_tf_threads(threads):
        return time_all(prepared, tflite_paths, bench, limits, progress)
    import json
    import os
    import subprocess
    import sys
    from dataclasses import asdict
    from .errors import WorkerError
    if progress:
        progress(f"benchmark ({threads} threads, fresh process)")
    arg = json.dumps({"prepared": prepared, "paths": tflite_paths, "bench": asdict(bench)})
    p = subprocess.run([sys.executable, "-m", "tflite_lab.bench"], input=arg, capture_output=True, text=True,
                       env=dict(os.environ, TFLITE_LAB_THREADS=str(threads)))
    if p.returncode != 0 or not p.stdout.strip():
        raise WorkerError(f"The benchmark at {threads} threads failed in its own process.", detail=p.stderr[-4000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    import json
    import sys
    from .runtime import set_tf_threads
    args = json.loads(sys.stdin.read())
    spec = BenchSpec(**args["bench"])
    set_tf_threads(spec.threads or default_threads())
    print(json.dumps(time_all(args["prepared"], args["paths"], spec)))
