"""The mobile target's Android/iOS bundles, generated from real models converted here: every constant the
Kotlin and Swift code carry is parsed back and compared with what ai_edge_litert reads from the .tflite."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from tflite_lab.targets import mobile_bundle as mb

pytestmark = pytest.mark.slow

# Built in a subprocess: TF stays out of this test process (the bundle code itself must not need it).
BUILD = r"""
import numpy as np, keras, tensorflow as tf
keras.utils.set_random_seed(0)
d = r"{d}"

# (1) two inputs / two outputs, float; the flatbuffer holds the inputs as [b, a], the signature as [a, b]
a = keras.Input((6,), name="a"); b = keras.Input((4, 2), name="b")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
h = keras.layers.Dense(8, activation="relu")(h)
two = keras.Model([b, a], {{"cls": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                           "reg": keras.layers.Dense(1, name="reg")(h)}})
open(d + "/two.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(two).convert())

# (2) int8 with int8 I/O
x = keras.Input((5,), name="x")
q = keras.Model(x, keras.layers.Dense(3, name="y")(keras.layers.Dense(8, activation="relu")(x)))
c = tf.lite.TFLiteConverter.from_keras_model(q)
c.optimizations = [tf.lite.Optimize.DEFAULT]
rng = np.random.default_rng(0)
c.representative_dataset = lambda: ([rng.uniform(-2, 2, (1, 5)).astype(np.float32)] for _ in range(20))
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = tf.int8
c.inference_output_type = tf.int8
open(d + "/int8.tflite", "wb").write(c.convert())

# (3) a dynamic-length int32 input
t = keras.Input((None,), dtype="int32", name="tokens")
h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 4)(t))
emb = keras.Model(t, keras.layers.Dense(2, name="score")(h))
open(d + "/embed.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(emb).convert())

# (4) no signature: a bare concrete function carries none
@tf.function(input_signature=[tf.TensorSpec([1, 3], tf.float32, name="feat"),
                              tf.TensorSpec([1, 2], tf.int32, name="ids")])
def f(feat, ids):
    return feat * 2.0, tf.cast(ids, tf.float32) + 1.0
open(d + "/nosig.tflite", "wb").write(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()]).convert())
"""

MODELS = ("two", "int8", "embed", "nosig")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mobile_models")
    r = subprocess.run([sys.executable, "-c", BUILD.format(d=d)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    return {m: (d / f"{m}.tflite").read_bytes() for m in MODELS}


# ---------------------------------------------------------------- what LiteRT itself reports

def litert_truth(tflite: bytes) -> dict:
    """The expected signature, read straight from ai_edge_litert (not through mobile_io)."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=tflite)
    sigs = it.get_signature_list()
    flat_in = [d["index"] for d in it.get_input_details()]
    flat_out = [d["index"] for d in it.get_output_details()]

    def spec(name, d):
        s, z = d["quantization"]
        return {"name": name, "tensor_name": d["name"], "index": int(d["index"]),
                "dtype": np.dtype(d["dtype"]).name, "shape": [int(v) for v in d["shape"]],
                "shape_signature": [int(v) for v in d["shape_signature"]],
                "scale": float(s) if s else None, "zero_point": int(z) if s else None}
    if not sigs:
        return {"key": None, "inputs": [spec(d["name"], d) for d in it.get_input_details()],
                "outputs": [spec(d["name"], d) for d in it.get_output_details()], "sig_order": None}
    key = "serving_default"
    r = it.get_signature_runner(key)
    ins = sorted((spec(k, d) for k, d in r.get_input_details().items()), key=lambda t: flat_in.index(t["index"]))
    outs = sorted((spec(k, d) for k, d in r.get_output_details().items()), key=lambda t: flat_out.index(t["index"]))
    return {"key": key, "inputs": ins, "outputs": outs, "sig_order": sigs[key]["inputs"]}


# ---------------------------------------------------------------- parsing the generated code back

STR = r'"(?:[^"\\]|\\.)*"'


