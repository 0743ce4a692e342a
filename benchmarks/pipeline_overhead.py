"""`python -m tflite_lab convert --route R` against the same conversion written by hand, per route.

Each route is timed against its own hand-written flow, a script a user would write from the
TensorFlow tutorial: load the Keras model, (export it to a SavedModel for the three routes that
convert one), convert with the route's API (``from_keras_model``, ``from_saved_model``,
``from_concrete_functions``, the ``tflite_convert`` program), predict 64 random samples with Keras
and LiteRT, print the max abs error. Both sides are whole processes (TensorFlow import included);
ours starts with an empty store each time and records its run history, as a user's first run does.
Neither side times latency (ours runs with ``--no-latency``: latency is its own, separately
benchmarked phase). Repetitions alternate which side goes first; the median of each is compared.
Every timed run must succeed: the hand flow's error must be finite and small, and ours must report
``ok`` with no failures. Target: <= 1.1x on every route.
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

HAND = r"""
import os, subprocess, sys, tempfile, numpy as np, keras, tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
route, path = sys.argv[1], sys.argv[2]
model = keras.models.load_model(path)
if route == "keras":
    tflite = tf.lite.TFLiteConverter.from_keras_model(model).convert()
else:
    export = tempfile.mkdtemp() + "/export"
    model.export(export, verbose=False)
    if route == "saved_model":
        tflite = tf.lite.TFLiteConverter.from_saved_model(export).convert()
    elif route == "concrete_function":
        loaded = tf.saved_model.load(export)
        fn = loaded.signatures["serving_default"]
        tflite = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded).convert()
    else:
        out = export + ".tflite"
        tool = os.path.join(os.path.dirname(sys.executable), "tflite_convert")
        subprocess.run([tool, "--saved_model_dir", export, "--output_file", out], check=True, capture_output=True)
        tflite = open(out, "rb").read()
x = np.random.default_rng(0).random((64, 96, 96, 3), dtype=np.float32)
ref = model.predict(x, verbose=0)
it = Interpreter(model_content=tflite)
if it.get_signature_list():
    runner = it.get_signature_runner()
    key = list(it.get_signature_list()["serving_default"]["inputs"])[0]
    got = next(iter(runner(**{key: x}).values()))
else:                                   # tflite_convert writes no signature: feed by index
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(d["index"], x)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
print(float(np.abs(ref - got).max()))
"""
ROUTES = ["keras", "saved_model", "concrete_function", "cli"]


def _hand(hand: Path, route: str, model: Path) -> float:
    dt, out = run_checked([sys.executable, str(hand), route, str(model)])
    err = float(out.strip().splitlines()[-1])
    if not (math.isfinite(err) and err < 1e-3):
        raise SystemExit(f"hand-written {route}: max abs error {err}, the conversion did not work")
    return dt


def _ours(route: str, model: Path, d: str, i: int) -> float:
    env = {"TFLITE_LAB_CACHE": f"{d}/cache-{route}-{i}", "TFLITE_LAB_HOME": f"{d}/home-{route}-{i}"}
    dt, out = run_checked([sys.executable, "-m", "tflite_lab", "convert", str(model), "--route", route,
                           "--no-latency", "--json"], env=env)
    rep = json.loads(out)
    if not rep["ok"] or rep.get("failures") or rep.get("cached"):
        raise SystemExit(f"tflite_lab {route}: not a fresh passing conversion: {rep.get('failures')}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--routes", nargs="+", default=ROUTES, choices=ROUTES)
    args = ap.parse_args()
    print(f"before: {machine_line()}")
    with tempfile.TemporaryDirectory() as d:
        model = build_mobilenet(Path(d) / "mobilenet.keras")
        hand = Path(d) / "hand.py"
        hand.write_text(HAND)
        times = {r: {"hand": [], "ours": []} for r in args.routes}
        for i in range(args.repeats):
            for route in args.routes:
                sides = [("hand", lambda: _hand(hand, route, model)), ("ours", lambda: _ours(route, model, d, i))]
                for side, run in (sides if i % 2 == 0 else sides[::-1]):   # alternate who goes first
                    times[route][side].append(run())
        print(f"after: {machine_line()}")
        print(f"{'route':<20}{'hand (s)':>10}{'ours (s)':>10}{'ratio':>8}  runs hand / ours")
        worst = 0.0
        for route, t in times.items():
            h, o = statistics.median(t["hand"]), statistics.median(t["ours"])
            worst = max(worst, o / h)
            runs = f"{', '.join(f'{x:.1f}' for x in t['hand'])} / {', '.join(f'{x:.1f}' for x in t['ours'])}"
            print(f"{route:<20}{h:>10.1f}{o:>10.1f}{o / h:>7.2f}x  {runs}")
        print(f"worst ratio: {worst:.2f}x (target <= 1.1x on every route)")


if __name__ == "__main__":
    main()
