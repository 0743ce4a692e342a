"""One calibration per model: int8 (float and int8 I/O) and int16x8 quantize one stored calibrate-only
run, and give the very bytes of a separate TFLiteConverter conversion, on every Python route."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from lab_helpers import ROOT, build_models

pytestmark = pytest.mark.slow

BUILD = """
import keras
keras.utils.set_random_seed(0)
x = keras.Input((10, 10, 2), name="img")
h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(x)
h = keras.layers.BatchNormalization(name="bn")(h)
h = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(h)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(24, activation="relu", name="fc")(h)
keras.Model(x, keras.layers.Dense(4, activation="softmax", name="probs")(h)).save(r"{d}/cnn.keras")
a = keras.Input((6,), name="a"); b = keras.Input((4, 4, 1), name="b")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))])
h = keras.layers.Dense(16, activation="relu")(h)
keras.Model([b, a], [keras.layers.Dense(5, activation="softmax", name="cls")(h),
                     keras.layers.Dense(1, name="reg")(h)]).save(r"{d}/multi.keras")
"""
MODELS = ("cnn", "multi")
ROUTES = ("keras", "saved_model", "concrete_function")
RECIPES = (("int8", False), ("int16x8", False), ("int8", True))      # the first calibrates, the others reuse
N_SAMPLES = 8
IN_ANOTHER_PROCESS = ("cnn", "saved_model", "int8", True)           # left for a fresh process to convert


def _cell(model, route, opt, int8_io):
    return f"{model}-{route}-{opt}" + ("-int8io" if int8_io else "")


@pytest.fixture(scope="module")
def counted():
    """Every sample the representative dataset yields to a converter, counted (this process)."""
    from tflite_lab import samples
    original, count = samples.representative_dataset, {"n": 0}

    def counting(*args, **kwargs):
        gen = original(*args, **kwargs)

        def wrapped():
            for sample in gen():
                count["n"] += 1
                yield sample
        return wrapped
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(samples, "representative_dataset", counting)
        yield count


@pytest.fixture(scope="module")
def runs(tmp_path_factory, counted):
    """Each model prepared, then each cell converted by the pipeline (one store), with how many
    samples it calibrated on; and each cell converted on its own by TFLiteConverter.convert()."""
    from tflite_lab.config import Limits
    from tflite_lab.models import open_cached
    from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, run_cell, source_json
    from tflite_lab.routes import ConversionRequest, convert
    from tflite_lab.samples import representative_dataset
    from tflite_lab.sources import source_from_path
    from tflite_lab.store import load_npz
    from tflite_lab.types import Optimization, Route
    d = build_models(BUILD, tmp_path_factory.mktemp("calibration"))
    store = str(d / "store")
    off = BenchSpec(enabled=False)
    out = {"store": store, "prepared": {}, "cells": {}, "separate": {}}
    for m in MODELS:
        src = source_from_path(d / f"{m}.keras")
        p = prepare(source_json(src), SampleSpec(count=N_SAMPLES), off, store_root=store)
        out["prepared"][m] = p
        om = open_cached(src, Limits.from_env())
        keys = {t.name: t.key for t in om.signature.inputs}
        for route in ROUTES:
            for opt, io in RECIPES:
                cell = (m, route, opt, io)
                # TensorFlow's own conversion of this cell alone: a fresh converter, calibrated for it
                req = ConversionRequest(Route(route), Optimization(opt), io)
                rep = representative_dataset(load_npz(p["samples_path"]), keys)
                sep = convert(req, om, None if route == "keras" else p["export_dir"], p["fixed_batch"], rep)
                assert sep.calls[-1] == "tflite_model = converter.convert()"
                out["separate"][cell] = sep.tflite
                if cell == IN_ANOTHER_PROCESS:
                    continue
                counted["n"] = 0
                report = run_cell(p, route, opt, int8_io=io, bench=off, store_root=store)
                out["cells"][cell] = {"tflite": open(report["tflite_path"], "rb").read(), "calibrated_on": counted["n"],
                                      "calls": report["calls"], "report": report}
    return out


CELLS = [(m, r, o, io) for m in MODELS for r in ROUTES for o, io in RECIPES if (m, r, o, io) != IN_ANOTHER_PROCESS]


@pytest.mark.parametrize("cell", CELLS, ids=[_cell(*c) for c in CELLS])
def test_same_bytes_as_a_separate_conversion(runs, cell):
    ours, theirs = runs["cells"][cell]["tflite"], runs["separate"][cell]
    assert ours == theirs, f"{_cell(*cell)}: {len(ours)} bytes vs {len(theirs)} from TFLiteConverter.convert()"
    report = runs["cells"][cell]["report"]
    assert report["metrics"] and all(np.isfinite(m["max_abs_error"]) for m in report["metrics"])


def test_one_calibration_per_model_and_route_the_other_recipes_never_feed_the_samples(runs):
    for m in MODELS:
        for route in ROUTES:
            first, *others = [runs["cells"][(m, route, o, io)] for o, io in RECIPES if (m, route, o, io) in runs["cells"]]
            assert first["calibrated_on"] == N_SAMPLES, (m, route)
            assert "calibrated = converter.convert()" in first["calls"]
            for c in others:
                assert c["calibrated_on"] == 0, (m, route, "calibrated again")
                assert c["calls"][0].startswith("# calibrated: the stored calibration"), c["calls"][0]
                assert not any(line == "calibrated = converter.convert()" for line in c["calls"])
    entries = sorted((runs["store"] + "/calibration/" + f) for f in os.listdir(runs["store"] + "/calibration"))
    metas = [json.load(open(f)) for f in entries if f.endswith(".json")]
    assert len(metas) == len(MODELS) * len(ROUTES), "one calibration per model and route"
    assert not any(meta["unusable"] for meta in metas)
    assert len([f for f in entries if f.endswith(".tflite")]) == len(metas)


def test_another_process_quantizes_the_stored_calibration(runs):
    """The matrix runs cells in worker processes: a fresh one finds the calibration in the store."""
    m, route, opt, io = IN_ANOTHER_PROCESS
    code = f"""
