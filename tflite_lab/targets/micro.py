"""The ``micro`` target: the cell's ``.tflite`` on TensorFlow Lite Micro's real C++ kernels.

PyPI ``tflite-micro`` builds the same interpreter and kernels as a device (for x86). Everything
that touches it runs in a child process (``run_isolated``): TFLM is C++ on untrusted bytes, and an
arena that is too small for the interpreter's own structures segfaults it (measured: 16-400 bytes
on a 7 KB model). Facts and traps: ../shared/EDGE_NOTES.md.

What the worker side does: static figures from the flatbuffer (ops, MACs, flash), one child that
runs every sample on TFLM and LiteRT (outputs, recorded arena, vs LiteRT, first differing op), one
child that searches the smallest arena (restarted past a crashing probe), then metrics with the
project's own ``metrics`` code, the board fit and the C++ bundle.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .base import DOES_NOT_FIT, DOES_NOT_RUN, IsolatedCrash, TargetInput, TargetReport, run_isolated
from .micro_bundle import resolver_name

NAME = "micro"
HYBRID = "TFLM has no hybrid kernels: use int8"
ARENA_ALIGN = 16
RUN_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------- flatbuffer (no TFLM, no TF)

def graph(tflite: bytes) -> dict:
    """Main subgraph: ``ops`` in execution order (op name, input/output tensor indices) and
    ``tensors`` (name, shape, dtype, const, scale, zero_point); subgraph inputs/outputs."""
    from ai_edge_litert import schema_py_generated as s
    from ..inspect import _builtin_names, _tensor_types, op_names
    codes = op_names(tflite)
    types = _tensor_types()
    model = s.Model.GetRootAsModel(tflite, 0)
    sg = model.Subgraphs(0)
    with_data = {b for b in range(model.BuffersLength())
                 if model.Buffers(b).DataLength() or model.Buffers(b).Size()}
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        q = t.Quantization()
        scale = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else None
        zp = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else None
        tensors.append({"index": i, "name": (t.Name() or b"").decode("utf-8", "replace"),
                        "shape": [int(x) for x in (t.ShapeAsNumpy() if t.ShapeLength() else [])],
                        "dtype": types.get(t.Type(), str(t.Type())), "const": t.Buffer() in with_data,
                        "scale": float(scale[0]) if scale is not None and len(scale) == 1 else None,
                        "zero_point": int(zp[0]) if zp is not None and len(zp) == 1 else None})
    ops = []
    for i in range(sg.OperatorsLength()):
        o = sg.Operators(i)
        ops.append({"index": i, "op": codes[o.OpcodeIndex()],
                    "inputs": [int(j) for j in (o.InputsAsNumpy() if o.InputsLength() else [])],
                    "outputs": [int(j) for j in (o.OutputsAsNumpy() if o.OutputsLength() else [])]})
    _ = _builtin_names
    return {"ops": ops, "tensors": tensors,
            "inputs": [int(j) for j in (sg.InputsAsNumpy() if sg.InputsLength() else [])],
            "outputs": [int(j) for j in (sg.OutputsAsNumpy() if sg.OutputsLength() else [])]}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def op_macs(op: dict, tensors: list[dict]) -> int:
    """Multiply-accumulates of one op from its tensors' shapes (0 for ops that do not multiply-
    accumulate: elementwise, pooling, reshapes)."""
    t = lambda j: tensors[j]["shape"] if 0 <= j < len(tensors) else []  # noqa: E731
    ins, outs = op["inputs"], op["outputs"]
    if not outs:
        return 0
    out = t(outs[0])
    name = op["op"]
    if name in ("CONV_2D", "CONV_3D") and len(ins) > 1:
        w = t(ins[1])                                  # [Cout, KH, KW, Cin] (3D: [KD, KH, KW, Cin, Cout])
        k = _numel(w[1:]) if name == "CONV_2D" else _numel(w[:-1])
        return _numel(out) * k
    if name == "DEPTHWISE_CONV_2D" and len(ins) > 1:
        w = t(ins[1])                                  # [1, KH, KW, Cout]
        return _numel(out) * (_numel(w[1:3]) if len(w) >= 3 else 1)
    if name == "FULLY_CONNECTED" and len(ins) > 1:
        w = t(ins[1])                                  # [units, depth]
        return _numel(out) * (int(w[-1]) if w else 1)
    if name == "BATCH_MATMUL" and len(ins) > 1:
        a = t(ins[0])
        return _numel(out) * (int(a[-1]) if a else 1)
    if name == "TRANSPOSE_CONV" and len(ins) > 2:
        w, x = t(ins[1]), t(ins[2])                    # w [Cout, KH, KW, Cin], x [N, H, W, Cin]
        return _numel(x) * _numel(w[:3])
    return 0


def macs(g: dict) -> dict:
    per_op = [{"index": o["index"], "op": o["op"], "macs": op_macs(o, g["tensors"])} for o in g["ops"]]
    by_type: dict[str, int] = {}
    for o in per_op:
        by_type[o["op"]] = by_type.get(o["op"], 0) + o["macs"]
    return {"total": sum(o["macs"] for o in per_op), "by_type": by_type,
            "per_op": [o for o in per_op if o["macs"]],
            "how": "counted from the flatbuffer's shapes: CONV_2D out x KH*KW*Cin, DEPTHWISE_CONV_2D out x KH*KW, "
                   "FULLY_CONNECTED out x depth, BATCH_MATMUL out x K, TRANSPOSE_CONV in x KH*KW*Cout; other ops 0"}


def layer_of(g: dict, op_index: int) -> str | None:
    """The Keras layer an op came from, read from its first output tensor's name."""
    if not 0 <= op_index < len(g["ops"]) or not g["ops"][op_index]["outputs"]:
        return None
    name = g["tensors"][g["ops"][op_index]["outputs"][0]]["name"].split(";")[0]
    parts = [p for p in name.split("/") if p]
    if not parts:
        return None
    return parts[1] if len(parts) > 2 else parts[0]


