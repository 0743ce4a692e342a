"""Five recipes of one model in one `matrix` call against five separate hand-written conversions.

Baseline, timed in the same run: the tutorial's flow run once per recipe, as a user without the
tool would (one script per recipe: load, from_keras_model with the recipe, convert, predict 64
samples with Keras and LiteRT, max abs error). Also printed: the same five in one process.
Ours exports once and converts in parallel worker processes, latency included. Target: <= 0.5x.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _common import build_mobilenet, timed

HAND = """
import sys, numpy as np, keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
model = keras.models.load_model(sys.argv[1])
x = np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32)
ref = model.predict(x, verbose=0)
for recipe in sys.argv[2:]:
    c = tf.lite.TFLiteConverter.from_keras_model(model)
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


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        hand = Path(d) / "hand.py"
        hand.write_text(HAND)
        separate = sum(timed([sys.executable, str(hand), str(model), r]) for r in RECIPES)
        together = timed([sys.executable, str(hand), str(model), *RECIPES])
        ours = timed([sys.executable, "-m", "tflite_lab", "matrix", str(model), "--routes", "saved_model",
                      "--optimizations", *RECIPES, "--json"], env={"TFLITE_LAB_CACHE": f"{d}/cache"})
        print(f"five separate hand-written conversions: {separate:.1f} s")
        print(f"the same five in one hand-written process: {together:.1f} s")
        print(f"tflite_lab matrix (5 recipes, 2 workers): {ours:.1f} s")
        print(f"ratio vs separate: {ours / separate:.2f}x (target <= 0.5x)")
        print(f"ratio vs one process: {ours / together:.2f}x")


if __name__ == "__main__":
    main()
