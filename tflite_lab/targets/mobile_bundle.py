"""The mobile target's code bundles: a converted .tflite as drop-in Android (Kotlin) and iOS (Swift) code.

``write_mobile_bundles`` writes two folders, each self-contained:

* ``android/``: the model, ``ModelRunner.kt`` (LiteRT's ``org.tensorflow.lite.Interpreter``, fed by
  ``runSignature`` when the model has a signature, else ``runForMultipleInputsOutputs``),
  ``build.gradle.kts.snippet`` and ``README.md``.
* ``ios/``: the model, ``ModelRunner.swift`` (the ``TensorFlowLiteSwift`` pod's ``Interpreter``, fed by
  position in the flatbuffer's order), ``Podfile.snippet`` and ``README.md``.

Everything in them is generated from the model's own serving signature as LiteRT's interpreter reads it
(``mobile_io``): one typed constant per tensor with its exact name, position, dtype, shape, dynamic dims
and quantization; a ``run`` taking floats (quantized with the tensor's own scale/zero point) or the
integer arrays an integer input needs; outputs read back dequantized, keyed by signature name. Nothing
is typed per model, and nothing here imports TensorFlow or streamlit.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

# Versions stated in the generated READMEs, with where they came from (looked up, not guessed).
LITERT_ANDROID_VERSION = "1.4.2"
LITERT_ANDROID_SOURCE = ("https://ai.google.dev/edge/litert/android (\"Supported Android Versions and APIs\": "
                         "v1.4.2 is the latest release of the Interpreter line, min SDK 21; the 2.x line "
                         "(CompiledModel, Interpreter CPU only) is the alternative)")
IOS_POD = "TensorFlowLiteSwift"
IOS_POD_SOURCE = "https://ai.google.dev/edge/litert/ios/quickstart"

DTYPES = {"float32", "int8", "uint8", "int32", "int64", "int16", "bool"}
QUANT_RANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
BYTES = {"float32": 4, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "int16": 2, "bool": 1}

KOTLIN_KEYWORDS = set("""as break class continue do else false for fun if in interface is null object package
return super this throw true try typealias typeof val var when while by catch constructor delegate dynamic
field file finally get import init param property receiver set setparam value where actual abstract annotation
companion const crossinline data enum expect external final infix inline inner internal lateinit noinline open
operator out override private protected public reified sealed suspend tailrec vararg it""".split())
SWIFT_KEYWORDS = set("""associatedtype class deinit enum extension fileprivate func import init inout internal let
open operator private precedencegroup protocol public rethrows static struct subscript typealias var break case
catch continue default defer do else fallthrough for guard if in repeat return throw switch where while Any as
await false is nil self Self super throws true try async some any Type Protocol""".split())
# Names the generated code itself uses: a tensor may not take them.
RESERVED = {"inputs", "outputs", "interpreter", "context", "assetName", "modelPath", "spec", "values", "shape",
            "result", "buffer", "data", "run", "close", "pack", "unpack", "quantize", "count", "out", "ModelRunner",
            "TensorSpec", "Interpreter", "Tensor", "Float", "Int", "String", "Data", "Bool", "signatureKey",
            "all_inputs", "all_outputs", "elements", "bytesPer", "loadModel", "floor", "ceil", "checkCount",
            "bytes", "array", "min", "max", "ByteBuffer", "ByteOrder", "HashMap", "arrayOfNulls", "listOf",
            "ModelRunnerError", "Bundle", "FloatArray", "IntArray", "LongArray", "BooleanArray", "check", "require"}


# ---------------------------------------------------------------- the signature

def _dtype_name(dt) -> str:
    name = "bool" if dt is bool or dt is np.bool_ else np.dtype(dt).name
    if name not in DTYPES:
        raise ValueError(f"mobile bundle: tensor dtype {name} is not supported (only {sorted(DTYPES)})")
    return name


def _tensor(key: str, d: dict) -> dict:
    scale, zp = d.get("quantization", (0.0, 0))
    quantized = bool(scale) and scale != 0.0
    return {"name": key, "tensor_name": d["name"], "index": int(d["index"]), "dtype": _dtype_name(d["dtype"]),
            "shape": [int(v) for v in d["shape"]], "shape_signature": [int(v) for v in d["shape_signature"]],
            "scale": float(scale) if quantized else None, "zero_point": int(zp) if quantized else None}


def mobile_io(tflite: bytes) -> dict:
    """The model's serving signature as the mobile code sees it: {"signature_key": str|None,
    "inputs": [...], "outputs": [...]}, each tensor {"name": signature key (or tensor name when the
    model has no signature), "tensor_name", "index", "dtype" ("float32","int8","uint8","int32","int64","int16","bool"),
    "shape": [..] (the flatbuffer shape, batch 1), "shape_signature": [..] (-1 for dynamic dims),
    "scale": float|None, "zero_point": int|None}

    Inputs and outputs are listed in the flatbuffer's order (the position Swift's ``copy(_:toInputAt:)``
    and ``output(at:)`` take is the list index), because the signature's own order (alphabetical) is not
    the order the interpreter holds them in."""
    from ai_edge_litert.interpreter import Interpreter   # LiteRT alone: no TensorFlow here

    interp = Interpreter(model_content=bytes(tflite))
    sigs = interp.get_signature_list()
    order_in = [int(d["index"]) for d in interp.get_input_details()]
    order_out = [int(d["index"]) for d in interp.get_output_details()]
    if not sigs:
        return {"signature_key": None,
                "inputs": [_tensor(d["name"], d) for d in interp.get_input_details()],
                "outputs": [_tensor(d["name"], d) for d in interp.get_output_details()]}
    key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
    runner = interp.get_signature_runner(key)
    ins = [_tensor(k, d) for k, d in runner.get_input_details().items()]
    outs = [_tensor(k, d) for k, d in runner.get_output_details().items()]

    def flat_order(ts, order):
        # A signature on another subgraph has tensors the primary subgraph does not list: keep its order.
        return sorted(ts, key=lambda t: order.index(t["index"])) if all(t["index"] in order for t in ts) else ts
    return {"signature_key": key, "inputs": flat_order(ins, order_in), "outputs": flat_order(outs, order_out)}


# ---------------------------------------------------------------- identifiers and literals

def _ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not s:
        s = "t"
    if s[0].isdigit():
        s = "t" + s
    return s


def _camel(name: str) -> str:
    parts = _ident(name).split("_")
    s = parts[0][:1].lower() + parts[0][1:] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    return s if not s[0].isdigit() else "t" + s


def _unique(base: str, used: set, banned: set) -> str:
    cand, k = base, 2
    while cand in used or cand in banned:
        cand, k = f"{base}{k}", k + 1
    used.add(cand)
    return cand


def _names(io: dict, keywords: set) -> dict:
    """Distinct identifiers per tensor: a constant, a parameter and (dynamic inputs) a shape parameter."""
    banned = keywords | RESERVED
    used_params, used_consts = set(), set()
    out = {"inputs": [], "outputs": []}
    for kind, prefix in (("inputs", "IN_"), ("outputs", "OUT_")):
        for t in io[kind]:
            const = _unique(prefix + _ident(t["name"]).upper(), used_consts, banned)
            param = _unique(_camel(t["name"]), used_params, banned) if kind == "inputs" else None
            shape = _unique(param + "Shape", used_params, banned) if param and -1 in t["shape_signature"] else None
            out[kind].append({"const": const, "param": param, "shape_param": shape})
    return out


def _kt_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '\\"$':
            out.append("\\" + ch)                       # "$" would start a Kotlin string template
        elif 0x20 <= ord(ch) < 0x7F:
            out.append(ch)
        else:
            out.extend(f"\\u{unit}" for unit in _utf16(ch))   # Kotlin escapes one UTF-16 unit each
    return '"' + "".join(out) + '"'


def _utf16(ch: str) -> list:
    b = ch.encode("utf-16-be")
    return [b[i:i + 2].hex().upper() for i in range(0, len(b), 2)]


def _swift_string(s: str) -> str:
    out = []
    for ch in s:
        o = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)                       # a backslash would also start "\(...)" interpolation
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        else:
            out.append("\\u{%X}" % o)
    return '"' + "".join(out) + '"'


def _float_lit(v: float) -> str:
    v = float(np.float32(v))
    if not math.isfinite(v):
        raise ValueError(f"mobile bundle: non-finite quantization scale {v}")
    s = f"{v:.9g}"                                     # 9 significant digits: round-trips any float32
    return s if ("e" in s or "." in s) else s + ".0"


def _param_kind(t: dict) -> str:
    """What the caller passes for an input: floats (float32 or quantized), else the integer array it is."""
    if t["dtype"] == "float32" or (t["dtype"] in QUANT_RANGE and t["scale"] is not None):
        return "float"
    return {"int64": "long", "bool": "bool"}.get(t["dtype"], "int")


# ---------------------------------------------------------------- Kotlin

KT_ARRAY = {"float": "FloatArray", "int": "IntArray", "long": "LongArray", "bool": "BooleanArray"}


def _kt_ints(v) -> str:
    return "intArrayOf(" + ", ".join(str(int(x)) for x in v) + ")"


def _kotlin(io: dict, model_file: str) -> str:
    names = _names(io, KOTLIN_KEYWORDS)
    sig = io["signature_key"]
    L = []
    a = L.append
    a(f"// Generated by TFLite Lab from {model_file}'s own signature; regenerate it when the model changes.")
    a("// Add your package line. LiteRT: org.tensorflow.lite.Interpreter from com.google.ai.edge.litert:litert.")
    a("")
    a("import android.content.Context")
    a("import java.io.FileInputStream")
    a("import java.nio.ByteBuffer")
    a("import java.nio.ByteOrder")
    a("import java.nio.MappedByteBuffer")
    a("import java.nio.channels.FileChannel")
    a("import kotlin.math.ceil")
    a("import kotlin.math.floor")
    a("import org.tensorflow.lite.Interpreter")
    a("")
    a("/** One tensor of the model's signature, exactly as the .tflite declares it. */")
    a("class TensorSpec(")
    a("    val name: String,             // signature name: what runSignature is keyed by")
    a("    val tensorName: String,       // the flatbuffer tensor's own name")
    a("    val position: Int,            // input/output position in the flatbuffer's order")
    a("    val index: Int,               // tensor index in the flatbuffer")
    a("    val dtype: String,")
    a("    val shape: IntArray,          // the flatbuffer shape (batch 1)")
    a("    val shapeSignature: IntArray, // -1 marks a dynamic dim")
    a("    val scale: Float?,            // null: not quantized")
    a("    val zeroPoint: Int?,")
    a(")")
    a("")
    a(f"class ModelRunner(context: Context, assetName: String = {_kt_string(model_file)}) : AutoCloseable {{")
    a("    companion object {")
    a(f"        val SIGNATURE_KEY: String? = {_kt_string(sig) if sig is not None else 'null'}")
    for kind, label in (("inputs", "INPUTS"), ("outputs", "OUTPUTS")):
        for pos, (t, n) in enumerate(zip(io[kind], names[kind])):
            scale = _float_lit(t["scale"]) + "f" if t["scale"] is not None else "null"
            zp = str(t["zero_point"]) if t["zero_point"] is not None else "null"
            a(f"        val {n['const']} = TensorSpec(name = {_kt_string(t['name'])}, "
              f"tensorName = {_kt_string(t['tensor_name'])}, position = {pos}, index = {t['index']}, "
              f"dtype = {_kt_string(t['dtype'])}, shape = {_kt_ints(t['shape'])}, "
              f"shapeSignature = {_kt_ints(t['shape_signature'])}, scale = {scale}, zeroPoint = {zp})")
        a(f"        val {label} = listOf(" + ", ".join(n["const"] for n in names[kind]) + ")")
    a("    }")
    a("")
    a("    private val interpreter = Interpreter(loadModel(context, assetName))")
    a("")
    a("    init {")
    a("        // A different model file in assets would be fed wrongly: fail here instead.")
    a("        check(interpreter.inputTensorCount == INPUTS.size && interpreter.outputTensorCount == OUTPUTS.size) {")
    a("            \"$assetName does not have the inputs/outputs this ModelRunner was generated for\"")
    a("        }")
    a("    }")
    a("")
    params, doc = _run_params(io, names, KT_ARRAY, lambda d: f"IntArray = {_kt_ints(d)}", "     * @param {} {}")
    a("    /**")
    a("     * Runs the model once; returns every output dequantized to floats, keyed by its signature name.")
    for d in doc:
        a(d)
    a("     */")
    a("    fun run(" + ", ".join(params) + "): Map<String, FloatArray> {")
    dyn = [(t, n) for t, n in zip(io["inputs"], names["inputs"]) if n["shape_param"]]
    if dyn:
        a("        // Dynamic dims: resize before allocation so every buffer and output matches the caller's shape.")
        for t, n in dyn:
            a(f"        interpreter.resizeInput({n['const']}.position, {n['shape_param']})")
    a("        interpreter.allocateTensors()")
    if sig is not None:
        a("        val inputs = HashMap<String, Any>()")
        for t, n in zip(io["inputs"], names["inputs"]):
            shape = n["shape_param"] or f"{n['const']}.shape"
            a(f"        inputs[{n['const']}.name] = pack({n['param']}, {n['const']}, {shape})")
        a("        val outputs = HashMap<String, Any>()")
        a("        for (spec in OUTPUTS) {")
        a("            // Sized from the allocated tensor, so a dynamic output gets its resized length.")
        a("            val bytes = interpreter.getOutputTensorFromSignature(spec.name, SIGNATURE_KEY).numBytes()")
        a("            outputs[spec.name] = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())")
        a("        }")
        a("        interpreter.runSignature(inputs, outputs, SIGNATURE_KEY)")
        a("        return OUTPUTS.associate { it.name to unpack(outputs[it.name] as ByteBuffer, it) }")
    else:
        a("        // No signature in this model: inputs and outputs go by position, in the flatbuffer's order.")
        a("        val inputs = arrayOfNulls<Any>(INPUTS.size)")
        for t, n in zip(io["inputs"], names["inputs"]):
            shape = n["shape_param"] or f"{n['const']}.shape"
            a(f"        inputs[{n['const']}.position] = pack({n['param']}, {n['const']}, {shape})")
        a("        val outputs = HashMap<Int, Any>()")
        a("        for (spec in OUTPUTS) {")
        a("            val bytes = interpreter.getOutputTensor(spec.position).numBytes()")
        a("            outputs[spec.position] = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())")
        a("        }")
        a("        interpreter.runForMultipleInputsOutputs(inputs, outputs)")
        a("        return OUTPUTS.associate { it.name to unpack(outputs[it.position] as ByteBuffer, it) }")
    a("    }")
    a("")
    a("    override fun close() = interpreter.close()")
    a("")
    a(KOTLIN_HELPERS)
    a("}")
    return "\n".join(L) + "\n"


def _dyn_dims(t: dict) -> str:
    return str([i for i, d in enumerate(t["shape_signature"]) if d == -1])



def _run_params(io: dict, names: dict, arrays: dict, shape_type, doc_line: str) -> tuple[list[str], list[str]]:
    """The run function's parameters (one array per input, then a shape per input with dynamic
    dims) and their doc lines, for either language."""
    params, doc = [], []
    for t, n in zip(io["inputs"], names["inputs"]):
        params.append(f"{n['param']}: {arrays[_param_kind(t)]}")
        doc.append(doc_line.format(n["param"], _kt_doc(t)))
    for t, n in zip(io["inputs"], names["inputs"]):
        if n["shape_param"]:
            default = [1 if d == -1 and i == 0 else s for i, (d, s) in enumerate(zip(t["shape_signature"], t["shape"]))]
            params.append(f"{n['shape_param']}: {shape_type(default)}")
            doc.append(doc_line.format(n["shape_param"], f"the shape of {n['param']}: dims {_dyn_dims(t)} are dynamic "
                                       "(-1 in the signature), so the caller gives them; a dynamic batch defaults to 1"))
    return params, doc

def _kt_doc(t: dict) -> str:
    kind = _param_kind(t)
    q = (f", quantized here with scale {_float_lit(t['scale'])} / zero point {t['zero_point']}"
         if t["scale"] is not None else "")
    what = "floats" if kind == "float" else f"{t['dtype']} values"
    return f"{what} for {t['dtype']} tensor shape {t['shape_signature']} (row-major){q}"


KOTLIN_HELPERS = r"""    // Memory-mapped from assets: the .tflite must be stored uncompressed (see build.gradle.kts.snippet).
    private fun loadModel(context: Context, assetName: String): MappedByteBuffer =
        context.assets.openFd(assetName).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { ch ->
                ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    private fun elements(spec: TensorSpec, shape: IntArray, given: Int): Int {
        val n = shape.fold(1) { acc, d -> acc * d }
        require(given == n) { "${spec.name}: expected $n values for shape ${shape.contentToString()}, got $given" }
        return n
    }

    private fun bytesPer(dtype: String): Int = when (dtype) {
        "float32", "int32" -> 4
        "int64" -> 8
        "int16" -> 2
        else -> 1
    }

    // Round half away from zero and clamp, as LiteRT's own Quantize kernel does.
    private fun quantize(v: Float, spec: TensorSpec, lo: Int, hi: Int): Int {
        val r = v / (spec.scale ?: 1f)
        val q = (if (r >= 0f) floor(r + 0.5f) else ceil(r - 0.5f)).toInt() + (spec.zeroPoint ?: 0)
        return q.coerceIn(lo, hi)
    }

    private fun pack(values: FloatArray, spec: TensorSpec, shape: IntArray): ByteBuffer {
        val n = elements(spec, shape, values.size)
        val buf = ByteBuffer.allocateDirect(n * bytesPer(spec.dtype)).order(ByteOrder.nativeOrder())
        when (spec.dtype) {
            "float32" -> values.forEach { buf.putFloat(it) }
            "int8" -> values.forEach { buf.put(quantize(it, spec, -128, 127).toByte()) }
            "uint8" -> values.forEach { buf.put(quantize(it, spec, 0, 255).toByte()) }
            "int16" -> values.forEach { buf.putShort(quantize(it, spec, -32768, 32767).toShort()) }
            else -> throw IllegalArgumentException("${spec.name}: ${spec.dtype} does not take floats")
        }
        buf.rewind()
        return buf
    }

    private fun pack(values: IntArray, spec: TensorSpec, shape: IntArray): ByteBuffer {
        val n = elements(spec, shape, values.size)
        val buf = ByteBuffer.allocateDirect(n * bytesPer(spec.dtype)).order(ByteOrder.nativeOrder())
        when (spec.dtype) {
            "int32" -> values.forEach { buf.putInt(it) }
            "int16" -> values.forEach { buf.putShort(it.toShort()) }
            "int8", "uint8" -> values.forEach { buf.put(it.toByte()) }
            else -> throw IllegalArgumentException("${spec.name}: ${spec.dtype} does not take ints")
        }
        buf.rewind()
        return buf
    }

    private fun pack(values: LongArray, spec: TensorSpec, shape: IntArray): ByteBuffer {
        val n = elements(spec, shape, values.size)
        val buf = ByteBuffer.allocateDirect(n * 8).order(ByteOrder.nativeOrder())
        values.forEach { buf.putLong(it) }
        buf.rewind()
        return buf
    }

    private fun pack(values: BooleanArray, spec: TensorSpec, shape: IntArray): ByteBuffer {
        val n = elements(spec, shape, values.size)
        val buf = ByteBuffer.allocateDirect(n).order(ByteOrder.nativeOrder())
        values.forEach { buf.put(if (it) 1.toByte() else 0.toByte()) }
        buf.rewind()
        return buf
    }

    // Every output comes back as floats: quantized ones dequantized with their own scale/zero point.
    private fun unpack(buf: ByteBuffer, spec: TensorSpec): FloatArray {
        buf.rewind()
        val n = buf.capacity() / bytesPer(spec.dtype)
        val s = spec.scale ?: 1f
        val z = spec.zeroPoint ?: 0
        return FloatArray(n) {
            when (spec.dtype) {
                "float32" -> buf.getFloat()
                "int8" -> (buf.get().toInt() - z) * s
                "uint8" -> ((buf.get().toInt() and 0xFF) - z) * s
                "int16" -> (buf.getShort().toInt() - z) * s
                "int32" -> buf.getInt().toFloat()
                "int64" -> buf.getLong().toFloat()   // beyond 2^24 a float loses precision
                else -> if (buf.get().toInt() != 0) 1f else 0f
            }
        }
    }"""


# ---------------------------------------------------------------- Swift

SWIFT_ARRAY = {"float": "[Float]", "int": "[Int32]", "long": "[Int64]", "bool": "[Bool]"}


def _swift_ints(v) -> str:
    return "[" + ", ".join(str(int(x)) for x in v) + "]"


def _swift(io: dict, model_file: str) -> str:
    names = _names(io, SWIFT_KEYWORDS)
    sig = io["signature_key"]
    stem, dot, ext = model_file.rpartition(".")
    if not dot:
        stem, ext = model_file, ""
    L = []
    a = L.append
    a(f"// Generated by TFLite Lab from {model_file}'s own signature; regenerate it when the model changes.")
    a("// TensorFlowLiteSwift's Interpreter has no signature runner: tensors go by position in the")
    a("// flatbuffer's order, each commented with its signature name.")
    a("")
    a("import Foundation")
    a("import TensorFlowLite")
    a("")
    a("/// One tensor of the model's signature, exactly as the .tflite declares it.")
    a("struct TensorSpec {")
    a("    let name: String             // signature name")
    a("    let tensorName: String       // the flatbuffer tensor's own name")
    a("    let position: Int            // input/output position in the flatbuffer's order")
    a("    let index: Int               // tensor index in the flatbuffer")
    a("    let dtype: String")
    a("    let shape: [Int]             // the flatbuffer shape (batch 1)")
    a("    let shapeSignature: [Int]    // -1 marks a dynamic dim")
    a("    let scale: Float?            // nil: not quantized")
    a("    let zeroPoint: Int?")
    a("}")
    a("")
    a("enum ModelRunnerError: Error {")
    a("    case modelNotFound(String)")
    a("    case wrongModel(String)")
    a("    case wrongCount(String, expected: Int, got: Int)")
    a("}")
    a("")
    a("final class ModelRunner {")
    a(f"    static let signatureKey: String? = {_swift_string(sig) if sig is not None else 'nil'}")
    for kind, label in (("inputs", "inputs"), ("outputs", "outputs")):
        for pos, (t, n) in enumerate(zip(io[kind], names[kind])):
            scale = _float_lit(t["scale"]) if t["scale"] is not None else "nil"
            zp = str(t["zero_point"]) if t["zero_point"] is not None else "nil"
            a(f"    // {kind[:-1]} {pos}: signature name {_swift_string(t['name'])}")
            a(f"    static let {n['const']} = TensorSpec(name: {_swift_string(t['name'])}, "
              f"tensorName: {_swift_string(t['tensor_name'])}, position: {pos}, index: {t['index']}, "
              f"dtype: {_swift_string(t['dtype'])}, shape: {_swift_ints(t['shape'])}, "
              f"shapeSignature: {_swift_ints(t['shape_signature'])}, scale: {scale}, zeroPoint: {zp})")
        a(f"    static let all_{label}: [TensorSpec] = [" + ", ".join(n["const"] for n in names[kind]) + "]")
    a("")
    a("    private let interpreter: Interpreter")
    a("")
    a(f"    /// Loads {model_file} from the app bundle (add it to the target's Copy Bundle Resources).")
    a("    convenience init() throws {")
    a(f"        guard let path = Bundle.main.path(forResource: {_swift_string(stem)}, ofType: {_swift_string(ext)}) else {{")
    a(f"            throw ModelRunnerError.modelNotFound({_swift_string(model_file)})")
    a("        }")
    a("        try self.init(modelPath: path)")
    a("    }")
    a("")
    a("    init(modelPath: String) throws {")
    a("        interpreter = try Interpreter(modelPath: modelPath)")
    a("        // A different model file would be fed wrongly: fail here instead.")
    a("        guard interpreter.inputTensorCount == ModelRunner.all_inputs.count,")
    a("              interpreter.outputTensorCount == ModelRunner.all_outputs.count else {")
    a("            throw ModelRunnerError.wrongModel(modelPath)")
    a("        }")
    a("    }")
    a("")
    params, doc = _run_params(io, names, SWIFT_ARRAY, lambda d: f"[Int] = {_swift_ints(d)}", "    ///   - {}: {}")
    a("    /// Runs the model once; returns every output dequantized to floats, keyed by its signature name.")
    a("    /// - Parameters:")
    for d in doc:
        a(d)
    a("    func run(" + ", ".join(params) + ") throws -> [String: [Float]] {")
    dyn = [(t, n) for t, n in zip(io["inputs"], names["inputs"]) if n["shape_param"]]
    if dyn:
        a("        // Dynamic dims: resize before allocation so every buffer and output matches the caller's shape.")
        for t, n in dyn:
            a(f"        try interpreter.resizeInput(at: {io['inputs'].index(t)}, to: Tensor.Shape({n['shape_param']}))"
              f"  // {_swift_string(t['name'])}")
    a("        try interpreter.allocateTensors()")
    for pos, (t, n) in enumerate(zip(io["inputs"], names["inputs"])):
        shape = n["shape_param"] or f"ModelRunner.{n['const']}.shape"
        a(f"        _ = try interpreter.copy(ModelRunner.pack({n['param']}, ModelRunner.{n['const']}, {shape}), "
          f"toInputAt: {pos})  // {_swift_string(t['name'])}")
    a("        try interpreter.invoke()")
    a("        var result: [String: [Float]] = [:]")
    for pos, (t, n) in enumerate(zip(io["outputs"], names["outputs"])):
        a(f"        result[ModelRunner.{n['const']}.name] = try ModelRunner.unpack(interpreter.output(at: {pos}).data, "
          f"ModelRunner.{n['const']})  // {_swift_string(t['name'])}")
    a("        return result")
    a("    }")
    a("")
    a(SWIFT_HELPERS)
    a("}")
    return "\n".join(L) + "\n"


SWIFT_HELPERS = r"""    private static func checkCount(_ spec: TensorSpec, _ shape: [Int], _ given: Int) throws {
        let n = shape.reduce(1, *)
        guard given == n else { throw ModelRunnerError.wrongCount(spec.name, expected: n, got: given) }
    }

    private static func bytes<T>(_ values: [T]) -> Data {
        return values.withUnsafeBufferPointer { Data(buffer: $0) }   // host order: little-endian, as LiteRT
    }

    private static func array<T: Numeric>(_ data: Data, _ type: T.Type) -> [T] {
        var out = [T](repeating: 0, count: data.count / MemoryLayout<T>.stride)
        _ = out.withUnsafeMutableBytes { data.copyBytes(to: $0) }       // copy: Data may be unaligned
        return out
    }

    // Swift's rounded() is half away from zero, as LiteRT's own Quantize kernel; then clamp.
    private static func quantize(_ v: Float, _ spec: TensorSpec, _ lo: Int, _ hi: Int) -> Int {
        // Clamped as a Float first: Int(_:) traps on a value out of range or NaN.
        let r = (v / (spec.scale ?? 1)).rounded() + Float(spec.zeroPoint ?? 0)
        if r.isNaN { return spec.zeroPoint ?? 0 }
        return Int(Swift.min(Swift.max(r, Float(lo)), Float(hi)))
    }

    static func pack(_ values: [Float], _ spec: TensorSpec, _ shape: [Int]) throws -> Data {
        try checkCount(spec, shape, values.count)
        switch spec.dtype {
        case "float32": return bytes(values)
        case "int8": return bytes(values.map { Int8(quantize($0, spec, -128, 127)) })
        case "uint8": return bytes(values.map { UInt8(quantize($0, spec, 0, 255)) })
        case "int16": return bytes(values.map { Int16(quantize($0, spec, -32768, 32767)) })
        default: throw ModelRunnerError.wrongModel("\(spec.name): \(spec.dtype) does not take floats")
        }
    }

    static func pack(_ values: [Int32], _ spec: TensorSpec, _ shape: [Int]) throws -> Data {
        try checkCount(spec, shape, values.count)
        switch spec.dtype {
        case "int32": return bytes(values)
        case "int16": return bytes(values.map { Int16(truncatingIfNeeded: $0) })
        case "int8": return bytes(values.map { Int8(truncatingIfNeeded: $0) })
        case "uint8": return bytes(values.map { UInt8(truncatingIfNeeded: $0) })
        default: throw ModelRunnerError.wrongModel("\(spec.name): \(spec.dtype) does not take ints")
        }
    }

    static func pack(_ values: [Int64], _ spec: TensorSpec, _ shape: [Int]) throws -> Data {
        try checkCount(spec, shape, values.count)
        return bytes(values)
    }

    static func pack(_ values: [Bool], _ spec: TensorSpec, _ shape: [Int]) throws -> Data {
        try checkCount(spec, shape, values.count)
        return Data(values.map { $0 ? UInt8(1) : UInt8(0) })
    }

    // Every output comes back as floats: quantized ones dequantized with their own scale/zero point.
    static func unpack(_ data: Data, _ spec: TensorSpec) -> [Float] {
        let s = spec.scale ?? 1
        let z = Float(spec.zeroPoint ?? 0)
        switch spec.dtype {
        case "float32": return array(data, Float.self)
        case "int8": return array(data, Int8.self).map { (Float($0) - z) * s }
        case "uint8": return array(data, UInt8.self).map { (Float($0) - z) * s }
        case "int16": return array(data, Int16.self).map { (Float($0) - z) * s }
        case "int32": return array(data, Int32.self).map { Float($0) }
        case "int64": return array(data, Int64.self).map { Float($0) }   // beyond 2^24 a float loses precision
        default: return array(data, UInt8.self).map { $0 != 0 ? 1 : 0 }
        }
    }"""


# ---------------------------------------------------------------- READMEs and snippets

def _io_table(io: dict) -> str:
    rows = ["| | position | signature name | tensor | dtype | shape signature | scale / zero point |",
            "|---|---|---|---|---|---|---|"]
    for kind in ("inputs", "outputs"):
        for pos, t in enumerate(io[kind]):
            q = f"{_float_lit(t['scale'])} / {t['zero_point']}" if t["scale"] is not None else "-"
            rows.append(f"| {kind[:-1]} | {pos} | `{t['name']}` | `{t['tensor_name']}` | {t['dtype']} | "
                        f"{t['shape_signature']} | {q} |")
    return "\n".join(rows)


def _call_example(io: dict, names: dict, lang: str) -> str:
    args = []
    for t, n in zip(io["inputs"], names["inputs"]):
        k = _param_kind(t)
        count = int(np.prod([1 if d == -1 and i == 0 else s for i, (d, s)
                             in enumerate(zip(t["shape_signature"], t["shape"]))]))
        if lang == "kt":
            ctor = {"float": "FloatArray", "int": "IntArray", "long": "LongArray", "bool": "BooleanArray"}[k]
            args.append(f"{n['param']} = {ctor}({count})")
        else:
            zero = {"float": "0", "int": "0", "long": "0", "bool": "false"}[k]
            args.append(f"{n['param']}: Array(repeating: {zero}, count: {count})")
    first = io["outputs"][0]["name"] if io["outputs"] else ""
    if lang == "kt":
        return (f"val runner = ModelRunner(context)              // loads assets/<model>\n"
                f"val out: Map<String, FloatArray> = runner.run({', '.join(args)})\n"
                f"val first = out[{_kt_string(first)}]!!\nrunner.close()")
    return (f"let runner = try ModelRunner()                  // loads <model> from the app bundle\n"
            f"let out: [String: [Float]] = try runner.run({', '.join(args)})\n"
            f"let first = out[{_swift_string(first)}]!")


def _android_readme(io: dict, model_file: str) -> str:
    names = _names(io, KOTLIN_KEYWORDS)
    dyn = [t["name"] for t in io["inputs"] if -1 in t["shape_signature"]]
    how = ("`interpreter.runSignature(inputs, outputs, SIGNATURE_KEY)` keyed by the signature's names "
           f"(signature `{io['signature_key']}`)" if io["signature_key"] is not None else
           "`interpreter.runForMultipleInputsOutputs` by position: this model has no signature, so the "
           "flatbuffer's input/output order is all there is")
    return f"""# Android bundle: `{model_file}` with LiteRT

`ModelRunner.kt` runs `{model_file}` with LiteRT's `org.tensorflow.lite.Interpreter`, via {how}.
Every constant in it (names, positions, dtypes, shapes, quantization) was read from this .tflite's own
signature by TFLite Lab; regenerate it if the model changes.

## Setup

1. Copy `{model_file}` to `app/src/main/assets/`.
2. Add the lines of `build.gradle.kts.snippet` to `app/build.gradle.kts`: the dependency
   `com.google.ai.edge.litert:litert:{LITERT_ANDROID_VERSION}`, and `noCompress` so the model can be memory-mapped.
3. Copy `ModelRunner.kt` into your sources and add your `package` line.

Version used: `{LITERT_ANDROID_VERSION}`, from {LITERT_ANDROID_SOURCE}. The 2.x artifacts (same coordinates)
also ship the Interpreter API, CPU only, next to the newer `CompiledModel` API; this code uses only
Interpreter calls present in both.

## Call site

```kotlin
{_call_example(io, names, "kt")}
```

Inputs are floats; an int8/uint8/int16 input is quantized with its own scale and zero point inside
`run`. Integer (non-quantized) inputs take `IntArray` (int32) or `LongArray` (int64). Every output comes
back dequantized as a `FloatArray` in a map keyed by signature name.
{"" if not dyn else chr(10) + "Dynamic dims: " + ", ".join(f"`{d}`" for d in dyn) + " take their shape as a `run` parameter (the input is resized before allocation); a dynamic batch defaults to 1." + chr(10)}
## Signature

{_io_table(io)}
"""


def _ios_readme(io: dict, model_file: str) -> str:
    names = _names(io, SWIFT_KEYWORDS)
    dyn = [t["name"] for t in io["inputs"] if -1 in t["shape_signature"]]
    return f"""# iOS bundle: `{model_file}` with TensorFlowLiteSwift

`ModelRunner.swift` runs `{model_file}` with the `{IOS_POD}` pod's `Interpreter` (`Interpreter(modelPath:)`,
`allocateTensors()`, `copy(_:toInputAt:)`, `invoke()`, `output(at:)`). That API has no signature runner, so
tensors go by position in the flatbuffer's order; each position is commented with its signature name
(signature `{io['signature_key']}`). Every constant was read from this .tflite by TFLite Lab.