def float_op_names(g: dict) -> list[dict]:
    """Ops computing in float (no FPU on many microcontrollers: slow), named with their layer."""
    from ..inspect import float_ops
    ops = [{"op": o["op"], "inputs": [g["tensors"][j]["name"] for j in o["inputs"] if j >= 0 and not g["tensors"][j]["const"]],
            "const_inputs": [{"name": g["tensors"][j]["name"], "dtype": g["tensors"][j]["dtype"]}
                             for j in o["inputs"] if j >= 0 and g["tensors"][j]["const"]],
            "outputs": [g["tensors"][j]["name"] for j in o["outputs"]],
            "output_dtypes": [g["tensors"][j]["dtype"] for j in o["outputs"]], "index": o["index"]} for o in g["ops"]]
    return [{"index": o["index"], "op": o["op"], "layer": layer_of(g, o["index"])} for o in float_ops(ops)]


def _hybrid_ops(g: dict) -> list[int]:
    """Ops with float activations and int8 weights (dynamic range): TFLM has no kernel for them."""
    t = g["tensors"]
    return [o["index"] for o in g["ops"] if o["outputs"] and t[o["outputs"][0]]["dtype"] == "float32"
            and any(j >= 0 and t[j]["const"] and t[j]["dtype"] in ("int8", "int4") for j in o["inputs"])
            and any(j >= 0 and not t[j]["const"] and t[j]["dtype"] == "float32" for j in o["inputs"])]


# ---------------------------------------------------------------- inside the child (TFLM loaded)

@contextmanager
def _fd2():
    """C++ writes to fd 2: capture it in a file (Python's sys.stderr follows)."""
    import sys
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        box = {"text": ""}
        try:
            yield box
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            box["text"] = f.read().decode(errors="replace")


def _tflm(data: bytes, arena: int, preserve: bool = False):
    from tflite_micro.python.tflite_micro import runtime as r
    cfg = r.InterpreterConfig.kPreserveAllTensors if preserve else r.InterpreterConfig.kAllocationRecording
    return r.Interpreter.from_bytes(data, arena_size=int(arena), intrepreter_config=cfg)


