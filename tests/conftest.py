"""Shared fixtures: a private store per test session and tiny models saved in every format."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lab_helpers import ROOT, SAMPLES, run_cli, zip_folder  # noqa: F401


@pytest.hookimpl(tryfirst=True)         # before xdist reads the marks into the node ids
def pytest_collection_modifyitems(config, items):
    """Under xdist (``--dist loadgroup``), each file runs in one process, so its module fixtures
    (prepared models, worker pools) are built once; the browser tests share one server."""
    for item in items:
        path = item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group("e2e" if path.startswith("tests/e2e/") else path))


@pytest.fixture(scope="session", autouse=True)
def _private_store(tmp_path_factory):
    """Every test session gets its own content-addressed store (no cross-run cache hits)."""
    store = tmp_path_factory.mktemp("store")
    os.environ["TFLITE_LAB_CACHE"] = str(store)
    os.environ["TFLITE_LAB_HOME"] = str(tmp_path_factory.mktemp("home"))   # the run history, likewise private
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    yield store


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium under Playwright, one per test process: a second sync Playwright in the
    same process fails ("Sync API inside the asyncio loop"), so every test that drives a page shares it."""
    from playwright.sync_api import sync_playwright
    from tflite_lab.targets.browser import CHROMIUM_ARGS, chromium
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A small two-input/two-output Keras model saved as .keras, .h5 (Keras 3), .h5 (legacy
    tf.keras) and a zipped SavedModel; built fresh because committed binaries drift with TF."""
    d = tmp_path_factory.mktemp("tiny")
    code = f"""
import numpy as np, keras, tensorflow as tf
keras.utils.set_random_seed(0)
a = keras.Input((6,), name="a"); b = keras.Input((4, 4, 1), name="b")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))])
h = keras.layers.Dense(16, activation="relu")(h)
cls = keras.layers.Dense(5, activation="softmax", name="cls")(h)
reg = keras.layers.Dense(1, name="reg")(h)
m = keras.Model([a, b], [cls, reg])
m.save(r"{d}/multi.keras"); m.save(r"{d}/multi.h5")
m.export(r"{d}/multi_sm", verbose=False)
x = keras.Input((5,), name="x"); y = keras.layers.Dense(3, activation="softmax", name="probs")(keras.layers.Dense(8, activation="tanh")(x))
s = keras.Model(x, y); s.save(r"{d}/single.keras")
import tf_keras
lx = tf_keras.Input((5,), name="x"); ly = tf_keras.layers.Dense(3, activation="softmax")(tf_keras.layers.Dense(8)(lx))
tf_keras.Model(lx, ly).save(r"{d}/legacy.h5")
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    zip_folder(d / "multi_sm", d / "multi_sm.zip")
    return d


@pytest.fixture(scope="session")
def sensitive_model(tmp_path_factory):
    """A tiny MLP with one layer int8 cannot take: its weight matrix holds 400.0 on a row fed by a
    unit that is always 0 (dead ReLU), so per-tensor int8 weights round every real weight to 0,
    while the float model never sees the outlier. Labels = the float model's classes."""
    d = tmp_path_factory.mktemp("sensitive")
    code = f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x_in = keras.Input((8,), name="x")
mix = keras.layers.Dense(16, activation="relu", name="mix")
sens = keras.layers.Dense(16, activation="relu", name="sensitive")
head = keras.layers.Dense(4, activation="softmax", name="probs")
m = keras.Model(x_in, head(sens(mix(x_in))))
w1 = rng.normal(0, 0.6, (8, 16)).astype("float32"); b1 = np.full(16, 0.1, "float32")
w1[:, 15] = 0; b1[15] = -1.0
mix.set_weights([w1, b1])
w2 = rng.normal(0, 0.4, (16, 16)).astype("float32"); w2[15, :] = 400.0
sens.set_weights([w2, np.zeros(16, "float32")])
head.set_weights([rng.normal(0, 1.0, (16, 4)).astype("float32"), np.zeros(4, "float32")])
x = rng.uniform(0, 1, (64, 8)).astype("float32")
m.save(r"{d}/sensitive.keras")
np.savez(r"{d}/sensitive.samples.npz", x=x, labels=m.predict(x, verbose=0).argmax(1))
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d
