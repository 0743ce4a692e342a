"""A repeat is instant: the same `convert` (MobileNetV2 0.35, 96², int8, latency on) cold — a fresh
store, so prepared model, conversion and timings are all computed — against the same command again
with everything in the store. Alternating rounds, each cold run in a store of its own.

    python benchmarks/repeat.py [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import build_mobilenet, machine_line, run_checked  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model = build_mobilenet(d / "mobilenet.keras")
        cmd = [sys.executable, "-m", "tflite_lab", "convert", str(model), "--optimize", "int8", "--num-samples", "32",
               "--json", "--no-history"]
        cold, warm = [], []
        for i in range(args.rounds):
            env = {"TFLITE_LAB_CACHE": str(d / f"store{i}"), "TFLITE_LAB_HOME": str(d / "home")}
            t, out = run_checked(cmd, env, ok_codes=(0, 1))
            assert not json.loads(out)["cached"]
            cold.append(t)
            t, out = run_checked(cmd, env, ok_codes=(0, 1))
            assert json.loads(out)["cached"], "the repeat was not served from the store"
            warm.append(t)
            print(f"round {i + 1}: cold {cold[-1]:.2f} s, repeat {warm[-1]:.2f} s", flush=True)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"convert MobileNetV2 int8, cold (empty store): median {c:.2f} s over {len(cold)}")
    print(f"the same convert again (store-served):    median {w:.2f} s")
    print(f"ratio repeat/cold: {w / c:.3f}x (target <= 0.05x); {machine_line()}")


if __name__ == "__main__":
    main()
