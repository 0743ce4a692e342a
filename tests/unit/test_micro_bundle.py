"""The micro target's C++ bundle, generated from models built here and checked with the system C++
compiler and TFLite Micro's real interpreter (issue 17)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab_helpers import build_models

pytestmark = pytest.mark.slow

BUILD = """
import keras
keras.utils.set_random_seed(0)
x = keras.Input((8, 8, 1), name="img")
h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
h = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(h)
h = keras.layers.MaxPooling2D(2)(h)
h = keras.layers.Flatten()(h)
keras.Model(x, keras.layers.Dense(3, activation="softmax", name="probs")(h)).save(r"{d}/cnn.keras")
a = keras.Input((6,), name="a"); b = keras.Input((4, 4, 1), name="b")
h = keras.layers.Concatenate()([a, keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(b))])
h = keras.layers.Dense(8, activation="relu")(h)
keras.Model([b, a], [keras.layers.Dense(5, activation="softmax", name="cls")(h),
                     keras.layers.Dense(1, name="reg")(h)]).save(r"{d}/multi.keras")
"""

# Real MicroMutableOpResolver methods (copied from TFLM's micro_mutable_op_resolver.h), a superset of the
# ops of the models here: a name the bundle invents does not compile.
ADD_NAMES = ("AddAdd AddAveragePool2D AddConcatenation AddConv2D AddDepthwiseConv2D AddDequantize AddFullyConnected "
             "AddLogistic AddMaxPool2D AddMean AddMul AddPack AddQuantize AddRelu AddReshape AddShape AddSoftmax "
             "AddStridedSlice AddTanh").split()

# Stubs of the tflite-micro API main.cc uses, with the real headers' paths and signatures
# (tensorflow/lite/c/common.h, micro_mutable_op_resolver.h: the Add* names copied from TFLM's header).
STUBS = {
    "tensorflow/lite/c/common.h": """#pragma once