def _detail(d: dict) -> dict:
    q = d.get("quantization_parameters") or {}
    sc, zp = list(q.get("scales", [])), list(q.get("zero_points", []))
    return {"dtype": np.dtype(d["dtype"]).name, "shape": [int(x) for x in d["shape"]],
            "quantization": (float(sc[0]), int(zp[0])) if len(sc) == 1 else (0.0, 0)}


def _feed_batches(arrays: list[np.ndarray], batch: int):
    """Chunks of ``batch`` samples per input (the last padded by repeating its last sample)."""
    n = len(arrays[0])
    for i in range(0, n, batch):
        part = []
        for x in arrays:
            c = x[i:i + batch]
            if len(c) < batch:
                c = np.concatenate([c, np.repeat(c[-1:], batch - len(c), axis=0)])
            part.append(c)
        yield i, min(batch, n - i), part


def _generous_arena(g: dict, data: bytes) -> int:
    act = sum(_numel(t["shape"]) * _ITEM.get(t["dtype"], 4) for t in g["tensors"] if not t["const"])
    return int(max(10 * len(data), 2 * act + 256 * 1024))


_ITEM = {"float32": 4, "float16": 2, "float64": 8, "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8,
         "bool": 1, "int4": 1, "uint32": 4, "uint16": 2, "complex64": 8}


_MISSING = re.compile(r"Didn't find op for builtin opcode '([^']+)'|Failed to get registration from op code (\S+)")


def _missing_op(text: str) -> str | None:
    m = _MISSING.search(text)
    return (m.group(1) or m.group(2)) if m else None


def _why(text: str, g: dict) -> dict:
    """What TFLM refused, from its fd-2 text: {"kind", "op", "node", "layer", "line"}."""
    op = _missing_op(text)
    if op:
        idx = next((o["index"] for o in g["ops"] if o["op"] == op), None)
        return {"kind": "missing kernel", "op": op, "node": idx, "layer": layer_of(g, idx) if idx is not None else None}
    m = re.search(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke)", text)
    if m:
        idx = int(m.group(2))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        k = next((i for i, ln in enumerate(lines) if m.group(0) in ln), None)
        cause = lines[k - 1] if k else m.group(0)
        kind = "hybrid" if idx in _hybrid_ops(g) else f"failed to {m.group(3)}"
        return {"kind": kind, "op": m.group(1), "node": idx, "layer": layer_of(g, idx), "line": cause[:200]}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return {"kind": "refused", "op": None, "node": None, "layer": None, "line": lines[-1][:200] if lines else ""}


def _error_line(why: dict, g: dict) -> str:
    where = (f" (node {why['node']}{', layer ' + repr(why['layer']) if why.get('layer') else ''})"
             if why.get("node") is not None else "")
    if why["kind"] == "hybrid" or (why["kind"] == "refused" and _hybrid_ops(g)):
        ops = sorted({g["ops"][i]["op"] for i in _hybrid_ops(g)})
        return (f"{HYBRID} ({', '.join(ops)} {'computes' if len(ops) == 1 else 'compute'} in float with int8 weights: a dynamic-range model; "
                f"first refused: {why.get('op') or ops[0]}{where}).")
    if why["kind"] == "missing kernel":
        return (f"TFLM has no kernel for {why['op']}{where}: replace that layer with ops TFLM has, "
                "or run this model with LiteRT instead of on a microcontroller.")
    if why["kind"].startswith("failed to"):
        return f"TFLM {why['kind']} {why['op']}{where}: {why.get('line', '')}"
    return f"TFLM refused the model: {why.get('line') or 'no message'}"


