"""Two zoos through `zoo`, on `local` against `ray`, same machine: the six sample models x every
supported cell, and three small models made here (a regressor, a CNN, a two-input model) x three
routes x three recipes.

Baseline, timed in the same run: the local worker pool (today's default) on the same zoo. Each run
gets a fresh store, so every cell is converted, run and benchmarked (latency on). Ray is a local
instance with the same CPU count as the local pool's workers (--workers). Target: ray's wall time
minus its instance start-up (``executor_info.startup_s``, reported on its own, target <= 10 s) <=
1.3x local. Prints wall time, cells and cells per minute for each, where the jobs' time went
(``executor_info.jobs``: waiting for a process, running, after the result; worker processes), the
ratios, and the per-cell cost the README's projection is computed from.

    python benchmarks/zoo.py [--workers 2] [--models DIR] [--only samples|small] [--repeats N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SMALL_CELLS = ["--routes", "keras", "saved_model", "concrete_function", "--optimizations", "none", "dynamic", "int8"]


def small_models(folder: Path) -> str:
    """Three small Keras models of different kinds, saved as .keras files (random samples)."""
    import keras
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x = keras.Input((8,))
    regressor = keras.Model(x, keras.layers.Dense(1)(keras.layers.Dense(16, activation="relu")(x)))
    img = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu")(img)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D()(h))
    cnn = keras.Model(img, keras.layers.Dense(4, activation="softmax")(h))
    a, b = keras.Input((6,), name="b_second"), keras.Input((4,), name="a_first")
    two = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Concatenate()([a, b])))
    for name, m in (("regressor", regressor), ("cnn", cnn), ("two_inputs", two)):
        m.save(folder / f"{name}.keras")
    return str(folder)


def run_zoo(executor: str, models: str, workers: int, store: Path, extra=()) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", TFLITE_LAB_CACHE=str(store))
    cmd = [sys.executable, "-m", "tflite_lab", "zoo", models, "--executor", executor, "--workers", str(workers),
           "--json", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"zoo on {executor} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return dt, json.loads(r.stdout)


def counts(result: dict) -> tuple[int, int, int]:
    """(cells run, cells refused up front, cells failed while running)."""
    cells = [c for m in result["models"] for c in m["cells"]]
    refused = sum(c.get("error_kind") == "UnsupportedCombination" for c in cells)
    failed = sum(bool(c.get("error")) and c.get("error_kind") != "UnsupportedCombination" for c in cells)
    return len(cells) - refused, refused, failed


def compare(title: str, models: str, workers: int, tmp: Path, extra=(), repeats: int = 1) -> float:
    """Each repetition runs both executors, alternating which goes first; medians are compared."""
    print(f"== {title}", flush=True)
    runs: dict[str, list] = {"local": [], "ray": []}
    for i in range(repeats):
        for executor in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
            load = os.getloadavg()[0]
            dt, result = run_zoo(executor, models, workers, tmp / f"{title}-{executor}-{i}", extra)
            ran, refused, failed = counts(result)
            info = result["executor_info"]
            runs[executor].append((dt, ran, info, result))
            jobs = info.get("jobs", {})
            print(f"{executor:<6} {result['executor']}: {dt:7.1f} s for {ran} cells ({failed} failed, {refused} refused "
                  f"up front) = {ran / dt * 60:5.1f} cells/min; load before {load:.2f}; start-up {info['startup_s']:.1f} s; "
                  f"{jobs.get('count')} jobs: waiting {jobs.get('wait_s')} s, running {jobs.get('run_s')} s, "
                  f"after {jobs.get('after_s')} s, {jobs.get('worker_processes')} worker processes", flush=True)
    (_, lran, _, lres), (_, rran, _, rres) = runs["local"][-1], runs["ray"][-1]
    assert lran == rran, "both executors must run the same cells"
    same = all(ca.get("outputs") == cb.get("outputs")
               for ma, mb in zip(lres["models"], rres["models"]) for ca, cb in zip(ma["cells"], mb["cells"]))
    lt = statistics.median(r[0] for r in runs["local"])
    rt = statistics.median(r[0] for r in runs["ray"])
    startup = statistics.median(r[2]["startup_s"] for r in runs["ray"])
    net = statistics.median(r[0] - r[2]["startup_s"] for r in runs["ray"])
    print(f"medians of {repeats}: local {lt:.1f} s, ray {rt:.1f} s; ratio ray/local: {rt / lt:.2f}x with start-up; "
          f"(ray - startup_s)/local: {net / lt:.2f}x (target <= 1.3x); startup_s {startup:.1f} s (target <= 10 s); "
          f"metrics identical: {same}", flush=True)
    return rt * workers / rran


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default=str(ROOT / "sample_models"))
    ap.add_argument("--only", choices=("samples", "small"))
    ap.add_argument("--repeats", type=int, default=1, help="runs per executor, alternating which goes first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "small":
            per_cell = compare("six samples", args.models, args.workers, Path(tmp), repeats=args.repeats)
            print(f"per-cell cost on ray (prepare, start-up and latency included): {per_cell:.1f} CPU-s")
            for nodes in (1, 4, 16):
                print(f"projection: 100 models x 18 cells on {nodes:>2} node(s) of {args.workers} CPUs: "
                      f"{100 * 18 * per_cell / (nodes * args.workers) / 3600:5.2f} h")
        if args.only != "samples":
            compare("three small models x 3 routes x 3 recipes", small_models(Path(tmp) / "small"), args.workers,
                    Path(tmp), SMALL_CELLS, args.repeats)


if __name__ == "__main__":
    main()