def kt_unquote(lit: str) -> str:
    body = lit[1:-1]
    units = re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: chr(int(m.group(1), 16)), body)
    s = re.sub(r'\\(["\\$])', r"\1", units)
    return s.encode("utf-16", "surrogatepass").decode("utf-16")


def swift_unquote(lit: str) -> str:
    s = re.sub(r"\\u\{([0-9A-Fa-f]+)\}", lambda m: chr(int(m.group(1), 16)), lit[1:-1])
    return re.sub(r'\\(["\\])', r"\1", s)


KT_SPEC = re.compile(
    rf"val (\w+) = TensorSpec\(name = ({STR}), tensorName = ({STR}), position = (\d+), index = (\d+), "
    rf"dtype = ({STR}), shape = intArrayOf\(([^)]*)\), shapeSignature = intArrayOf\(([^)]*)\), "
    rf"scale = (null|[-+0-9.eE]+f), zeroPoint = (null|-?\d+)\)")
SW_SPEC = re.compile(
    rf"static let (\w+) = TensorSpec\(name: ({STR}), tensorName: ({STR}), position: (\d+), index: (\d+), "
    rf"dtype: ({STR}), shape: \[([^\]]*)\], shapeSignature: \[([^\]]*)\], "
    rf"scale: (nil|[-+0-9.eE]+), zeroPoint: (nil|-?\d+)\)")


def parse_specs(code: str, lang: str) -> dict:
    rx, unq = (KT_SPEC, kt_unquote) if lang == "kt" else (SW_SPEC, swift_unquote)
    out = {"inputs": [], "outputs": []}
    for m in rx.finditer(code):
        const, name, tname, pos, idx, dt, shape, sig, scale, zp = m.groups()
        ints = lambda s: [int(v) for v in s.split(",") if v.strip()]  # noqa: E731
        none = ("null", "nil")
        out["inputs" if const.startswith("IN_") else "outputs"].append({
            "const": const, "name": unq(name), "tensor_name": unq(tname), "position": int(pos), "index": int(idx),
            "dtype": unq(dt), "shape": ints(shape), "shape_signature": ints(sig),
            "scale": None if scale in none else float(scale.rstrip("f")),
            "zero_point": None if zp in none else int(zp)})
    return out


def strip_strings_and_comments(code: str) -> str:
    code = re.sub(STR, '""', code)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def assert_balanced(code: str):
    stack, pairs = [], {")": "(", "]": "[", "}": "{"}
    for ch in strip_strings_and_comments(code):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            assert stack and stack.pop() == pairs[ch], "unbalanced brackets"
    assert not stack, "unclosed brackets"


def assert_matches_truth(parsed: dict, truth: dict):
    for kind in ("inputs", "outputs"):
        got, want = parsed[kind], truth[kind]
        assert [p["name"] for p in got] == [t["name"] for t in want], kind
        for pos, (p, t) in enumerate(zip(got, want)):
            assert p["position"] == pos
            for k in ("tensor_name", "index", "dtype", "shape", "shape_signature", "zero_point"):
                assert p[k] == t[k], (kind, t["name"], k)
            if t["scale"] is None:
                assert p["scale"] is None
            else:   # the literal must give back the .tflite's own float32 scale exactly
                assert np.float32(p["scale"]) == np.float32(t["scale"]), (t["name"], p["scale"], t["scale"])


def string_literals(code: str, unq) -> set:
    return {unq(s) for s in re.findall(STR, code)}


