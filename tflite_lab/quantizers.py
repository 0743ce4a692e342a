"""Stage: a second quantizer. ai-edge-quantizer (aeq) quantizes the float ``.tflite`` directly, from a
recipe with per-layer rules, next to TensorFlow's converter (recipe x quantizer cells).

Measured pitfalls (see LAYERWISE_NOTES): its static recipes quantize the model's inputs and outputs
too (rules keep float I/O unless int8 I/O is asked for); its calibration (moving-average min/max)
differs from TensorFlow's, so its int8 is numerically different; it defaults to 16 threads.
Runs in worker processes only.
"""
from __future__ import annotations

import os
import re
import time

import numpy as np

from .errors import ConversionError, UnsupportedCombination, wrapped
from .types import Optimization, Route

_CAL: dict[str, object] = {}        # per worker: the last calibration, reused by the sweep


def aeq_recipe(opt: Optimization, keep_float=(), keep_float_ops=(), int8_io: bool = False,
               int16_layers=()) -> list[dict]:
    """The recipe as aeq's JSON rules; later rules override earlier ones. ``int16_layers`` (int8 only):
    these ops (by output tensor name) get int16 activations, mixed precision (aeq inserts the requantize)."""
    from ai_edge_quantizer import recipe
    if opt is Optimization.DYNAMIC:
        rules = list(recipe.dynamic_wi8_afp32())
    elif opt is Optimization.INT8:
        rules = list(recipe.static_wi8_ai8())
    elif opt is Optimization.INT16X8:
        rules = list(recipe.static_wi8_ai16())
    elif opt is Optimization.FLOAT16:
        rules = [{"regex": ".*", "operation": "*", "algorithm_key": "float_casting",
                  "op_config": {"weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                                "compute_precision": "FLOAT", "explicit_dequantize": True}}]
    else:
        raise UnsupportedCombination("Optimization 'none' quantizes nothing; ai-edge-quantizer has no recipe for it.")
    if int16_layers:
        if opt is not Optimization.INT8:
            raise UnsupportedCombination("int16 activations on chosen layers mix into an int8 recipe only.")
        a16 = recipe.static_wi8_ai16()[0]
        rules += [{**a16, "regex": "(^|;)" + re.escape(t) + ";"} for t in int16_layers]
    # After the per-layer rules: an int16 rule on the model's last op would otherwise quantize its output
    # too (measured: the .tflite then returned raw int16 values).
    if opt in (Optimization.INT8, Optimization.INT16X8) and not int8_io:
        rules += [{"regex": ".*", "operation": io, "algorithm_key": "no_quantize"} for io in ("INPUT", "OUTPUT")]
    # aeq's op scope is its output tensor names joined by ";" with a trailing ";".
    rules += [{"regex": "(^|;)" + re.escape(t) + ";", "operation": "*", "algorithm_key": "no_quantize"}
              for t in keep_float]
    rules += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in keep_float_ops]
    return rules


def _data(samples: dict[str, np.ndarray], input_keys: dict[str, str], n: int | None = None) -> dict:
    count = len(next(iter(samples.values())))
    n = count if n is None else min(n, count)
    rows = []
    for i in range(n):
        rows.append({input_keys.get(k, k): (v[i:i + 1].astype(np.float32) if v.dtype.kind == "f" else v[i:i + 1])
                     for k, v in samples.items()})
    return {"serving_default": rows}


def aeq_quantize(float_tflite: bytes, opt: Optimization, samples, input_keys, *, keep_float=(), keep_float_ops=(),
                 int8_io: bool = False, cache_key: str = "", progress=None, int16_layers=()) -> tuple[bytes, list[dict]]:
    """(quantized bytes, recipe); static recipes calibrate once per model x samples (cached per worker)."""
    from ai_edge_quantizer import quantizer
    from .capture import capture_output
    rules = aeq_recipe(opt, keep_float, keep_float_ops, int8_io, int16_layers)
    with capture_output():
        qt = quantizer.Quantizer(float_tflite, rules)
        calib = None
        if qt.need_calibration:
            # Mixed recipes calibrate on their own: which tensors aeq records depends on the rules.
            key = f"{cache_key}-{opt.value}" + (f"-mixed{len(int16_layers)}-{hash(tuple(int16_layers))}" if int16_layers else "")
            calib = _CAL.get(key)
            if calib is None:
                if progress:
                    progress("calibrate (ai-edge-quantizer)")
                calib = qt.calibrate(_data(samples, input_keys, 100), num_threads=os.cpu_count() or 1)
                _CAL.clear()
                _CAL[key] = calib
        if progress:
            progress("quantize (ai-edge-quantizer)")
        res = qt.quantize(calib)
    return bytes(res.quantized_model), rules


def aeq_lines(opt: Optimization, rules: list[dict]) -> list[str]:
    return ["from ai_edge_quantizer import quantizer",
            f"recipe = {rules!r}",
            "qt = quantizer.Quantizer('float.tflite', recipe)",
            "calibration = qt.calibrate({'serving_default': [{key: x[i:i + 1]} for i in range(len(x))]}) "
            "if qt.need_calibration else None",
            "tflite_model = qt.quantize(calibration).quantized_model"]


def _float_model(prepared, store, limits):
    from .pipeline import convert_cached
    return convert_cached(prepared, Route.SAVED_MODEL, Optimization.NONE, False, store, limits)


def run_aeq_cell(prepared: dict, opt: Optimization, *, keep_float=(), keep_float_ops=(), int8_io: bool = False,
                 bench=None, store_root=None, limits=None, progress=None, int16_layers=()) -> dict:
    """One aeq cell (``aeq-int16x8``, or ``aeq-int8 (2 float)`` with layers kept float, or ``aeq-int8
    (3 int16)`` with int16 activations on these layers), evaluated like any."""
    from .inspect import op_graph
    from .layerwise import _context, check_keep_names, check_result, selective_label
    from .pipeline import BenchSpec, _evaluate_tflite
    from .store import key_of
    progress = progress or (lambda s: None)
    bench = bench or BenchSpec()
    store, limits, om, samples = _context(prepared, store_root, limits)
    keep, ops = sorted(set(keep_float)), sorted(set(keep_float_ops))
    t0 = time.perf_counter()
    progress("float model")
    float_result, _ = _float_model(prepared, store, limits)
    fgraph = op_graph(float_result.tflite)
    check_keep_names(keep, ops, fgraph, fgraph)
    int16 = sorted(set(int16_layers))
    check_keep_names(int16, (), fgraph, fgraph)
    input_keys = {t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]}
    key = key_of(kind="aeq", model=prepared["source"]["sha256"], samples=prepared["samples_sha"], opt=opt.value,
                 keep=keep, ops=ops, int8_io=bool(int8_io), **({"int16": int16} if int16 else {}))
    path = store.path("tflite", key, ".tflite")
    cached = path.exists()
    if cached:
        tflite, rules = path.read_bytes(), aeq_recipe(opt, keep, ops, int8_io, int16)
    else:
        try:
            tflite, rules = aeq_quantize(float_result.tflite, opt, samples, input_keys, keep_float=keep,
                                         keep_float_ops=ops, int8_io=int8_io,
                                         cache_key=f"{prepared['source']['sha256']}-{prepared['samples_sha']}",
                                         progress=progress, int16_layers=int16)
        except Exception as e:      # aeq raises many types; all mean "this quantization failed"
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ConversionError(wrapped(f"ai-edge-quantizer failed on {opt.value}: ", first), detail=repr(e)) from None
        store.put_bytes("tflite", key, ".tflite", tflite)
    floats = check_result(tflite, keep, ops) if (keep or ops) else []
    cost = None
    if keep or ops:     # the size cost against aeq's all-quantized model (same calibration)
        plain = aeq_quantize(float_result.tflite, opt, samples, input_keys, int8_io=int8_io,
                             cache_key=f"{prepared['source']['sha256']}-{prepared['samples_sha']}")[0]
        cost = len(tflite) - len(plain)
    lines = aeq_lines(opt, rules)
    label = selective_label("aeq", opt.value, len(floats) if (keep or ops) else 0, "aeq")
    if int16:
        label += f" ({len(int16)} int16)"
    return _evaluate_tflite(prepared, tflite, str(path), bench, store, progress, {
        "reproduce": None, "route": Route.SAVED_MODEL.value, "optimization": opt.value, "int8_io": bool(int8_io),
        "calls": lines, "command": "\n".join(lines), "warnings": [
            "Quantized by ai-edge-quantizer from the float .tflite (its calibration differs from TensorFlow's)."],
        "cached": cached, "converter_log": "", "convert_s": time.perf_counter() - t0,
        "cell": label, "quantizer": "aeq", **({"int16_layers": int16} if int16 else {}),
        "keep_float": keep, "keep_float_ops": ops, "float_ops": floats if (keep or ops) else [],
        "float_cost_bytes": cost})


def run_aeq_debug(prepared: dict, opt: Optimization, *, int8_io=False, tolerances=None, sweep_steps=5,
                  sweep_all=False, store_root=None, limits=None, progress=None) -> dict:
    """Debug an aeq quantization: accumulated per-tensor error, and the sweep with aeq's no_quantize rules."""
    from .inspect import op_graph
    from .layerwise import (ACCUMULATED_MEANING, ISOLATED_MEANING, MODEL_EXPLORER_COMMAND, _context, _summary,
                            accumulated_statistics, check_result, hashlib_sha, is_quantized, json_rows, layer_table,
                            overlay_json, rank_layers, selective_label, suggested_float, sweep_ks)
    from .pipeline import BenchSpec, _evaluate_tflite, judge_report
    from .store import key_of
    from .types import Tolerances
    progress = progress or (lambda s: None)
    store, limits, om, samples = _context(prepared, store_root, limits)
    t0 = time.perf_counter()
    tol = Tolerances.from_json(tolerances) if tolerances else Tolerances.for_optimization(opt)
    progress("float model")
    float_result, float_path = _float_model(prepared, store, limits)
    input_keys = {t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]}
    ck = f"{prepared['source']['sha256']}-{prepared['samples_sha']}"
    try:
        quant, rules = aeq_quantize(float_result.tflite, opt, samples, input_keys, int8_io=int8_io, cache_key=ck,
                                    progress=progress)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ConversionError(wrapped(f"ai-edge-quantizer failed on {opt.value}: ", first), detail=repr(e)) from None
    quant_path = store.put_bytes("tflite", key_of(kind="aeq-debug", base=hashlib_sha(quant)), ".tflite", quant)
    accumulated = accumulated_statistics(float_result.tflite, quant, samples, input_keys, progress=progress)
    fgraph = op_graph(float_result.tflite)
    ranked = rank_layers(layer_table(fgraph, op_graph(quant), None, accumulated), "accumulated")
    candidates = [r["tensor"] for r in ranked if r.get("rank") and is_quantized(r)]
    sweep, best, chosen = [], None, None
    for i, k in enumerate(sweep_ks(len(candidates), max(1, sweep_steps))):
        progress(f"sweep step {i + 1}: {k} layer(s) float")
        keep = candidates[:k]
        tflite = quant if k == 0 else aeq_quantize(float_result.tflite, opt, samples, input_keys, keep_float=keep,
                                                    int8_io=int8_io, cache_key=ck)[0]
        floats = check_result(tflite, keep, ()) if k else []
        path = store.put_bytes("tflite", key_of(kind="sweep", base=hashlib_sha(tflite)), ".tflite", tflite)
        report = judge_report(_evaluate_tflite(prepared, tflite, str(path), BenchSpec(enabled=False), store,
                                               lambda s: None, {
            "reproduce": None, "route": Route.SAVED_MODEL.value, "optimization": opt.value, "int8_io": bool(int8_io),
            "calls": aeq_lines(opt, aeq_recipe(opt, keep, (), int8_io)), "command": "", "warnings": [],
            "cached": False, "converter_log": "", "convert_s": 0.0, "quantizer": "aeq",
            "cell": selective_label("aeq", opt.value, len(floats), "aeq"), "keep_float": keep, "keep_float_ops": [],
            "float_ops": floats, "float_cost_bytes": len(tflite) - len(quant)}), tol)
        sweep.append({"k": k, "float_layers": keep, **_summary(report)})
        if report["ok"] and (best is None or sweep[-1]["tflite_bytes"] < sweep[best]["tflite_bytes"]):
            best, chosen = len(sweep) - 1, report
        if report["ok"] and not sweep_all:
            break
        if k >= max(1, len(candidates) // 2) and not sweep_all:
            break
    if best is not None:
        sweep[best]["best"] = True
    return {
        "optimization": opt.value, "quantizer": "aeq", "route": Route.SAVED_MODEL.value, "int8_io": bool(int8_io),
        "basis": "accumulated", "metric": "noise_added", "views": {"isolated": False, "accumulated": True},
        "meaning": {"isolated": ISOLATED_MEANING, "accumulated": ACCUMULATED_MEANING},
        "notes": ["Quantized by ai-edge-quantizer from the float .tflite: the layer-isolated view (TensorFlow's "
                  "debugger) does not apply; its calibration differs from TensorFlow's."],
        "layers": json_rows(ranked), "suggested_float": suggested_float(ranked, "accumulated"), "sweep": sweep,
        "best_step": best, "model": chosen or report, "float_tflite_path": float_path, "quant_tflite_path": str(quant_path),
        "quant_bytes": len(quant), "float_bytes": len(float_result.tflite), "graph": fgraph,
        "overlay": overlay_json(ranked, "noise_added"), "model_explorer_command": MODEL_EXPLORER_COMMAND,
        "tolerances": tol.to_json(), "timings_s": {"total": time.perf_counter() - t0},
        "num_samples": prepared["num_samples"],
    }
