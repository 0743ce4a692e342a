"""The six sample models x every supported cell through `zoo`, on `local` against `ray`, same machine.

Baseline, timed in the same run: the local worker pool (today's default) on the same zoo. Each run
gets a fresh store, so every cell is converted, run and benchmarked (latency on). Ray is a local
instance with the same CPU count as the local pool's workers (--workers). Target: ray <= 1.3x local.
Prints wall time, cells and cells per minute for each, the ratio, and the per-cell cost the README's
projection is computed from.

    python benchmarks/zoo.py [--workers 2] [--models DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_zoo(executor: str, models: str, workers: int, store: Path) -> tuple[float, dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", TFLITE_LAB_CACHE=str(store))
    cmd = [sys.executable, "-m", "tflite_lab", "zoo", models, "--executor", executor, "--workers", str(workers),
           "--json"]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default=str(ROOT / "sample_models"))
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("local", "ray"):
            dt, result = run_zoo(executor, args.models, args.workers, Path(tmp) / executor)
            ran, refused, failed = counts(result)
            rows[executor] = (dt, ran, refused, failed, result)
            print(f"{executor:<6} {result['executor']}: {dt:7.1f} s for {ran} cells ({failed} failed, {refused} refused "
                  f"up front) = {ran / dt * 60:5.1f} cells/min", flush=True)
    lt, lran = rows["local"][0], rows["local"][1]
    rt, rran = rows["ray"][0], rows["ray"][1]
    assert lran == rran, "both executors must run the same cells"
    same = all(ca.get("outputs") == cb.get("outputs")
               for ma, mb in zip(rows["local"][4]["models"], rows["ray"][4]["models"])
               for ca, cb in zip(ma["cells"], mb["cells"]))
    print(f"ratio ray/local: {rt / lt:.2f}x (target <= 1.3x); metrics identical: {same}")
    for name, t, n in (("local", lt, lran), ("ray", rt, rran)):
        print(f"per-cell cost on {name} (prepare, start-up and latency included): {t * args.workers / n:.1f} CPU-s "
              f"= {t:.1f} s x {args.workers} CPUs / {n} cells")
    per_cell = rt * args.workers / rran       # a cluster runs the Ray path
    for nodes in (1, 4, 16):
        print(f"projection: 100 models x 18 cells on {nodes:>2} node(s) of {args.workers} CPUs: "
              f"{100 * 18 * per_cell / (nodes * args.workers) / 3600:5.2f} h")


if __name__ == "__main__":
    main()