## Setup

1. Add the line of `Podfile.snippet` to your `Podfile` and run `pod install` (open the `.xcworkspace`).
2. Add `{model_file}` to the app target (Copy Bundle Resources) and `ModelRunner.swift` to its sources.

Pod used: `{IOS_POD}`, as LiteRT's iOS quickstart documents it ({IOS_POD_SOURCE}); its module is `import TensorFlowLite`. The snippet leaves the
version unpinned (CocoaPods takes the latest stable, and `Podfile.lock` records it). Newer LiteRT naming:
public Podfiles use a `LiteRTSwift` pod (`pod 'LiteRTSwift', '~> 0.0.1-nightly'`); Google's iOS quickstart
still documents `TensorFlowLiteSwift`, and TFLite Lab has not checked `LiteRTSwift`'s module name or API
against this code, so it is not used here.

## Call site

```swift
{_call_example(io, names, "swift")}
```

Inputs are `[Float]`; an int8/uint8/int16 input is quantized with its own scale and zero point inside
`run`. Integer (non-quantized) inputs take `[Int32]` or `[Int64]`. Every output comes back dequantized
as `[Float]`, keyed by signature name.
{"" if not dyn else chr(10) + "Dynamic dims: " + ", ".join(f"`{d}`" for d in dyn) + " take their shape as a `run` parameter (`resizeInput(at:to:)` before `allocateTensors()`); a dynamic batch defaults to 1." + chr(10)}
## Signature