import json, sys
from tflite_lab import samples
fed = []
original = samples.representative_dataset
samples.representative_dataset = lambda *a, **k: (fed.append(1), original(*a, **k))[1]
from tflite_lab.pipeline import BenchSpec, run_cell
from tflite_lab.store import CODE_FINGERPRINT
p = json.loads(sys.stdin.read())
r = run_cell(p, {route!r}, {opt!r}, int8_io={io}, bench=BenchSpec(enabled=False), store_root={runs["store"]!r})
print(json.dumps({{"path": r["tflite_path"], "calls": r["calls"], "datasets_made": len(fed), "code": CODE_FINGERPRINT}}))
"""
    from tflite_lab.store import CODE_FINGERPRINT
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(runs["prepared"][m]), capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"),
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["code"] != CODE_FINGERPRINT:     # every store key names the code that made it
        pytest.skip("tflite_lab's source changed while this test ran: the fresh process uses other store keys")
    assert got["datasets_made"] == 0, "the fresh process made a representative dataset: it calibrated again"
    assert got["calls"][0].startswith("# calibrated: the stored calibration")
    assert open(got["path"], "rb").read() == runs["separate"][IN_ANOTHER_PROCESS]


def test_a_second_job_waits_for_the_calibration_being_made_instead_of_calibrating_too(runs, tmp_path, counted):
    """While another job holds the calibration's lock (it is calibrating), this one says so and
    waits; once the calibration is in the store it quantizes that, feeding no sample."""
    import fcntl

    from tflite_lab.pipeline import BenchSpec, _calibration_key, run_cell
    from tflite_lab.types import Route
    m, route, opt, io = "multi", "concrete_function", "int16x8", False
    p, store = runs["prepared"][m], tmp_path / "store"
    key = _calibration_key(p, Route(route))
    (store / "calibration").mkdir(parents=True)
    steps, waiting, result = [], threading.Event(), {}

    def progress(step):
        steps.append(step)
        if step == "wait for calibration":
            waiting.set()

    def job():
        try:
            result["report"] = run_cell(p, route, opt, int8_io=io, bench=BenchSpec(enabled=False),
                                        store_root=str(store), progress=progress)
        except Exception as e:        # surfaced by the assertions below
            result["error"] = e
    counted["n"] = 0
    with open(store / "calibration" / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # "the other job", calibrating
        t = threading.Thread(target=job)
        t.start()
        assert waiting.wait(60), f"the job did not wait for the lock: {steps} {result}"
        for suffix in (".tflite", ".json"):       # the other job's calibration lands, then its lock is released
            shutil.copy(f"{runs['store']}/calibration/{key}{suffix}", store / "calibration" / f"{key}{suffix}")
    t.join(120)
    assert "error" not in result, result.get("error")
    assert steps[:2] == ["wait for calibration", "convert"], steps
    assert counted["n"] == 0
    rep = result["report"]
    assert open(rep["tflite_path"], "rb").read() == runs["separate"][(m, route, opt, io)]
