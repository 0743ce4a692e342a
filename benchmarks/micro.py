"""The micro target (TFLite Micro on every sample, the arena search, vs LiteRT) against one int8
`convert` of the same model, timed in the same run: the bundled digits CNN and MobileNetV2 (alpha
0.35, 96x96), 64 samples, no latency timing. The micro step is the target's own wall time inside the
cell job (`targets.micro.target_s`); the baseline is a whole `convert --optimize int8` CLI process
from an empty cache. Target: micro step <= 0.5x the convert.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import ROOT, build_mobilenet, machine_line, run_checked, timed


def one(model: Path, samples: list[str], d: str, tag: str, repeats: int) -> None:
    common = [str(model), *samples, "--no-latency", "--no-history", "--optimize", "int8", "--json"]
    base, micro, arena = [], [], None
    for i in range(repeats):
        base.append(timed([sys.executable, "-m", "tflite_lab", "convert", *common],
                          env={"TFLITE_LAB_CACHE": f"{d}/{tag}-base{i}"}))
        _, out = run_checked([sys.executable, "-m", "tflite_lab", "convert", *common, "--target", "micro"],
                             env={"TFLITE_LAB_CACHE": f"{d}/{tag}-micro{i}"}, ok_codes=(0, 1))
        t = json.loads(out)["targets"]["micro"]
        micro.append(t["target_s"])
        arena = (t["arena_bytes"], (t.get("arena_search") or {}).get("probes"), t["verdict"])
    b, m = statistics.median(base), statistics.median(micro)
    print(f"{tag}: int8 convert {b:.1f} s (runs {', '.join(f'{x:.1f}' for x in base)}); micro step {m:.2f} s "
          f"(runs {', '.join(f'{x:.2f}' for x in micro)}); arena {arena[0]:,} bytes in {arena[1]} probes, {arena[2]}")
    print(f"{tag} ratio: {m / b:.2f}x (target <= 0.5x)")


def main(repeats: int = 2) -> None:
    print(machine_line())
    with tempfile.TemporaryDirectory() as d:
        one(ROOT / "sample_models" / "digits_cnn.keras", ["--samples", str(ROOT / "sample_models" / "digits_cnn.samples.npz"),
                                                          "--num-samples", "64"], d, "digits_cnn", repeats)
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        samples = Path(d) / "samples.npz"
        np.savez(samples, input_layer=np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32))
        one(model, ["--samples", str(samples)], d, "mobilenet_v2", repeats)


if __name__ == "__main__":
    main()