#include <cstddef>
#include <cstdint>
typedef enum TfLiteStatus { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;
typedef enum { kTfLiteNoType = 0, kTfLiteFloat32 = 1, kTfLiteInt32 = 2, kTfLiteUInt8 = 3, kTfLiteInt64 = 4,
               kTfLiteBool = 6, kTfLiteInt16 = 7, kTfLiteInt8 = 9 } TfLiteType;
typedef union TfLitePtrUnion { int32_t* i32; int64_t* i64; float* f; uint8_t* uint8; bool* b; int16_t* i16;
                               int8_t* int8; } TfLitePtrUnion;
typedef struct TfLiteTensor { TfLiteType type; TfLitePtrUnion data; size_t bytes; } TfLiteTensor;
""",
    "tensorflow/lite/schema/schema_generated.h": """#pragma once
#include <cstdint>
namespace tflite {
struct Model { uint32_t version() const; };
const Model* GetModel(const void* buf);
}
""",
    "tensorflow/lite/micro/micro_mutable_op_resolver.h": """#pragma once
#include "tensorflow/lite/c/common.h"
namespace tflite {
class MicroOpResolver {};
template <unsigned int tOpCount>
class MicroMutableOpResolver : public MicroOpResolver {
 public:
""" + "".join(f"  TfLiteStatus {n}() {{ return kTfLiteOk; }}\n" for n in ADD_NAMES) + """};
}
""",
    "tensorflow/lite/micro/micro_interpreter.h": """#pragma once
#include <cstddef>
#include "tensorflow/lite/c/common.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
namespace tflite {
class MicroInterpreter {
 public:
  MicroInterpreter(const Model* model, const MicroOpResolver& op_resolver, uint8_t* tensor_arena,
                   size_t tensor_arena_size);
  TfLiteStatus AllocateTensors();
  TfLiteStatus Invoke();
  TfLiteTensor* input(size_t index);
  TfLiteTensor* output(size_t index);
  size_t arena_used_bytes() const;
};
}
""",
    "tensorflow/lite/micro/micro_log.h": "#pragma once\nvoid MicroPrintf(const char* format, ...);\n",
    "tensorflow/lite/micro/system_setup.h": "#pragma once\nnamespace tflite { void InitializeTarget(); }\n",
}

# A stand-in for TFLM's library (not in the wheel) so main.cc's own logic links and runs: one input and one
# output tensor; Invoke() writes the input main.cc filled to $FAKE_IN_DUMP and returns FAKE_OUT as the output.
FAKE_TFLM = """#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "fake_io.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
void MicroPrintf(const char* format, ...) {
  va_list a; va_start(a, format); vprintf(format, a); va_end(a); printf("\\n");
}
namespace tflite {
void InitializeTarget() {}
uint32_t Model::version() const { return 3; }
const Model* GetModel(const void* buf) { return static_cast<const Model*>(buf); }
alignas(16) static unsigned char in_buf[kFakeInBytes], out_buf[sizeof(kFakeOut)];
static TfLiteTensor in_t, out_t;
MicroInterpreter::MicroInterpreter(const Model*, const MicroOpResolver&, uint8_t*, size_t) {}
TfLiteStatus MicroInterpreter::AllocateTensors() {
  in_t.type = kFakeInType; in_t.bytes = kFakeInBytes; in_t.data.uint8 = in_buf;
  out_t.type = kFakeOutType; out_t.bytes = sizeof(kFakeOut); out_t.data.uint8 = out_buf;
  return kTfLiteOk;
}
TfLiteStatus MicroInterpreter::Invoke() {
  FILE* f = fopen(getenv("FAKE_IN_DUMP"), "wb"); fwrite(in_buf, 1, kFakeInBytes, f); fclose(f);
  memcpy(out_buf, kFakeOut, sizeof(kFakeOut));
  return kTfLiteOk;
}
TfLiteTensor* MicroInterpreter::input(size_t i) { return i == 0 ? &in_t : nullptr; }
TfLiteTensor* MicroInterpreter::output(size_t i) { return i == 0 ? &out_t : nullptr; }
size_t MicroInterpreter::arena_used_bytes() const { return 1234; }
}
"""

TF_TYPES = {"int8": "kTfLiteInt8", "float32": "kTfLiteFloat32", "int16": "kTfLiteInt16", "uint8": "kTfLiteUInt8"}


def _run_main(bundle: Path, inc: Path, tmp: Path, in_dtype: str, in_bytes: int, out: np.ndarray, tag: str):
    """Build main.cc + model_data.cc + the stand-in and run it: (exit code, stdout, input bytes it fed)."""
    (tmp / "fake_io.h").write_text(
        "#pragma once\n#include \"tensorflow/lite/c/common.h\"\n"
        f"constexpr TfLiteType kFakeInType = {TF_TYPES[in_dtype]};\nconstexpr size_t kFakeInBytes = {in_bytes};\n"
        f"constexpr TfLiteType kFakeOutType = {TF_TYPES[out.dtype.name]};\n"
        f"alignas(16) const unsigned char kFakeOut[] = {{{', '.join(map(str, out.tobytes()))}}};\n")
    (tmp / "fake_tflm.cc").write_text(FAKE_TFLM)
    exe = tmp / f"check_{tag}"
    r = subprocess.run(["g++", "-std=c++17", f"-I{inc}", f"-I{bundle}", f"-I{tmp}", "-o", str(exe),
                        str(bundle / "main.cc"), str(bundle / "model_data.cc"), str(tmp / "fake_tflm.cc")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    dump = tmp / f"in_{tag}.bin"
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=dict(os.environ, FAKE_IN_DUMP=str(dump)))
    return r.returncode, r.stdout, dump.read_bytes()


TFLM_SAMPLE0 = """
import json, sys, numpy as np
from tflite_micro.python.tflite_micro import runtime as r
data = open(sys.argv[1], "rb").read()
samples = np.load(sys.argv[2])
names = json.loads(sys.argv[3])
it = r.Interpreter.from_bytes(data, arena_size=1 << 20)
fed = []
for k, name in enumerate(names):
    d = it.get_input_details(k)
    x = samples[name][:1].astype(np.float32)
    sc, zp = d["quantization_parameters"]["scales"], d["quantization_parameters"]["zero_points"]
    if np.dtype(d["dtype"]).kind == "i" and len(sc):
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / np.float32(sc[0]) + zp[0]), info.min, info.max)
    x = x.astype(d["dtype"])
    fed.append(x.tobytes().hex())
    it.set_input(x, k)
