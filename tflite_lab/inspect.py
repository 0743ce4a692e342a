"""Stage 9: what is inside a .tflite: operators, tensors, and what they mean for deployment.

Reads the flatbuffer with LiteRT's generated schema, so no TensorFlow import is needed.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from .errors import SourceError

_TYPE_NAMES = None


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as s
    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def _tensor_types() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as s
    return {v: k.lower() for k, v in vars(s.TensorType).items() if not k.startswith("_")}


@dataclass
class Inspection:
    size_bytes: int
    operators: dict[str, int]                    # op name -> count (main subgraph and others)
    tensors: list[dict] = field(default_factory=list)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    flex_ops: list[str] = field(default_factory=list)
    custom_ops: list[str] = field(default_factory=list)
    dynamic_inputs: list[str] = field(default_factory=list)
    quantized_tensors: int = 0
    subgraphs: int = 1
    findings: list[str] = field(default_factory=list)   # deployment problems, shown as warnings
    notes: list[str] = field(default_factory=list)      # facts worth knowing, not problems
    # One row per op: {"op", "count", "kind": builtin|custom|flex, "runs": True/False/None, "why"}.
    op_table: list[dict] = field(default_factory=list)
    refused: str | None = None                          # the refusal (refuse_unsafe's message), or None

    @property
    def blocking_ops(self) -> list[str]:
        return [r["op"] for r in self.op_table if r["runs"] is False and r["kind"] != "builtin"]

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("tensors")
        d["num_tensors"] = len(self.tensors)
        d["blocking_ops"] = self.blocking_ops
        return d


def _corrupt(name: str, e: BaseException) -> SourceError:
    why = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
    return SourceError(f"{name} is a truncated or corrupt .tflite flatbuffer (parsing failed: {why}).")


def _parse(tflite: bytes, name: str = "The .tflite"):
    from ai_edge_litert import schema_py_generated as s
    if len(tflite) < 8 or tflite[4:8] != b"TFL3":
        raise SourceError(f"{name} is not a .tflite flatbuffer (no 'TFL3' identifier).")
    try:
        model = s.Model.GetRootAsModel(tflite, 0)
        model.SubgraphsLength()
        return model
    except Exception as e:
        raise _corrupt(name, e) from None


def op_names(tflite: bytes, name: str = "The .tflite") -> list[str]:
    model = _parse(tflite, name)
    names = _builtin_names()
    out = []
    try:
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            custom = oc.CustomCode()
            out.append(custom.decode() if custom else names.get(code, f"BUILTIN_{code}"))
    except Exception as e:
        raise _corrupt(name, e) from None
    return out


def _refusal(insp: "Inspection", name: str) -> str | None:
    from .op_allowlist import RISKS
    rows = [r for r in insp.op_table if r["op"] in insp.blocking_ops]
    if not rows:
        return None
    parts = [f"{r['op']} ({r['kind'].replace('flex', 'Flex')} op: "
             f"{RISKS.get(r['op'].removeprefix('Flex') if r['kind'] == 'flex' else r['op'], r['why'])})" for r in rows]
    return (f"{name} is refused: only builtin ops run here, and custom ops the installed LiteRT has a kernel for; "
            f"it uses {'; '.join(parts[:4])}{' ...' if len(parts) > 4 else ''}.")


def refuse_unsafe(insp: "Inspection", name: str = "The .tflite") -> None:
    """Refuse Flex (Select-TF) ops and custom ops the installed LiteRT has no kernel for, naming each.

    LiteRT here has no Flex delegate; a Flex op's TensorFlow kernel (e.g. FlexReadFile) would touch
    the host wherever a delegate exists, so the refusal says what it does. Custom ops with a kernel
    in LiteRT (its op resolver, or its default XNNPACK delegate on this model) run like builtins.
    """
    message = _refusal(insp, name)
    if message:
        raise SourceError(message, detail=op_table_text(insp))


def op_table_text(insp: "Inspection") -> str:
    """The op table as lines: op, count, whether it runs here and why (CLI inspect, error details)."""
    width = max([len(r["op"]) for r in insp.op_table] + [8])
    runs = {True: "runs", False: "BLOCKS", None: "?"}
    return "\n".join(f"{r['op']:<{width}} x{r['count']:<4} {runs[r['runs']]:<6} {r['why']}" for r in insp.op_table)


# Custom op name -> whether the installed LiteRT's op resolver has a kernel for it; probed once per
# name per process (about a millisecond each), never typed in by hand.
_RESOLVER_KERNELS: dict[str, bool] = {}
PROBE_MS: list[float] = []      # how long each probe took (the report cites it)


def _probe_model(op: str) -> bytes:
    """A .tflite of one node of custom op ``op`` on a [1] float tensor: our own bytes, only the name
    comes from the model. Its options are zeros followed by an empty flexbuffer map, so a kernel that
    reads a struct or a map from them gets zeros or nothing (a kernel reading none of 0 bytes would
    crash); its Prepare then fails on the tensors, which is fine: only 'unresolved' matters."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s
    from flatbuffers import flexbuffers
    m = s.ModelT()
    m.version = 3
    oc = s.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version = s.BuiltinOperator.CUSTOM, 32, op, 1
    m.operatorCodes, m.buffers = [oc], [s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors = []
    for i in range(2):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = [1], s.TensorType.FLOAT32, 0, f"t{i}"
        sg.tensors.append(t)
    node = s.OperatorT()
    node.opcodeIndex, node.inputs, node.outputs = 0, [0], [1]
    node.customOptions = list(bytes(64) + bytes(flexbuffers.Dumps({})))
    sg.inputs, sg.outputs, sg.operators = [0], [1], [node]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def resolver_has_kernel(op: str) -> bool:
    """Whether the installed LiteRT's op resolver registers a kernel for custom op ``op``: it answers
    "Encountered unresolved custom op" when preparing a node of that name otherwise."""
    if op not in _RESOLVER_KERNELS:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        t0 = time.perf_counter()
        try:
            it = Interpreter(model_content=_probe_model(op),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            it.allocate_tensors()
            found = True
        except Exception as e:
            found = f"unresolved custom op: {op}." not in str(e)
        _RESOLVER_KERNELS[op] = found
        PROBE_MS.append((time.perf_counter() - t0) * 1e3)
    return _RESOLVER_KERNELS[op]


def _model_check(tflite: bytes, ops: list[str]) -> dict[str, tuple[bool, str]]:
    """Ask LiteRT on the model itself (as TFLiteModel loads it: default resolver and XNNPACK delegate)
    about custom ops its op resolver has no kernel for: the delegate takes some (MediaPipe's
    Convolution2DTransposeBias, MaxPoolingWithArgmax2D, MaxUnpooling2D) when their nodes are valid."""
    from ai_edge_litert.interpreter import Interpreter
    try:
        Interpreter(model_content=tflite).allocate_tensors()
    except Exception as e:
        msg = str(e)
        first = " ".join(msg.split())[:160]
        named = [op for op in ops if f"unresolved custom op: {op}." in msg]
        out = {}
        for op in ops:
            if op in named:
                out[op] = (False, "the installed LiteRT has no kernel for it: LiteRT reports it unresolved")
            elif named:
                out[op] = (False, "the installed LiteRT's op resolver has no kernel for it (not known whether its "
                                  f"XNNPACK delegate takes it: LiteRT stopped at {named[0]})")
            else:
                out[op] = (False, "the installed LiteRT's op resolver has no kernel for it, and LiteRT could not "
                                  f"prepare the model to tell whether its XNNPACK delegate takes it ({first})")
        return out
    return {op: (True, "run by LiteRT's XNNPACK delegate in this model, its op resolver has no kernel for it")
            for op in ops}


_ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2,
             "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1, "complex64": 8}


def refuse_oversized(insp: "Inspection", name: str = "The .tflite", limits=None) -> None:
    """Refuse, before LiteRT allocates anything, a model whose declared tensors are absurdly large."""
    from .config import Limits
    from .errors import SignatureError
    limits = limits or Limits.from_env()
    worst, total = None, 0
    for t in insp.tensors:
        n = _ITEMSIZE.get(t["dtype"], 4)
        for d in t["shape"]:
            n *= max(int(d), 1)
        total += n
        if worst is None or n > worst[0]:
            worst = (n, t)
    if worst and worst[0] > limits.input_sample_mb * 2**20:
        n, t = worst
        raise SignatureError(f"{name} declares tensor '{t['name']}' of shape {tuple(t['shape'])} {t['dtype']}: "
                             f"{n / 2**20:,.0f} MB, more than the limit of {limits.input_sample_mb:.0f} MB; "
                             "refused before allocating.")
    if total > limits.job_memory_mb * 2**20:
        raise SignatureError(f"{name} declares {total / 2**20:,.0f} MB of tensors, more than the memory limit of "
                             f"{limits.job_memory_mb:,.0f} MB; refused before allocating.")


def _op_kinds(model, codes: list[str]) -> dict[str, str]:
    from ai_edge_litert import schema_py_generated as s
    kinds = {}
    for i, c in enumerate(codes):
        oc = model.OperatorCodes(i)
        custom = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == s.BuiltinOperator.CUSTOM or oc.CustomCode()
        kinds[c] = ("flex" if c.startswith("Flex") else "custom") if custom else "builtin"
    return kinds


def inspect_tflite(tflite: bytes, name: str = "The .tflite", *, probe: bool = True) -> Inspection:
    """Operators with counts, tensors with shapes/dtypes/quantization, and deployment findings.

    With custom ops, ``probe`` asks the installed LiteRT which have kernels (C++: worker processes
    only, like every LiteRT call on uploaded bytes); ``op_table`` says per op whether it runs here.
    """
    model = _parse(tflite, name)
    codes = op_names(tflite, name)
    types = _tensor_types()
    ops: Counter = Counter()
    tensors, inputs, outputs = [], [], []
    quantized = 0
    try:
        for g in range(model.SubgraphsLength()):
            sg = model.Subgraphs(g)
            for i in range(sg.OperatorsLength()):
                ops[codes[sg.Operators(i).OpcodeIndex()]] += 1
            for i in range(sg.TensorsLength()):
                t = sg.Tensors(i)
                q = t.Quantization()
                scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
                if scale is not None:
                    quantized += 1
                shape_sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
                rec = {"subgraph": g, "index": i, "name": (t.Name() or b"").decode("utf-8", "replace"),
                       "shape": [int(x) for x in (t.ShapeAsNumpy() if t.ShapeLength() else [])],
                       "shape_signature": [int(x) for x in (shape_sig if not isinstance(shape_sig, int) else [])],
                       "dtype": types.get(t.Type(), str(t.Type())),
                       "quantized": scale is not None,
                       "scale": float(scale[0]) if scale is not None and len(scale) == 1 else None}
                tensors.append(rec)
            if g == 0:
                inputs = [tensors[int(j)] for j in (sg.InputsAsNumpy() if sg.InputsLength() else [])]
                outputs = [tensors[int(j)] for j in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]
    except SourceError:
        raise
    except Exception as e:
        raise _corrupt(name, e) from None
    try:
        kinds = _op_kinds(model, codes)
    except Exception as e:
        raise _corrupt(name, e) from None
    flex = sorted({c for c in codes if kinds[c] == "flex"})
    custom = sorted({c for c in codes if kinds[c] == "custom"})
    dynamic = [t["name"] for t in inputs if any(d == -1 for d in t["shape_signature"][1:])]
    batch_dynamic = [t["name"] for t in inputs if t["shape_signature"][:1] == [-1]]
    findings = []
    if flex:
        findings.append(f"Select-TF (Flex) ops {', '.join(flex)}: LiteRT cannot run them without the Flex delegate, "
                        "which adds megabytes to the app and is unavailable on microcontrollers.")
    if custom:
        findings.append(f"Custom ops {', '.join(custom)}: the app's LiteRT must provide their kernels (the "
                        "default op resolver or XNNPACK delegate for those that run here), or the model will not load.")
    if dynamic:
        findings.append(f"Inputs with dynamic non-batch dims ({', '.join(dynamic)}): call resize_tensor_input "
                        "before allocate_tensors; some delegates need static shapes.")
    notes = []
    if batch_dynamic:
        notes.append("Dynamic batch: stored as 1; resize the input tensor to run batches.")
    if quantized and all(t["dtype"] in ("int8", "uint8", "int16", "int32") for t in inputs + outputs):
        notes.append("Integer model I/O: quantize inputs and dequantize outputs with each tensor's scale and zero point.")
    insp = Inspection(len(tflite), dict(ops.most_common()), tensors, inputs, outputs, flex, custom,
                      dynamic, quantized, model.SubgraphsLength(), findings, notes)
    insp.op_table = _op_table(tflite, insp, kinds, name, probe)
    insp.refused = _refusal(insp, name)
    for r in insp.op_table:
        if r["kind"] == "custom" and r["runs"]:
            notes.append(f"Custom op {r['op']} runs here: {r['why']}.")
    return insp


def _op_table(tflite: bytes, insp: Inspection, kinds: dict[str, str], name: str, probe: bool) -> list[dict]:
    from .graph_policy import NO_BUILTIN
    from .op_allowlist import RISKS
    status: dict[str, tuple] = {}
    pending = []
    for op in insp.operators:
        kind = kinds.get(op, "builtin")
        if kind == "builtin":
            status[op] = ((None, "builtin code unknown to the installed LiteRT's schema") if op.startswith("BUILTIN_")
                          else (True, "TFLite builtin kernel"))
        elif kind == "flex":
            status[op] = (False, f"{RISKS.get(op.removeprefix('Flex'), NO_BUILTIN)}; no Flex delegate here")
        elif not probe:
            status[op] = (None, "custom op, not checked")
        elif resolver_has_kernel(op):
            status[op] = (True, "run by the kernel registered in the installed LiteRT")
        else:
            pending.append(op)
    if pending:
        # Never load a model with Flex ops, nor one too large to allocate (refuse_oversized says why).
        oversized = None
        if not insp.flex_ops:
            try:
                refuse_oversized(insp, name)
            except Exception as e:   # noqa: BLE001 - a SignatureError; its message is the reason
                oversized = str(e)
        if insp.flex_ops or oversized:
            why = "its Flex ops refuse the model" if insp.flex_ops else "its tensors are too large"
            status.update({op: (False, f"the installed LiteRT's op resolver has no kernel for it (not loaded "
                                       f"to ask its XNNPACK delegate: {why})") for op in pending})
        else:
            status.update(_model_check(tflite, pending))
    return [{"op": op, "count": n, "kind": kinds.get(op, "builtin"), "runs": status[op][0], "why": status[op][1]}
            for op, n in insp.operators.items()]


# What each recipe leaves in a .tflite when it took effect: a tensor of this dtype.
RECIPE_DTYPES = {"dynamic": ("int8",), "float16": ("float16",), "int8": ("int8", "uint8"), "int16x8": ("int16",)}


def recipe_not_applied(insp: Inspection, optimization: str) -> str | None:
    """Why a quantizing recipe left the model as float32, or None when it took effect.

    The converter applies a recipe silently where it does not pay: dynamic range skips weight
    tensors under 1024 elements, so on a small model it produces the float model unchanged.
    """
    wanted = RECIPE_DTYPES.get(optimization)
    if not wanted or any(t["dtype"] in wanted for t in insp.tensors):
        return None
    why = (" TFLite quantizes only weight tensors of 1024 elements or more, and this model has none."
           if optimization == "dynamic" else "")
    return (f"The {optimization} recipe changed nothing: the .tflite has no {'/'.join(wanted)} tensor, so it is the "
            f"float32 model.{why}")


def analyzer_report(tflite: bytes) -> str:
    """TensorFlow's own Analyzer text (it prints to stdout, so capture it)."""
    import tensorflow as tf
    from .capture import capture_output
    with capture_output() as cap:
        tf.lite.experimental.Analyzer.analyze(model_content=tflite)
    return cap.text


def op_graph(tflite: bytes, name: str = "The .tflite") -> list[dict]:
    """The main subgraph's operators in execution order: ``{"index", "op", "inputs", "outputs",
    "output_dtypes", "input_dtypes", "quant"}`` with tensor *names* (inputs that are constants have
    ``const`` in ``const_inputs``) and the first output's scale/zero point when it is quantized."""
    model = _parse(tflite, name)
    codes = op_names(tflite, name)
    types = _tensor_types()
    try:
        sg = model.Subgraphs(0)
        buffers_with_data = set()
        for b in range(model.BuffersLength()):
            buf = model.Buffers(b)
            if buf.DataLength() or buf.Size():
                buffers_with_data.add(b)

        def tensor(j: int) -> dict:
            t = sg.Tensors(j)
            q = t.Quantization()
            scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
            zp = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else None
            return {"name": (t.Name() or b"").decode("utf-8", "replace"), "dtype": types.get(t.Type(), str(t.Type())),
                    "const": t.Buffer() in buffers_with_data,
                    "scale": [float(x) for x in scale[:4]] if scale is not None else None,
                    "channels": int(len(scale)) if scale is not None else 0,
                    "zero_point": int(zp[0]) if zp is not None else None}

        ops = []
        for i in range(sg.OperatorsLength()):
            o = sg.Operators(i)
            ins = [tensor(int(j)) for j in (o.InputsAsNumpy() if o.InputsLength() else []) if j >= 0]
            outs = [tensor(int(j)) for j in (o.OutputsAsNumpy() if o.OutputsLength() else []) if j >= 0]
            ops.append({"index": i, "op": codes[o.OpcodeIndex()],
                        "inputs": [t["name"] for t in ins if not t["const"]],
                        "const_inputs": [{"name": t["name"], "dtype": t["dtype"]} for t in ins if t["const"]],
                        "input_dtypes": [t["dtype"] for t in ins if not t["const"]],
                        "outputs": [t["name"] for t in outs], "output_dtypes": [t["dtype"] for t in outs],
                        "quant": ({"scale": outs[0]["scale"], "zero_point": outs[0]["zero_point"],
                                   "channels": outs[0]["channels"]} if outs and outs[0]["scale"] else None)})
        return ops
    except SourceError:
        raise
    except Exception as e:
        raise _corrupt(name, e) from None


LOW_PRECISION = ("int8", "uint8", "int16", "int4", "float16")


def float_ops(ops: list[dict]) -> list[dict]:
    """Compute ops that run fully in float in a quantized model: float output and no low-precision
    weights, either stored in the op or dequantized from a constant just before it (dynamic range,
    float16). QUANTIZE/DEQUANTIZE are the glue, not counted."""
    glue = {"QUANTIZE", "DEQUANTIZE"}
    dequantized_consts = {n for o in ops if o["op"] == "DEQUANTIZE" and not o["inputs"]
                          and any(c["dtype"] in LOW_PRECISION for c in o["const_inputs"]) for n in o["outputs"]}
    return [o for o in ops if o["op"] not in glue and o["output_dtypes"]
            and o["output_dtypes"][0] in ("float32", "float16")
            and not any(c["dtype"] in LOW_PRECISION for c in o["const_inputs"])
            and not any(i in dequantized_consts for i in o["inputs"])]
