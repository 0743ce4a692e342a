"""`debug` (layer table plus a 4-step keep-float sweep) against one int8 `convert`, on MobileNetV2
(alpha 0.35, 96x96) with 64 samples. Both are whole CLI processes from an empty cache, same samples,
no latency timing. Target: <= 2.5x.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT, build_mobilenet, timed


def main(repeats: int = 2) -> None:
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        samples = Path(d) / "samples.npz"
        np.savez(samples, input_layer=np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32))
        common = [str(model), "--samples", str(samples), "--no-latency", "--no-history"]
        ours, base = [], []
        for i in range(repeats):
            base.append(timed([sys.executable, "-m", "tflite_lab", "convert", *common, "--optimize", "int8", "--json"],
                              env={"TFLITE_LAB_CACHE": f"{d}/base{i}"}))
            ours.append(timed([sys.executable, "-m", "tflite_lab", "debug", *common, "--optimize", "int8",
                               "--sweep-steps", "4", "--sweep-all", "--json", "--out", f"{d}/out{i}"],
                              env={"TFLITE_LAB_CACHE": f"{d}/ours{i}"}))
        dbg = json.loads((Path(d) / "out0" / "debug.json").read_text())
        o, b = statistics.median(ours), statistics.median(base)
        print(f"layers: {len(dbg['layers'])}, sweep steps: {[s['k'] for s in dbg['sweep']]}, "
              f"timings (s): {', '.join(f'{k} {v:.1f}' for k, v in dbg['timings_s'].items())}")
        print(f"int8 convert: {b:.1f} s (runs {', '.join(f'{x:.1f}' for x in base)})")
        print(f"debug + 4-step sweep: {o:.1f} s (runs {', '.join(f'{x:.1f}' for x in ours)})")
        print(f"ratio: {o / b:.2f}x (target <= 2.5x)")


if __name__ == "__main__":
    main()
