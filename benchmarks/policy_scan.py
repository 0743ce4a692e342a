"""The safety checks timed alone against a default `convert` of MobileNetV2, in the same run.

Scan = what runs before TensorFlow touches an upload: for the .keras, the HDF5 link walk of its
weights and the config checks; for the same model as a SavedModel (its model.export() folder, as a
user would upload it), the protobuf parse and the allowlist walk. Convert = the whole default
`python -m tflite_lab convert` (latency included, empty cache). Target: scan <= 5 % of convert.

Measured 2026-12-01 on 2 cores shared with four other jobs (load average 11, so every figure is
inflated): keras checks 519 ms (0.46 %), SavedModel policy 179 ms (0.16 %), default convert 113 s;
(convert + scan) / convert = 1.005x. Not yet re-measured on a quiet machine.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, build_mobilenet, timed

SCAN = """
import sys, time, statistics, keras
sys.path.insert(0, sys.argv[3])
from tflite_lab.graph_policy import check_saved_model
from tflite_lab.sources import check_keras_file, source_from_path
keras.models.load_model(sys.argv[1]).export(sys.argv[2], verbose=False)
src = source_from_path(sys.argv[1])
def best(fn, n=20):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
print(best(lambda: check_keras_file(src)), best(lambda: check_saved_model(sys.argv[2], "mobilenet")))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        r = subprocess.run([sys.executable, "-c", SCAN, str(model), f"{d}/sm", str(ROOT)], capture_output=True,
                           text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFLITE_LAB_CACHE=f"{d}/scan"))
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
        keras_s, sm_s = map(float, r.stdout.split())
        convert_s = statistics.median(timed([sys.executable, "-m", "tflite_lab", "convert", str(model), "--json"],
                                            env={"TFLITE_LAB_CACHE": f"{d}/cache{i}"}) for i in range(2))
    print(f"keras checks      {keras_s * 1000:8.1f} ms  ({keras_s / convert_s:.2%} of convert)")
    print(f"savedmodel policy {sm_s * 1000:8.1f} ms  ({sm_s / convert_s:.2%} of convert)")
    print(f"default convert   {convert_s:8.2f} s")
    print(f"ratio (convert + scan) / convert: {(convert_s + max(keras_s, sm_s)) / convert_s:.3f}x (target <= 1.05x)")


if __name__ == "__main__":
    main()