def check_bundle(tflite: bytes, tmp_path, model_file="model.tflite"):
    paths = mb.write_mobile_bundles(tflite, tmp_path / "bundle", model_file=model_file)
    truth = litert_truth(tflite)
    io = mb.mobile_io(tflite)
    assert io["signature_key"] == truth["key"]
    for kind in ("inputs", "outputs"):
        assert io[kind] == truth[kind]
    kt = (tmp_path / "bundle/android/ModelRunner.kt").read_text()
    sw = (tmp_path / "bundle/ios/ModelRunner.swift").read_text()
    assert paths == {"android": str(tmp_path / "bundle/android"), "ios": str(tmp_path / "bundle/ios")}
    for folder in ("android", "ios"):
        assert (tmp_path / "bundle" / folder / model_file).read_bytes() == tflite     # byte-identical copy
        assert (tmp_path / "bundle" / folder / "README.md").is_file()
    assert (tmp_path / "bundle/android/build.gradle.kts.snippet").read_text().count(
        f'implementation("com.google.ai.edge.litert:litert:{mb.LITERT_ANDROID_VERSION}")') == 1
    assert "pod 'TensorFlowLiteSwift'" in (tmp_path / "bundle/ios/Podfile.snippet").read_text()

    for code, lang, unq in ((kt, "kt", kt_unquote), (sw, "swift", swift_unquote)):
        assert_balanced(code)
        assert_matches_truth(parse_specs(code, lang), truth)
        # No name the model does not have: every string literal is a model name, the signature key, a dtype,
        # the model file, or one of the code's own messages (which interpolate).
        model_names = {t["name"] for k in ("inputs", "outputs") for t in truth[k]}
        model_names |= {t["tensor_name"] for k in ("inputs", "outputs") for t in truth[k]}
        stem, _, ext = model_file.rpartition(".")
        allowed = model_names | mb.DTYPES | {truth["key"], model_file, stem, ext}
        extra = {s for s in string_literals(code, unq) if s not in allowed and "$" not in s and "\\(" not in s}
        assert not extra, (lang, extra)
    # the Swift copy/output calls go by flatbuffer position, each commented with its signature name
    for pos, t in enumerate(truth["inputs"]):
        assert re.search(rf"toInputAt: {pos}\)  // {re.escape(mb._swift_string(t['name']))}", sw)
    for pos, t in enumerate(truth["outputs"]):
        assert re.search(rf"output\(at: {pos}\)\.data, ModelRunner\.\w+\)  // {re.escape(mb._swift_string(t['name']))}",
                         sw)
    return truth, kt, sw, tmp_path / "bundle"


# ---------------------------------------------------------------- the four models

def test_two_inputs_in_flatbuffer_order(models, tmp_path):
    truth, kt, sw, _ = check_bundle(models["two"], tmp_path)
    assert truth["sig_order"] == ["a", "b"]
    assert [t["name"] for t in truth["inputs"]] == ["b", "a"]      # the case this test exists for
    assert "interpreter.runSignature(inputs, outputs, SIGNATURE_KEY)" in kt
    assert 'val SIGNATURE_KEY: String? = "serving_default"' in kt
    assert "fun run(b: FloatArray, a: FloatArray, bShape: IntArray = intArrayOf(1, 4, 2), " \
           "aShape: IntArray = intArrayOf(1, 6)): Map<String, FloatArray>" in kt
    assert "func run(b: [Float], a: [Float], bShape: [Int] = [1, 4, 2], aShape: [Int] = [1, 6]) throws" in sw
    assert "inputs[IN_B.name] = pack(b, IN_B, bShape)" in kt


def test_int8_quantization_constants(models, tmp_path):
    truth, kt, sw, _ = check_bundle(models["int8"], tmp_path)
    assert truth["inputs"][0]["dtype"] == "int8" and truth["inputs"][0]["scale"] is not None
    assert truth["outputs"][0]["dtype"] == "int8" and truth["outputs"][0]["scale"] is not None
    assert "fun run(x: FloatArray" in kt and "func run(x: [Float]" in sw          # floats in, quantized inside
    assert '"int8" -> values.forEach { buf.put(quantize(it, spec, -128, 127).toByte()) }' in kt
    assert "(buf.get().toInt() - z) * s" in kt                                     # outputs dequantized


