"""The reproduction script shown with each conversion runs on its own and gives the same model."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import SAMPLES
from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, run_cell, source_json
from tflite_lab.sources import source_from_path

CASES = [("digits_cnn.keras", "digits_cnn.samples.npz", "concrete_function", "int8"),
         ("digits_lstm.keras", "digits_lstm.samples.npz", "keras", "int16x8"),
         ("diabetes_regressor_savedmodel.zip", "diabetes_regressor.samples.npy", "cli", "dynamic")]


@pytest.mark.slow
@pytest.mark.parametrize("model,samples,route,opt", CASES, ids=[f"{c[0].split('.')[0]}-{c[2]}-{c[3]}" for c in CASES])
def test_reproduction_script_runs_and_matches(tmp_path, model, samples, route, opt):
    src = source_from_path(SAMPLES / model)
    p = prepare(source_json(src), SampleSpec(path=str(SAMPLES / samples)), BenchSpec(enabled=False))
    rep = run_cell(p, route, opt, bench=BenchSpec(enabled=False))
    code, language = rep["reproduce"]["code"], rep["reproduce"]["language"]
    assert "/" not in code.split("samples.npz")[0].replace("#!/usr/bin/env", "")  # no server paths
    shutil.copy(SAMPLES / model, tmp_path / model)
    shutil.copy(p["samples_path"], tmp_path / "samples.npz")
    if language == "bash":
        assert "tflite_convert --saved_model_dir=" in code
        env_bin = str(__import__("pathlib").Path(sys.executable).parent)
        cmd = ["bash", "-c", code]
        env = {"PATH": env_bin + ":/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    else:
        cmd, env = [sys.executable, "-c", code], {"TF_CPP_MIN_LOG_LEVEL": "3"}
    import os
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = open(rep["tflite_path"], "rb").read()
    theirs = (tmp_path / "model.tflite").read_bytes()
    # Same recipe, same samples: the same model (flatbuffers may differ in metadata, so compare outputs).
    from ai_edge_litert.interpreter import Interpreter
    x = next(iter(np.load(tmp_path / "samples.npz").values()))[:1]
    outs = []
    for data in (ours, theirs):
        it = Interpreter(model_content=data)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    assert abs(len(ours) - len(theirs)) < 0.05 * len(ours)   # tensor names may differ