it.invoke()
outs = [np.asarray(it.get_output(k)).reshape(-1).tolist() for k in range(int(sys.argv[4]))]
dts = [np.asarray(it.get_output(k)).dtype.name for k in range(int(sys.argv[4]))]
print(json.dumps({"outputs": outs, "dtypes": dts, "fed": fed}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_models(BUILD, tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def int8_cell(models):
    from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    off = BenchSpec(enabled=False)
    prepared = prepare(source_json(source_from_path(models / "cnn.keras")), SampleSpec(count=4), off)
    return judge_report(run_cell(prepared, "keras", "int8", int8_io=True, bench=off, targets={"micro": {}}))


def _micro(rep):
    from tflite_lab.pipeline import report_json
    return report_json(rep)["targets"]["micro"]


def _flatbuffer_ops(data: bytes) -> set[str]:
    """Op names straight from the flatbuffer's operator codes."""
    from ai_edge_litert import schema_py_generated as s
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.Model.GetRootAsModel(data, 0)
    out = set()
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        out.add(names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())])
    return out


def _c_arrays(text: str) -> dict[str, list]:
    arrays = {}
    for m in re.finditer(r"const (\w+) (k(?:Input|Expected)\d+)\w*\[(\d+)\] = \{(.*?)\};", text, re.S):
        ctype, ident, n, body = m.groups()
        vals = [v.strip() for v in body.replace("\n", " ").split(",") if v.strip()]
        conv = float if ctype == "float" else int
        arrays[ident] = [conv(v.rstrip("f")) for v in vals]
        assert len(arrays[ident]) == int(n)
    return arrays


def _check_bundle(bundle: Path, tflite: bytes, samples_path: str, t: dict, tmp: Path) -> None:
    assert {"model_data.cc", "model_data.h", "model_ops.h", "main.cc", "README.md"} <= {p.name for p in bundle.iterdir()}
    # model_data.cc compiles; the array parsed back is the .tflite, byte for byte; the symbols are global.
    cc = (bundle / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model_data[] = {" in cc
    body = cc[cc.index("g_model_data[] = {") + len("g_model_data[] = {"):cc.index("};")]
    assert bytes(int(v, 16) for v in body.replace("\n", " ").split(",") if v.strip()) == tflite
    assert f"const unsigned int g_model_data_size = {len(tflite)};" in cc
    obj = tmp / "model_data.o"
    r = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-c", str(bundle / "model_data.cc"), "-o", str(obj)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    syms = subprocess.run(["nm", "-S", "-C", str(obj)], capture_output=True, text=True).stdout
    data_sym = next(ln.split() for ln in syms.splitlines() if ln.endswith(" g_model_data"))
    assert data_sym[2] == "R" and int(data_sym[1], 16) == len(tflite)        # global, read-only, N bytes
    assert any(ln.endswith(" R g_model_data_size") for ln in syms.splitlines())

    # model_ops.h: one checked Add* per distinct op of the flatbuffer, N = their number.
    from tflite_lab.targets.micro_bundle import resolver_name
    ops_h = (bundle / "model_ops.h").read_text()
    ops = _flatbuffer_ops(tflite)
    calls = re.findall(r"if \(resolver\.(Add\w+)\(\) != kTfLiteOk\) return kTfLiteError;", ops_h)
    assert sorted(calls) == sorted(resolver_name(op) for op in ops) and len(set(calls)) == len(calls)
    assert len(re.findall(r"resolver\.Add", ops_h)) == len(ops)
    assert f"constexpr unsigned int kModelOpCount = {len(ops)};" in ops_h

    # main.cc parses (with -Wall -Wextra -Werror) against stub headers of the TFLM names it uses.
    inc = tmp / "stub_include"
    for rel, text in STUBS.items():
        (inc / rel).parent.mkdir(parents=True, exist_ok=True)
        (inc / rel).write_text(text)
    for extra in ([], ["-DTFLITE_BUNDLE_NO_MAIN"]):
        r = subprocess.run(["g++", "-fsyntax-only", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{inc}",
                            f"-I{bundle}", *extra, str(bundle / "main.cc")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    main = (bundle / "main.cc").read_text()
    arena = int(re.search(r"constexpr int kTensorArenaSize = (\d+);", main).group(1))
    assert arena % 16 == 0 and arena >= t["arena_bytes"] + max(1024, t["arena_bytes"] // 10)
    assert "alignas(16) uint8_t g_tensor_arena[kTensorArenaSize];" in main

    # The embedded sample is sample 0; the embedded expected output is TFLM's for it, recomputed here.
    arrays = _c_arrays(main)
    with np.load(samples_path) as z:
        samples = {k: z[k] for k in z.files}
    ins = t["io"]["inputs"]
    for k, i in enumerate(ins):
        got = np.array(next(v for n, v in arrays.items() if n.startswith(f"kInput{k}")), dtype=np.float64)
        np.testing.assert_array_equal(got.astype(np.float32), samples[i["name"]][0].reshape(-1).astype(np.float32))
        if i["dtype"] == "int8":
            assert f"QuantizeValue<int8_t>(kInput{k}_" in main and repr(i["quantization"][0])[:8] in main
    r = subprocess.run([sys.executable, "-c", TFLM_SAMPLE0, t["tflite_path_for_test"], samples_path,
                        json.dumps([i["name"] for i in ins]), str(len(t["io"]["outputs"]))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    tflm = json.loads(r.stdout)
    want = tflm["outputs"]
    assert len(want) == len(t["io"]["outputs"])
    for k, o in enumerate(t["io"]["outputs"]):
        got = next(v for n, v in arrays.items() if n.startswith(f"kExpected{k}"))
        if o["dtype"] == "float32":
            np.testing.assert_allclose(got, want[k], rtol=1e-6, atol=1e-9)
        else:
            assert got == want[k]
    # main.cc built against a stand-in for TFLM's library and run: it feeds the input TFLM was fed here
    # (int8: quantized in C, equal to numpy's quantization) and exits 0 on TFLM's output, 1 when it is off
    # by 2 steps (float: 1e-3).
    if len(ins) == 1 and len(want) == 1:
        out = np.array(want[0], dtype=tflm["dtypes"][0])
        fed = bytes.fromhex(tflm["fed"][0])
        code, text, got_in = _run_main(bundle, inc, tmp, ins[0]["dtype"], len(fed), out, "same")
        assert code == 0 and "PASS" in text and "max |diff| 0 " in text, text
        assert got_in == fed
        off = out.copy()
        if off.dtype == np.float32:
            off[0] += np.float32(1e-3)
        else:
            off[0] = off[0] - 2 if off[0] > 0 else off[0] + 2
        code, text, _ = _run_main(bundle, inc, tmp, ins[0]["dtype"], len(fed), off, "off")
        assert code == 1 and "FAIL" in text, text
        if off.dtype != np.float32:
            assert "max |diff| 2 steps" in text
    readme = (bundle / "README.md").read_text()
    assert f"{t['arena_bytes']:,} bytes" in readme and str(t["tflm_version"]) in readme
    assert "Arduino" in readme and "ESP-IDF" in readme and "CMake" in readme


def test_int8_bundle_compiles_names_the_ops_and_embeds_tflms_output(int8_cell, tmp_path):
    rep = int8_cell
    t = _micro(rep)
    assert t["runs"] and t["verdict"] == "pass", t.get("error")
    assert t["bundle_dir"] and "bundle_error" not in t, t.get("bundle_error")
    assert t["io"]["inputs"][0]["dtype"] == "int8" and t["io"]["outputs"][0]["dtype"] == "int8"
    tflite = Path(rep["tflite_path"]).read_bytes()
    _check_bundle(Path(t["bundle_dir"]), tflite, rep["samples_path"], {**t, "tflite_path_for_test": rep["tflite_path"]},
                  tmp_path)


def test_cli_out_writes_the_float_bundle_to_out_micro(models, tmp_path):
    from lab_helpers import run_cli
    out = tmp_path / "out"
    r = run_cli("convert", models / "cnn.keras", "--optimize", "none", "--target", "micro", "--num-samples", "4",
                "--no-latency", "--no-history", "--json", "--out", out)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["targets"]["micro"]
    assert t["verdict"] == "pass" and t["io"]["inputs"][0]["dtype"] == "float32"
    micro = out / "micro"
    assert sorted(p.name for p in micro.iterdir()) == ["README.md", "main.cc", "model_data.cc", "model_data.h",
                                                       "model_ops.h"]
    tflite = (out / "model.tflite").read_bytes()
    _check_bundle(micro, tflite, str(out / "samples.npz"), {**t, "tflite_path_for_test": str(out / "model.tflite")},
                  tmp_path)
    assert "std::fabs" in (micro / "main.cc").read_text()


def test_multi_io_bundle_embeds_every_input_and_output_in_the_flatbuffers_order(models, tmp_path):
    from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    off = BenchSpec(enabled=False)
    prepared = prepare(source_json(source_from_path(models / "multi.keras")), SampleSpec(count=4), off)
    rep = judge_report(run_cell(prepared, "keras", "int8", int8_io=True, bench=off, targets={"micro": {}}))
    t = _micro(rep)
    assert t["runs"] and t["bundle_dir"], (t.get("error"), t.get("bundle_error"))
    assert {i["name"] for i in t["io"]["inputs"]} == {"a", "b"} and {o["name"] for o in t["io"]["outputs"]} == {"cls", "reg"}
    main = (Path(t["bundle_dir"]) / "main.cc").read_text()
    assert main.count("interpreter.input(") == 2 and main.count("interpreter.output(") == 2
    _check_bundle(Path(t["bundle_dir"]), Path(rep["tflite_path"]).read_bytes(), rep["samples_path"],
                  {**t, "tflite_path_for_test": rep["tflite_path"]}, tmp_path)
