"""Custom ops decided by the installed LiteRT: a .tflite whose custom op LiteRT has a kernel for runs;
an invented custom op or a Flex op is refused, naming it, and inspect still lists every op with why.

The models are a Keras MaxPool2D -> Conv2D converted by TensorFlow, whose MAX_POOL_2D node is then
rewritten (LiteRT's flatbuffer schema) into MediaPipe's custom MaxPoolingWithArgmax2D: custom options
are a TfLitePoolParams struct, and its second output (the argmax) is a model output, as in MediaPipe's
models (left dangling, XNNPACK's argmax pooling crashes at invoke).
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from lab_helpers import run_cli

pytestmark = pytest.mark.slow


def _rewrite(tflite: bytes, custom_code: str) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(tflite, 0))
    idx = next(i for i, oc in enumerate(m.operatorCodes)
               if max(oc.builtinCode, oc.deprecatedBuiltinCode) == s.BuiltinOperator.MAX_POOL_2D)
    oc = m.operatorCodes[idx]
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version = (s.BuiltinOperator.CUSTOM, 32,
                                                                          custom_code, 1)
    sg = m.subgraphs[0]
    op = next(o for o in sg.operators if o.opcodeIndex == idx)
    value = sg.tensors[op.outputs[0]]
    argmax = s.TensorT()
    argmax.shape, argmax.shapeSignature = list(value.shape), list(value.shapeSignature)
    argmax.type, argmax.name, argmax.buffer = s.TensorType.FLOAT32, "argmax", 0
    sg.tensors.append(argmax)
    op.outputs = list(op.outputs) + [len(sg.tensors) - 1]
    sg.outputs = list(sg.outputs) + [len(sg.tensors) - 1]
    op.builtinOptionsType, op.builtinOptions = 0, None
    # TfLitePoolParams: padding VALID (2), stride w/h, filter w/h, activation none
    op.customOptions, op.customOptionsFormat = list(struct.pack("<6i", 2, 2, 2, 2, 2, 0)), 0
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import keras
    import tensorflow as tf
    d = tmp_path_factory.mktemp("custom_ops")
    keras.utils.set_random_seed(3)
    inp = keras.Input((6, 6, 2), name="image")
    model = keras.Model(inp, keras.layers.Conv2D(3, 1, name="mix")(keras.layers.MaxPool2D(2)(inp)))
    model.save(d / "pool.keras")
    plain = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    paths = {"keras": d / "pool.keras"}
    for key, code in (("argmax", "MaxPoolingWithArgmax2D"), ("own", "MyOwnOp"), ("flex", "FlexReadFile")):
        paths[key] = d / f"{key}.tflite"
        paths[key].write_bytes(_rewrite(plain, code))
    kernel, bias = (np.asarray(w) for w in model.get_layer("mix").get_weights())
    return {**paths, "kernel": kernel, "bias": bias}


def test_registered_custom_op_runs_and_matches_numpy(models):
    from tflite_lab.inspect import PROBE_MS, inspect_tflite
    from tflite_lab.runtime import TFLiteModel
    data = models["argmax"].read_bytes()
    insp = inspect_tflite(data, "argmax.tflite")
    row = next(r for r in insp.op_table if r["op"] == "MaxPoolingWithArgmax2D")
    assert row["kind"] == "custom" and row["runs"] is True and "XNNPACK" in row["why"]
    assert insp.refused is None and insp.blocking_ops == []
    assert any("MaxPoolingWithArgmax2D runs here" in n for n in insp.notes)
    probes = len(PROBE_MS)
    inspect_tflite(data, "again.tflite")
    assert len(PROBE_MS) == probes                   # the op resolver is probed once per name per process

    x = np.random.default_rng(0).random((5, 6, 6, 2), dtype=np.float32)
    y = TFLiteModel(data, name="argmax.tflite").predict({"image": x})
    pooled = x.reshape(5, 3, 2, 3, 2, 2).max(axis=(2, 4))
    expect = pooled @ models["kernel"][0, 0] + models["bias"]
    (out,) = [v for k, v in y.items() if v.shape[-1] == 3]
    assert np.isfinite(out).all() and np.abs(out - expect).max() < 1e-5


def test_compare_runs_the_custom_op_model(models):
    r = run_cli("convert", models["argmax"], "--reference", models["keras"], "--json", "--no-latency")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["optimization"] == "provided" and rep["num_samples"] == 64
    assert rep["outputs"][0]["max_abs_error"] < 1e-5 and rep["ok"]


def test_unknown_custom_op_and_flex_refused_naming_them_and_inspect_lists_ops(models):
    from tflite_lab.errors import SourceError
    from tflite_lab.inspect import inspect_tflite, refuse_unsafe
    own = inspect_tflite(models["own"].read_bytes(), "own.tflite")
    assert own.blocking_ops == ["MyOwnOp"] and "unresolved" in own.op_table[0]["why"]
    assert [r["runs"] for r in own.op_table if r["op"] == "CONV_2D"] == [True]
    with pytest.raises(SourceError, match=r"own\.tflite is refused.*MyOwnOp \(custom op: the installed LiteRT "
                                          r"has no kernel"):
        refuse_unsafe(own, "own.tflite")
    flex = inspect_tflite(models["flex"].read_bytes(), "flex.tflite")
    assert flex.blocking_ops == ["FlexReadFile"] and flex.op_table[0]["kind"] == "flex"

    r = run_cli("inspect", models["own"])          # the op table, then the one-line refusal, exit 2
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: own.tflite is refused") and "MyOwnOp (custom op:" in line
    table = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("    ")]
    assert ["MyOwnOp", "x1", "BLOCKS"] == table[0][:3] and ["CONV_2D", "x1", "runs"] == table[1][:3]

    r = run_cli("convert", models["flex"], "--reference", models["keras"], "--no-latency")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert "flex.tflite is refused: only builtin ops run here" in line and "FlexReadFile (Flex op: reads files)" in line
