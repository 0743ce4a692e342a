"""Output names come from the model, identical in every process and run (issue 16, point 4).

KerasTensor names (``keras_tensor_170``) are a per-process counter: a Sequential model's output was
reported under a different name each time it was loaded, and ``--task`` keyed by that name broke.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("names")
    code = f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(6, activation="relu"),
                      keras.layers.Dense(3, activation="softmax", name="keyword")])
m.save(r"{d}/seq.keras")
i = keras.Input((4,), name="x")
h = keras.layers.Dense(5, activation="tanh")(i)
# dict outputs whose keys sort against their layer order and differ from the layer names
keras.Model(i, {{"zed": keras.layers.Dense(2, name="d1")(h), "cls": keras.layers.Dense(3, activation="softmax", name="d2")(h)}}).save(r"{d}/dict.keras")
shared = keras.layers.Dense(3, name="shared")(h)
keras.Model(i, [shared, shared]).save(r"{d}/twice.keras")
np.save(r"{d}/seq.npy", np.random.default_rng(0).uniform(0, 1, (16, 8)).astype("float32"))
np.save(r"{d}/x.npy", np.random.default_rng(1).uniform(-1, 1, (16, 4)).astype("float32"))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d


def _names_in_process(paths) -> list[list[tuple[str, str]]]:
    """Load every file twice in one fresh process: the KerasTensor counter moves between loads."""
    code = f"""
import json, keras
from tflite_lab.signature import keras_signature
out = []
for p in {[str(p) for p in paths]!r} * 2:
    out.append([(t.name, t.key) for t in keras_signature(keras.models.load_model(p, compile=False)).outputs])
print(json.dumps(out))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd()))
    return [[tuple(x) for x in row] for row in json.loads(r.stdout.strip().splitlines()[-1])]


def test_names_come_from_the_model_and_survive_reloads(models):
    paths = [models / "seq.keras", models / "dict.keras", models / "twice.keras"]
    first = _names_in_process(paths)
    again = _names_in_process(paths)
    assert first == again                      # across processes
    assert first[:3] == first[3:]              # across loads in one process
    seq, dct, twice = first[:3]
    assert seq == [("keyword", "output_0")]   # the output layer's name; the key Keras' export uses
    assert sorted(dct) == [("cls", "cls"), ("zed", "zed")]   # dict key = name = signature key
    assert twice == [("shared_0", "output_0"), ("shared_1", "output_1")]
    assert not any(n.startswith("keras_tensor") for row in first for n, _ in row)


@pytest.mark.slow
def test_reports_and_task_keys_use_the_stable_name(models, tmp_path):
    # --task keyed by the layer name is accepted, and the report names the output after it
    r = run_cli("convert", models / "seq.keras", "--samples", models / "seq.npy", "--no-latency", "--no-history",
                "--task", "keyword=regression", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [o["name"] for o in rep["outputs"]] == ["keyword"]
    assert rep["outputs"][0]["task"] == "regression"
    # dict outputs are paired with the .tflite by their keys: no shape-based guess, no note
    r = run_cli("convert", models / "dict.keras", "--samples", models / "x.npy", "--no-latency", "--no-history",
                "--route", "keras", "--json", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert sorted(o["name"] for o in rep["outputs"]) == ["cls", "zed"]
    assert rep["matching"] == []
    # and the numbers are the right pairing: recompute from the written .tflite and the Keras model
    from ai_edge_litert.interpreter import Interpreter
    import keras
    x = np.load(models / "x.npy")
    ref = keras.models.load_model(models / "dict.keras", compile=False)(x)
    it = Interpreter(model_path=str(tmp_path / "d" / "model.tflite"))
    got = it.get_signature_runner()(x=x)      # the signature runner resizes to the batch itself
    for o in rep["outputs"]:
        err = float(np.max(np.abs(np.asarray(ref[o["name"]]) - got[o["name"]])))
        assert o["max_abs_error"] == pytest.approx(err, rel=1e-5, abs=1e-9)