def test_dynamic_int_input(models, tmp_path):
    truth, kt, sw, _ = check_bundle(models["embed"], tmp_path)
    t = truth["inputs"][0]
    assert t["dtype"] == "int32" and t["shape_signature"] == [-1, -1]
    assert "fun run(tokens: IntArray, tokensShape: IntArray = intArrayOf(1, 1))" in kt
    assert "func run(tokens: [Int32], tokensShape: [Int] = [1, 1]) throws" in sw
    for code, resize, alloc in ((kt, "interpreter.resizeInput(IN_TOKENS.position, tokensShape)",
                                 "interpreter.allocateTensors()"),
                                (sw, "try interpreter.resizeInput(at: 0, to: Tensor.Shape(tokensShape))",
                                 "try interpreter.allocateTensors()")):
        assert resize in code and code.index(resize) < code.index(alloc)      # resized before allocation
        assert "Dynamic dims" in code


def test_no_signature_by_position(models, tmp_path):
    truth, kt, sw, _ = check_bundle(models["nosig"], tmp_path, model_file="plain.tflite")
    assert truth["key"] is None
    assert "val SIGNATURE_KEY: String? = null" in kt and "static let signatureKey: String? = nil" in sw
    assert "interpreter.runForMultipleInputsOutputs(inputs, outputs)" in kt and "interpreter.runSignature" not in kt
    assert 'Bundle.main.path(forResource: "plain", ofType: "tflite")' in sw
    # the int32 input takes ints, the float one floats; names are the tensors' own
    kinds = {t["dtype"] for t in truth["inputs"]}
    assert kinds == {"float32", "int32"}
    assert re.search(r"fun run\(\w+: (Float|Int)Array, \w+: (Float|Int)Array", kt)


# ---------------------------------------------------------------- identifiers from hostile names

def fake_io(names, dtype="float32"):
    t = lambda i, n: {"name": n, "tensor_name": n, "index": i, "dtype": dtype, "shape": [1, 2],  # noqa: E731
                      "shape_signature": [1, 2], "scale": None, "zero_point": None}
    return {"signature_key": "serving_default", "inputs": [t(i, n) for i, n in enumerate(names)],
            "outputs": [t(10 + i, n) for i, n in enumerate(names)]}


def test_names_escape_and_stay_distinct():
    names = ["serving_default_x:0", "input 1/a", "input_1_a", "class", "9lives", "é", 'q"$\\(x)', "", "self"]
    io = fake_io(names)
    for code, lang, unq in ((mb._kotlin(io, "m.tflite"), "kt", kt_unquote), (mb._swift(io, "m.tflite"), "swift",
                                                                          swift_unquote)):
        assert_balanced(code)
        parsed = parse_specs(code, lang)
        assert [p["name"] for p in parsed["inputs"]] == names and [p["name"] for p in parsed["outputs"]] == names
        consts = [p["const"] for p in parsed["inputs"] + parsed["outputs"]]
        assert len(set(consts)) == len(consts)
        sig = re.search(r"fun run\((.*?)\): Map" if lang == "kt" else r"func run\((.*?)\) throws", code).group(1)
        params = [p.split(":")[0].strip() for p in sig.split(", ")]
        assert len(set(params)) == len(params) == len(names)
        keywords = mb.KOTLIN_KEYWORDS if lang == "kt" else mb.SWIFT_KEYWORDS
        for ident in consts + params:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ident) and ident not in keywords, ident


def test_bad_model_file_name_refused(models, tmp_path):
    for bad in ("../x.tflite", "a/b.tflite", "x\n.tflite", ""):
        with pytest.raises(ValueError):
            mb.write_mobile_bundles(models["nosig"], tmp_path, model_file=bad)


def test_no_tensorflow_or_streamlit_import():
    src = open(mb.__file__).read()
    assert not re.search(r"^\s*(import|from)\s+(tensorflow|streamlit|keras)\b", src, re.M)
    r = subprocess.run([sys.executable, "-c", "import sys; import tflite_lab.targets.mobile_bundle as m; "
                        "print(any(k.split('.')[0] in ('tensorflow', 'streamlit') for k in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr[-2000:]
