"""Five recipes of one model in one `matrix` call against the same five written by hand in one process.

The fair baseline, timed in the same run: one script, one TensorFlow import, one model load and one
SavedModel export, then ``from_saved_model`` with each recipe (none, dynamic, float16, int8 and
16x8 calibrated on the 64 samples), each converted model run on 64 random samples with LiteRT and
compared with Keras (max abs error). Ours: ``matrix --routes saved_model`` over the same five
recipes, an empty store, two workers, ``--no-latency`` (the hand script times no latency either).
Ours calibrates once: int8 and 16x8 quantize one stored calibrate-only run (the hand script, like
TensorFlow's convert(), calibrates for each, 16x8 twice), so exactly one of the two cells must
have calibrated and the other reused it. Repetitions alternate which side goes first; medians are
compared. Every timed cell must have converted and run: the hand script's errors must be finite,
and every cell of ours must have a verdict (pass or a tolerance fail), no error. Target: <= 0.5x.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

from _common import build_mobilenet, machine_line, run_checked

HAND = """
import sys, tempfile, numpy as np, keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
model = keras.models.load_model(sys.argv[1])
export = tempfile.mkdtemp() + "/export"
model.export(export, verbose=False)
x = np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32)
ref = model.predict(x, verbose=0)
for recipe in sys.argv[2:]:
    c = tf.lite.TFLiteConverter.from_saved_model(export)
    if recipe != "none":
        c.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe == "float16":
        c.target_spec.supported_types = [tf.float16]
    if recipe in ("int8", "int16x8"):
        c.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if recipe == "int8" else
                                       tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    tflite = c.convert()
    it = Interpreter(model_content=tflite)
    runner = it.get_signature_runner()
    key = list(it.get_signature_list()["serving_default"]["inputs"])[0]
    out = next(iter(runner(**{key: x}).values()))
    print(recipe, len(tflite), float(np.abs(ref - out).max()))
"""
RECIPES = ["none", "dynamic", "float16", "int8", "int16x8"]
REUSED = "# calibrated: the stored calibration"      # first line of a cell quantized from another's calibration


def _hand(hand: Path, model: Path) -> float:
    dt, out = run_checked([sys.executable, str(hand), str(model), *RECIPES])
    rows = [line.split() for line in out.strip().splitlines() if line.split()[:1] and line.split()[0] in RECIPES]
    errors = {r[0]: float(r[2]) for r in rows}
    if sorted(errors) != sorted(RECIPES) or not all(math.isfinite(e) for e in errors.values()):
        raise SystemExit(f"hand-written recipes did not all convert and run: {errors}")
    return dt


def _ours(model: Path, d: str, i: int) -> tuple[float, dict, dict]:
    env = {"TFLITE_LAB_CACHE": f"{d}/cache{i}", "TFLITE_LAB_HOME": f"{d}/home{i}"}
    # exit 1 is a tolerance verdict (a result); anything else stops the benchmark
    dt, out = run_checked([sys.executable, "-m", "tflite_lab", "matrix", str(model), "--routes", "saved_model",
                           "--optimizations", *RECIPES, "--no-latency", "--json"], env=env, ok_codes=(0, 1))
    cells = json.loads(out)
    verdicts = {c["optimization"]: c.get("verdict") for c in cells}
    bad = {c["optimization"]: c.get("error") for c in cells if c.get("error") or c.get("cached")}
    if bad or sorted(verdicts) != sorted(RECIPES):
        raise SystemExit(f"tflite_lab matrix: cells did not all convert and run fresh: {bad or verdicts}")
    calibration = {c["optimization"]: "reused" if (c["calls"] or [""])[0].startswith(REUSED) else "calibrated"
                   for c in cells if c["optimization"] in ("int8", "int16x8")}
    if sorted(calibration.values()) != ["calibrated", "reused"]:
        raise SystemExit(f"tflite_lab matrix: int8 and int16x8 did not share one calibration: {calibration}")
    convert_s = {c["optimization"]: c["timings_s"]["convert"] for c in cells}
    return dt, verdicts, {"calibration": calibration, "convert_s": convert_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"before: {machine_line()}")
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        hand = Path(d) / "hand.py"
        hand.write_text(HAND)
        base, ours, verdicts, cells = [], [], {}, {}
        for i in range(args.repeats):
            for side in (("hand", "ours") if i % 2 == 0 else ("ours", "hand")):   # alternate who goes first
                if side == "hand":
                    base.append(_hand(hand, model))
                else:
                    dt, verdicts, cells = _ours(model, d, i)
                    ours.append(dt)
        print(f"after: {machine_line()}")
        b, o = statistics.median(base), statistics.median(ours)
        print(f"the five recipes in one hand-written process: {b:.1f} s (runs {', '.join(f'{x:.1f}' for x in base)})")
        print(f"tflite_lab matrix (5 recipes, 2 workers): {o:.1f} s (runs {', '.join(f'{x:.1f}' for x in ours)})")
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in verdicts.items()))
        print("calibration (last run): " + ", ".join(f"{k} {v}" for k, v in cells["calibration"].items())
              + "; convert s: " + ", ".join(f"{k} {v:.1f}" for k, v in cells["convert_s"].items()))
        print(f"ratio: {o / b:.2f}x (target <= 0.5x)")


if __name__ == "__main__":
    main()