{_io_table(io)}
"""


GRADLE_SNIPPET = f"""// app/build.gradle.kts
android {{
    // The model is memory-mapped from assets, which needs it stored uncompressed.
    androidResources {{
        noCompress += "tflite"
    }}
}}

dependencies {{
    implementation("com.google.ai.edge.litert:litert:{LITERT_ANDROID_VERSION}")
}}
"""

PODFILE_SNIPPET = f"""# Podfile (inside your app target)
use_frameworks!
pod '{IOS_POD}'
"""


# ---------------------------------------------------------------- writing

def write_mobile_bundles(tflite: bytes, out_dir, *, model_file: str = "model.tflite") -> dict:
    """Writes out_dir/android/ and out_dir/ios/ (each with the model copied in, the code, a README.md);
    returns {"android": str(path), "ios": str(path)}."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model_file or ""):
        raise ValueError(f"model_file must be a plain file name, got {model_file!r}")
    io = mobile_io(tflite)
    out = Path(out_dir)
    android, ios = out / "android", out / "ios"
    for d in (android, ios):
        d.mkdir(parents=True, exist_ok=True)
        (d / model_file).write_bytes(bytes(tflite))
    (android / "ModelRunner.kt").write_text(_kotlin(io, model_file), encoding="utf-8")
    (android / "build.gradle.kts.snippet").write_text(GRADLE_SNIPPET, encoding="utf-8")
    (android / "README.md").write_text(_android_readme(io, model_file), encoding="utf-8")
    (ios / "ModelRunner.swift").write_text(_swift(io, model_file), encoding="utf-8")
    (ios / "Podfile.snippet").write_text(PODFILE_SNIPPET, encoding="utf-8")
    (ios / "README.md").write_text(_ios_readme(io, model_file), encoding="utf-8")
    return {"android": str(android), "ios": str(ios)}


def mobile_job(tflite_path: str, store_root: str | None = None, progress=None) -> dict:
    """Worker job: the Android and iOS bundles of a .tflite, in the store (keyed by its bytes)."""
    import hashlib
    from ..store import Store
    data = Path(tflite_path).read_bytes()
    out = Store(store_root).root / "mobile" / hashlib.sha256(data).hexdigest()[:24]
    if (out / "android" / "ModelRunner.kt").is_file() and (out / "ios" / "ModelRunner.swift").is_file():
        return {"android": str(out / "android"), "ios": str(out / "ios")}
    return write_mobile_bundles(data, out)
