"""The default `python -m tflite_lab convert` (latency included) against the tutorial's flow by hand.

Baseline, timed in the same run: a script that loads the model, converts with from_keras_model,
predicts 64 random samples with Keras and LiteRT and prints the max abs error. Both are whole
processes (TensorFlow import included); ours starts with an empty cache. Target: <= 1.1x.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from _common import build_mobilenet, timed

HAND = """
import sys, numpy as np, keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
model = keras.models.load_model(sys.argv[1])
tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
x = np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32)
ref = model.predict(x, verbose=0)
it = Interpreter(model_content=tflite)
runner = it.get_signature_runner()
key = list(it.get_signature_list()["serving_default"]["inputs"])[0]
out = next(iter(runner(**{key: x}).values()))
print(float(np.abs(ref - out).max()))
"""


def main(repeats: int = 2) -> None:
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        hand = Path(d) / "hand.py"
        hand.write_text(HAND)
        ours, base = [], []
        for i in range(repeats):
            base.append(timed([sys.executable, str(hand), str(model)]))
            ours.append(timed([sys.executable, "-m", "tflite_lab", "convert", str(model), "--json"],
                              env={"TFLITE_LAB_CACHE": f"{d}/cache{i}"}))
        o, b = statistics.median(ours), statistics.median(base)
        print(f"hand-written flow: {b:.1f} s (runs {', '.join(f'{x:.1f}' for x in base)})")
        print(f"tflite_lab convert: {o:.1f} s (runs {', '.join(f'{x:.1f}' for x in ours)})")
        print(f"ratio: {o / b:.2f}x (target <= 1.1x)")


if __name__ == "__main__":
    main()
