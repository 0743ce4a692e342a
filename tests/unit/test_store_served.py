"""A repeat is instant: when the store holds every answer a convert needs (same model bytes, samples,
cell, latency settings and code), the CLI answers from it without a worker or TensorFlow, says so,
and judges the stored report with this request's tolerances."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lab_helpers import ROOT, SAMPLES

pytestmark = pytest.mark.slow

# The CLI as a user runs it, reporting on stderr whether TensorFlow got imported in its process.
PROBE = """
import runpy, sys
sys.argv = ["tflite_lab", *sys.argv[1:]]
try:
    runpy.run_module("tflite_lab", run_name="__main__")
finally:
    print("TF_IMPORTED=" + str("tensorflow" in sys.modules), file=sys.stderr)
"""


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))      # TFLITE_LAB_CACHE: this test's own store (fixture below)
    p = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=600)
    return p, "TF_IMPORTED=True" in p.stderr


def _workers_started() -> int:
    logs = os.path.join(os.environ["TFLITE_LAB_CACHE"], "logs")
    return len(os.listdir(logs)) if os.path.isdir(logs) else 0


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    """A store of this test's own: the session's store may already hold this cell from another file's test."""
    monkeypatch.setenv("TFLITE_LAB_CACHE", str(tmp_path / "store"))
    monkeypatch.setenv("TFLITE_LAB_HOME", str(tmp_path / "home"))


def test_the_same_convert_again_comes_from_the_store_without_a_worker_and_is_judged_anew():
    args = ["convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz", "--num-samples", 16,
            "--route", "keras", "--optimize", "dynamic", "--json"]
    first, _ = _cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    cold = json.loads(first.stdout)
    assert not cold["cached"]
    before = _workers_started()
    again, tf = _cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    warm = json.loads(again.stdout)
    assert _workers_started() == before and not tf          # no worker process, no TensorFlow here
    assert warm["cached"] and warm["cached_at"] == cold["converted_at"]
    assert warm["run_id"] != cold["run_id"]                  # a run of its own in the history
    assert warm["outputs"] == cold["outputs"] and warm["latency_ms"] == cold["latency_ms"]
    # The stored report, judged with this request's tolerances: a stricter bound fails it.
    strict, tf = _cli(*args, "--max-abs-error", "1e-12")
    assert strict.returncode == 1 and not tf and _workers_started() == before
    assert not json.loads(strict.stdout)["ok"]
    # Anything that changes the answer is computed: other samples here.
    other, _ = _cli(*args[:-1], "--num-samples", 8, "--json")
    assert other.returncode == 0 and _workers_started() > before
    assert json.loads(other.stdout)["num_samples"] == 8      # (its dynamic-range .tflite is reused: no calibration)