def _all_missing(data: bytes, g: dict, arena: int, first: str) -> list[str]:
    """Every op type TFLM has no kernel for: after each miss, relabel that opcode as ADD in a copy
    of the model and ask the interpreter again (its resolver stops at the first miss)."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s
    missing = [first]
    m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(data, 0))
    for _ in range(len(m.operatorCodes)):
        for oc in m.operatorCodes:
            name = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}.get(
                max(oc.builtinCode, oc.deprecatedBuiltinCode))
            if name in missing:
                oc.builtinCode = s.BuiltinOperator.ADD
                oc.deprecatedBuiltinCode = s.BuiltinOperator.ADD
        b = flatbuffers.Builder(len(data) + 1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        with _fd2() as cap:
            try:
                _tflm(bytes(b.Output()), arena)
            except Exception:   # noqa: BLE001 - only the message matters here
                pass
        hit = _missing_op(cap["text"])
        if not hit or hit in missing:
            break
        missing.append(hit)
    return missing


def _lsb_scale(g: dict, tensor_index: int) -> float | None:
    """The quantization step of an output: its own scale, or the scale of the int tensor a final
    DEQUANTIZE reads (a float-I/O model whose body is int8)."""
    t = g["tensors"][tensor_index]
    if t["scale"] and t["dtype"] in ("int8", "uint8", "int16"):
        return t["scale"]
    for o in g["ops"]:
        if tensor_index in o["outputs"] and o["op"] == "DEQUANTIZE" and o["inputs"]:
            src = g["tensors"][o["inputs"][0]]
            if src["scale"] and not src["const"]:
                return src["scale"]
    return None


def micro_child(p: dict) -> dict:
    """Run in the isolated child: TFLM on every sample (one invoke each), LiteRT beside it."""
    from ..runtime import TFLiteModel, dequantize, quantize
    from ..types import Signature
    data = Path(p["tflite_path"]).read_bytes()
    g = graph(data)
    arena = _generous_arena(g, data)
    with _fd2() as cap:
        try:
            it = _tflm(data, arena)
            err = None
        except Exception as e:   # noqa: BLE001 - TFLM raises RuntimeError; its reason is on fd 2
            err = e
    if err is not None:
        why = _why(cap["text"] + "\n" + str(err), g)
        out = {"runs": False, "why": why, "error": _error_line(why, g), "tflm_log": cap["text"][-4000:]}
        if why["kind"] == "missing kernel":
            try:
                out["missing_ops"] = _all_missing(data, g, arena, why["op"])
            except Exception:   # noqa: BLE001 - the first miss is already known
                out["missing_ops"] = [why["op"]]
        return out
    # Names: signature input -> flatbuffer input position, as LiteRT matched them on the desktop.
    lite = TFLiteModel(data)
    sig = Signature.from_dict(p["signature"])
    in_map, out_map = p.get("in_map") or {}, p.get("out_map") or {}
    if not in_map:
        in_map, out_map = lite.match(sig)
    out_map = {key: ref for ref, key in out_map.items()}      # given as signature name -> LiteRT key
    pos_in = {ti: i for i, ti in enumerate(g["inputs"])}
    pos_out = {ti: i for i, ti in enumerate(g["outputs"])}
    in_pos = {ref: pos_in[lite.in_details[key]["index"]] for ref, key in in_map.items()}
    out_pos = {out_map.get(key, key): pos_out[d["index"]] for key, d in lite.out_details.items()}
    samples = dict(np.load(p["samples_path"], allow_pickle=False))
    order = sorted(in_pos, key=in_pos.get)
    arrays = [samples[name] for name in order]
    n = len(arrays[0])
    in_det = [_detail(it.get_input_details(i)) for i in range(len(g["inputs"]))]
    out_det = [_detail(it.get_output_details(i)) for i in range(len(g["outputs"]))]
    batch = max(int(in_det[0]["shape"][0]) if in_det[0]["shape"] else 1, 1)

    # LiteRT by tensor index on the same per-invoke batches (its own kernels, as the desktop ran).
    from ai_edge_litert.interpreter import Interpreter
    li = Interpreter(model_content=data)
    li.allocate_tensors()
    li_in = {d["index"]: d for d in li.get_input_details()}
    li_out = {d["index"]: d for d in li.get_output_details()}
    for ti in g["inputs"]:
        if tuple(li_in[ti]["shape"]) != tuple(in_det[pos_in[ti]]["shape"]):
            li.resize_tensor_input(li_in[ti]["index"], in_det[pos_in[ti]]["shape"])
    li.allocate_tensors()

    raw_tflm = [[] for _ in g["outputs"]]
    raw_lite = [[] for _ in g["outputs"]]
    recorded, invoke_s, feeds = None, [], []
    for i, m, part in _feed_batches(arrays, batch):
        q = [quantize(x.astype(np.float32) if in_det[k]["quantization"][0] else x, in_det[k])
             for k, x in enumerate(part)]
        feeds.append(q)
        for k, x in enumerate(q):
            it.set_input(x, k)
            li.set_tensor(g["inputs"][k], x.astype(li_in[g["inputs"][k]]["dtype"]))
        t0 = time.perf_counter()
        with _fd2() as cap:
            try:
                it.invoke()
                err = None
            except Exception as e:   # noqa: BLE001
                err = e
        invoke_s.append(time.perf_counter() - t0)
        if err is not None:
            why = _why(cap["text"] + "\n" + str(err), g)
            return {"runs": False, "why": why, "error": _error_line(why, g), "tflm_log": cap["text"][-4000:]}
        if recorded is None:
            with _fd2() as cap:
                it.print_allocations()
            hit = re.search(r"Arena allocation total (\d+) bytes", cap["text"])
            recorded = int(hit.group(1)) if hit else None
        li.invoke()
        for k, ti in enumerate(g["outputs"]):
            raw_tflm[k].append(np.asarray(it.get_output(k))[:m].copy())
            raw_lite[k].append(np.asarray(li.get_tensor(ti))[:m].copy())
    tflm = {name: np.concatenate(raw_tflm[k]) for name, k in out_pos.items()}
    litert = {name: np.concatenate(raw_lite[k]) for name, k in out_pos.items()}
    deq = {name: dequantize(tflm[name], out_det[k]) for name, k in out_pos.items()}
    np.savez(p["outputs_path"], **deq)

    vs, worst_sample = [], None
    for name, k in out_pos.items():
        a, b = tflm[name], litert[name]
        fa, fb = dequantize(a, out_det[k]).astype(np.float64), dequantize(b, out_det[k]).astype(np.float64)
        d = np.abs(fa - fb)
        step = _lsb_scale(g, g["outputs"][k])
        if np.dtype(out_det[k]["dtype"]).kind in "iu" and out_det[k]["quantization"][0]:
            lsb_d = np.abs(a.astype(np.int64) - b.astype(np.int64)).astype(np.float64)
        else:
            lsb_d = d / step if step else None
        exact = float(np.mean(a == b)) if a.size else 1.0
        max_lsb = float(np.max(lsb_d)) if lsb_d is not None and lsb_d.size else None
        vs.append({"name": name, "max_abs_diff": float(np.max(d)) if d.size else 0.0,
                   "max_lsb": None if max_lsb is None else round(max_lsb, 3), "lsb": step,
                   "bit_exact_fraction": exact, "elements": int(a.size)})
        if max_lsb is not None and max_lsb > 1.0 + 1e-6 and worst_sample is None:
            per = lsb_d.reshape(len(lsb_d), -1).max(axis=1)
            worst_sample = int(np.argmax(per))
    first = None
    if worst_sample is not None:
        try:
            first = _first_difference(data, g, feeds[worst_sample // batch], arena)
            if first:
                first["sample"] = worst_sample
        except Exception as e:   # noqa: BLE001 - a diagnosis, not the verdict
            first = {"error": str(e).splitlines()[0][:200] if str(e) else type(e).__name__}
    one = {name: samples[name][:1].tolist() for name in order}
    return {"runs": True, "error": None, "arena_recorded_bytes": recorded, "arena_tried_bytes": arena,
            "samples": n, "batch": batch, "invoke_ms_median": float(np.median(invoke_s) * 1000),
            "vs_litert": vs, "first_difference": first,
            "input_order": order, "output_order": sorted(out_pos, key=out_pos.get),
            "input_details": in_det, "output_details": out_det,
            "first_sample": one, "first_expected_raw": {name: tflm[name][:1].tolist() for name in out_pos}}


def _first_difference(data: bytes, g: dict, feed: list[np.ndarray], arena: int) -> dict | None:
    """The first op (execution order) whose output differs by more than one step between TFLM and
    LiteRT, both keeping every intermediate tensor."""
    from ai_edge_litert.interpreter import Interpreter
    it = _tflm(data, arena, preserve=True)
    li = Interpreter(model_content=data, experimental_preserve_all_tensors=True)
    li.allocate_tensors()
    for k, x in enumerate(feed):
        it.set_input(x, k)
        if tuple(li.get_input_details()[k]["shape"]) != x.shape:
            li.resize_tensor_input(g["inputs"][k], x.shape)
            li.allocate_tensors()
    for k, x in enumerate(feed):
        li.set_tensor(g["inputs"][k], x)
    it.invoke()
    li.invoke()
    for o in g["ops"]:
        for ti in o["outputs"]:
            t = g["tensors"][ti]
            got = it.GetTensor(ti, 0)
            a = np.asarray(got["tensor_data"] if isinstance(got, dict) else got)
            b = np.asarray(li.get_tensor(ti))
            if a.size != b.size or a.size == 0:
                continue
            a = a.reshape(b.shape)
            if False:
                continue
            if t["dtype"] in ("int8", "uint8", "int16", "int32"):
                d = float(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64))))
                limit, unit = 1.0, "steps"
            else:
                d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                limit, unit = 1e-5 * max(float(np.max(np.abs(b))), 1.0), "units"
            if d > limit:
                return {"index": o["index"], "op": o["op"], "tensor": t["name"], "layer": layer_of(g, o["index"]),
                        "max_diff": d, "unit": unit}
    return None


def arena_child(p: dict) -> dict:
    """Smallest arena (to 16 bytes) that allocates and invokes, searched from the recorded figure
    upwards/downwards then bisected. Every probe is logged before it runs, so a crash (too small
    an arena can segfault TFLM) tells the parent which size to skip on a restart."""
    data = Path(p["tflite_path"]).read_bytes()
    feed = [np.asarray(x, dtype=d) for x, d in zip(np.load(p["feed_path"], allow_pickle=False).values(), p["dtypes"])]
    log = open(p["log_path"], "a", buffering=1)
    known: dict[int, bool] = {int(k): v for k, v in p.get("known", {}).items()}

    def ok(size: int) -> bool:
        if size in known:
            return known[size]
        log.write(f"try {size}\n")
        with _fd2():
            try:
                it = _tflm(data, size)
                for k, x in enumerate(feed):
                    it.set_input(x, k)
                it.invoke()
                good = True
            except Exception:   # noqa: BLE001 - too small: allocation or invoke refused
                good = False
        known[size] = good
        log.write(f"{size} {'ok' if good else 'fail'}\n")
        return good

    A = ARENA_ALIGN
    up = lambda x: int(math.ceil(x / A) * A)   # noqa: E731
    hi_cap = up(p["generous"])
    start = up(p["recorded"] or hi_cap)
    if ok(start):
        hi, step, lo = start, A, 0
        while hi - step > 0:                   # downwards in doubling steps until one fails
            if not ok(hi - step):
                lo = hi - step
                break
            hi, step = hi - step, step * 2
    else:
        lo, step, hi = start, A, None
        while lo + step < hi_cap:
            if ok(lo + step):
                hi = lo + step
                break
            lo, step = lo + step, step * 2
        if hi is None:
            hi = hi_cap
    while hi - lo > A:                         # bisect (lo fails, hi works)
        mid = up((lo + hi) // 2)
        if mid >= hi:
            mid = hi - A
        if mid <= lo:
            break
        if ok(mid):
            hi = mid
        else:
            lo = mid
    log.close()
    return {"arena_bytes": hi, "probes": len(known), "below_fails": lo}


def _search_arena(tflite_path: str, feed: list[np.ndarray], recorded: int | None, generous: int,
                  tmp: Path) -> dict:
    """``arena_child`` in isolation; a probe that crashes the child counts as too small and the
    search resumes in a fresh child (at most four times)."""
    feed_path = tmp / "feed.npz"
    np.savez(feed_path, *feed)
    log_path = tmp / "arena.log"
    known: dict[str, bool] = {}
    t0 = time.perf_counter()
    crashes = []
    for _ in range(5):
        payload = {"tflite_path": tflite_path, "feed_path": str(feed_path), "dtypes": [x.dtype.name for x in feed],
                   "log_path": str(log_path), "recorded": recorded, "generous": generous, "known": known}
        try:
            r = run_isolated("tflite_lab.targets.micro", "arena_child", payload, timeout_s=RUN_TIMEOUT_S)
            return {**r, "seconds": time.perf_counter() - t0, "crashed_probes": crashes}
        except IsolatedCrash as e:
            tried = None
            for ln in log_path.read_text().splitlines() if log_path.exists() else []:
                a, b = ln.split()
                if a == "try":
                    tried = int(b)
                else:
                    known[a] = b == "ok"
                    tried = None
            if tried is None:
                raise
            known[str(tried)] = False
            crashes.append({"arena_bytes": tried, "crash": str(e)})
    raise IsolatedCrash("the arena search crashed TFLM five times")


# ---------------------------------------------------------------- the worker side

def _static(tflite: bytes) -> tuple[dict, dict]:
    g = graph(tflite)
    counts: dict[str, int] = {}
    for o in g["ops"]:
        counts[o["op"]] = counts.get(o["op"], 0) + 1
    return g, counts


def run_micro(inp: TargetInput) -> TargetReport:
    from ..metrics import compare_outputs, output_stats
    from .boards import board_of, fit
    t_start = time.perf_counter()
    tflite = Path(inp.tflite_path).read_bytes()
    g, counts = _static(tflite)
    board = board_of(inp.options)
    figures = {"flash_bytes": len(tflite), "macs": macs(g), "float_ops": float_op_names(g),
               "arena_bytes": None, "arena_recorded_bytes": None, "vs_litert": [], "board": None,
               "tflm_version": _tflm_version()}

    def ops_table(runs: bool, why: dict | None = None, missing=()) -> list[dict]:
        rows = []
        for op, n in counts.items():
            if op in missing:
                r, note = False, "TFLM has no kernel for this op"
            elif why and why.get("op") == op and why.get("kind") != "missing kernel":
                r, note = False, f"kernel exists; {why.get('kind')} at node {why.get('node')}"
            elif runs:
                r, note = True, "ran on TFLM"
            else:
                r, note = None, ("kernel exists; not prepared (an earlier node was refused)" if why and
                                 why.get("kind") != "missing kernel" else "kernel exists")
            rows.append({"op": op, "count": n, "runs_on_micro": r, "note": note,
                         "resolver": resolver_name(op), "macs": figures["macs"]["by_type"].get(op, 0)})
        return rows

    with tempfile.TemporaryDirectory(prefix="micro-") as tmpd:
        tmp = Path(tmpd)
        payload = {"tflite_path": inp.tflite_path, "samples_path": inp.samples_path, "signature": inp.signature,
                   "in_map": inp.in_map, "out_map": inp.out_map, "outputs_path": str(tmp / "outputs.npz")}
        try:
            res = run_isolated("tflite_lab.targets.micro", "micro_child", payload, timeout_s=RUN_TIMEOUT_S)
        except IsolatedCrash as e:
            figures["ops"] = ops_table(False)
            if board:
                figures["board"] = fit(board, None, len(tflite))
            return TargetReport(NAME, False, f"TFLM crashed on this model ({e}); it does not run on a microcontroller "
                                "as it is.", DOES_NOT_RUN, (), figures)
        if not res["runs"]:
            figures["ops"] = ops_table(False, res.get("why"), res.get("missing_ops", ()))
            figures["missing_ops"] = res.get("missing_ops", [])
            figures["refusal"] = res.get("why")
            figures["tflm_log"] = res.get("tflm_log", "")
            if board:
                figures["board"] = fit(board, None, len(tflite))
            return TargetReport(NAME, False, res["error"], DOES_NOT_RUN, (), figures)
        figures["ops"] = ops_table(True)
        samples = dict(np.load(inp.samples_path, allow_pickle=False))
        feed = []
        for k, name in enumerate(res["input_order"]):
            from ..runtime import quantize
            d = res["input_details"][k]
            x = samples[name][:1]
            b = max(d["shape"][0], 1) if d["shape"] else 1
            x = np.repeat(x, b, axis=0) if b > 1 else x
            feed.append(quantize(x.astype(np.float32) if d["quantization"][0] else x, d))
        t_arena = time.perf_counter()
        arena = _search_arena(inp.tflite_path, feed, res["arena_recorded_bytes"], res["arena_tried_bytes"], tmp)
        tflm_out = dict(np.load(tmp / "outputs.npz", allow_pickle=False))
    import hashlib
    from ..store import Store
    key = hashlib.sha256(tflite + Path(inp.samples_path).name.encode()).hexdigest()[:24]
    out_path = Store(inp.store_root).path("micro", key, ".npz")
    np.savez(out_path, **tflm_out)
    figures["outputs_path"] = str(out_path)      # TFLM's dequantized outputs, keyed by output name
    figures.update({"arena_bytes": arena["arena_bytes"], "arena_recorded_bytes": res["arena_recorded_bytes"],
                    "arena_search": {"probes": arena["probes"], "seconds": round(time.perf_counter() - t_arena, 3),
                                     "fails_at_bytes": arena["below_fails"], "crashed_probes": arena["crashed_probes"],
                                     "how": "smallest 16-byte multiple with which TFLM (recording allocator) "
                                            "allocates and invokes one sample; confirmed by that run"},
                    "vs_litert": res["vs_litert"], "first_difference": res["first_difference"],
                    "samples": res["samples"], "invoke_ms_median": res["invoke_ms_median"],
                    "output_stats": output_stats(tflm_out),
                    "io": {"inputs": [{"name": n, **d} for n, d in zip(res["input_order"], res["input_details"])],
                           "outputs": [{"name": n, **d} for n, d in zip(res["output_order"], res["output_details"])]}})
    outputs = ()
    if inp.reference_path:
        reference = dict(np.load(inp.reference_path, allow_pickle=False))
        outputs = tuple({**m.to_json(), "per_sample_max_abs": list(m.per_sample_max_abs)}
                        for m in compare_outputs(reference, tflm_out))
    verdict, error = None, None
    if board:
        figures["board"] = fit(board, arena["arena_bytes"], len(tflite))
        b = figures["board"]
        if not b["fits"]:
            verdict = DOES_NOT_FIT
            short = []
            if not b["fits_ram"]:
                short.append(f"RAM: arena {arena['arena_bytes']:,} + runtime {b['runtime_ram_bytes']:,} bytes > "
                             f"{b['ram_bytes']:,}")
            if not b["fits_flash"]:
                short.append(f"flash: model {len(tflite):,} + runtime {b['runtime_flash_bytes']:,} bytes > "
                             f"{b['flash_bytes']:,}")
            error = f"does not fit {b['label']} ({'; '.join(short)})"
    figures["target_s"] = round(time.perf_counter() - t_start, 3)
    bundle = None
    if inp.options.get("bundle", True) is not False and _has_bundle():
        try:
            from .micro_bundle import write_bundle
            bundle = write_bundle(tflite, g, counts, res, arena["arena_bytes"], figures, inp.store_root)
        except Exception as e:   # noqa: BLE001 - the verdict stands without the bundle
            figures["bundle_error"] = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return TargetReport(NAME, True, error, verdict, outputs, figures, bundle)


def _has_bundle() -> bool:
    return Path(__file__).with_name("micro_bundle.py").exists()


def _tflm_version() -> str | None:
    try:
        from importlib.metadata import version
        return version("tflite-micro")
    except Exception:   # noqa: BLE001
        return None


def load_outputs_json(path: str) -> dict:
    return json.loads(Path(path).read_text())
