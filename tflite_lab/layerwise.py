"""Stage: where quantization loses accuracy, per layer (the Debug job itself, the sweep and the
remedies are in ``debug``, which builds on this and on ``quantizers``).

- Layer-isolated error (int8 only): TensorFlow's QuantizationDebugger quantizes each op alone, fed
  the quantized output of the op before it, and compares it with its float shadow.
- Accumulated error (any recipe): ai-edge-quantizer's ``validate()`` compares every tensor of the
  quantized model with the float ``.tflite`` on the same inputs (errors add up along the graph).
- Selective quantization: keep chosen layers (by output tensor name) or op types in float, from the
  debugger's cached calibration; names are validated first and the result's op dtypes checked,
  since the debugger silently ignores unknown names.
- The sweep: keep the worst k layers float for k = 0, 1, 2, 4, 8 ... and find the smallest model
  within tolerance.

Runs in worker processes only (TensorFlow); every result is plain JSON.
"""
from __future__ import annotations

import io
import math

import numpy as np

from .errors import ConversionError, SampleError
from .types import json_number

ISOLATED_MEANING = ("Layer-isolated (TensorFlow's QuantizationDebugger): each op quantized on its own, fed the "
                    "quantized output of the op before it; RMSE/scale ≈ 0.29 is pure rounding, far above it marks "
                    "a layer that int8 hurts by itself.")
ACCUMULATED_MEANING = ("Accumulated (ai-edge-quantizer validate): every tensor of the quantized model against the "
                       "float .tflite on the same inputs, so errors add up along the graph; 'noise added' is the noise "
                       "power (relative to the signal) this op adds over its inputs'.")
SUSPECT_RMSE_PER_SCALE = 1.0     # ~3.5x pure rounding (0.29)
SUSPECT_NOISE_ADDED = 0.01       # the op adds noise at -20 dB of the signal
_STATE: dict[str, object] = {}   # per worker: the last calibrated debugger, reused by the sweep and keep-float


def _noop(step: str) -> None:
    pass


# ---- the TF debugger ----

def _representative(prepared: dict, samples: dict[str, np.ndarray]):
    from .samples import representative_dataset
    return representative_dataset(samples, {t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]})


def calibrated_debugger(prepared: dict, om, export_dir: str, samples: dict[str, np.ndarray], int8_io: bool = False,
                        progress=_noop):
    """A QuantizationDebugger on a fresh converter (building it mutates the converter: a later
    ``convert()`` would silently return a calibration-only model), cached per model x samples."""
    import tensorflow as tf
    key = f"{prepared['source']['sha256']}-{prepared['samples_sha']}-{int8_io}"
    if key in _STATE:
        return _STATE[key]
    progress("calibrate (TF debugger)")
    rep = _representative(prepared, samples)
    conv = tf.lite.TFLiteConverter.from_saved_model(export_dir)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The debugger feeds inputs positionally, in its debug model's input order (set below, before run()).
    keys = [t.get("key") or t["name"] for t in prepared["signature"]["inputs"]]

    def debug_gen():
        for d in rep():
            yield [d[k] for k in keys]
    from .capture import capture_output
    with capture_output():
        dbg = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=debug_gen,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(fully_quantize=int8_io))
    if len(keys) > 1:
        from .inspect import inspect_tflite
        from .runtime import undecorated
        order = [undecorated(t["name"]) for t in inspect_tflite(dbg.quant_model).inputs]
        if sorted(order) == sorted(keys):
            keys[:] = order
        else:
            raise ConversionError(f"Cannot match the debugger's inputs {order} to the model's {keys}.")
    _STATE.clear()
    _STATE[key] = dbg
    return dbg


def isolated_statistics(dbg, progress=_noop) -> dict[str, dict]:
    """{tensor name: rmse, max_abs_error, mean_error, stddev, scale, zero_point, rmse_per_scale}; the
    debugger's own ``tensor_idx`` refers to its debug model, so rows are keyed by ``tensor_name``."""
    import pandas as pd
    progress("debugger run")
    from .capture import capture_output
    with capture_output():
        dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    df = pd.read_csv(io.StringIO(buf.getvalue()))
    out = {}
    for r in df.to_dict("records"):
        mse = float(r["mean_squared_error"])
        scale = float(r["scale"])
        rmse = math.sqrt(mse) if mse >= 0 else math.nan
        out[str(r["tensor_name"])] = {
            "op": r["op_name"], "num_elements": int(r["num_elements"]), "rmse": rmse,
            "max_abs_error": float(r["max_abs_error"]), "mean_error": float(r["mean_error"]),
            "stddev": float(r["stddev"]), "scale": scale, "zero_point": int(r["zero_point"]),
            "rmse_per_scale": rmse / scale if scale > 0 else math.nan}
    return out


def quantize_selective(dbg, keep_tensors=(), keep_ops=(), int8_io: bool = False) -> bytes:
    """The int8 model with these tensors' ops / op types in float, re-quantized from the debugger's
    calibration (no recalibration); the same call ``get_nondebug_quantized_model`` makes, without
    rebuilding the debug model for every sweep step."""
    from tensorflow.lite.python import convert
    from .capture import capture_output
    with capture_output():
        return convert.mlir_quantize(
            dbg.calibrated_model, disable_per_channel=dbg.converter._experimental_disable_per_channel,  # noqa: SLF001
            fully_quantize=int8_io, enable_numeric_verify=False,
            denylisted_ops=list(keep_ops) or None, denylisted_nodes=list(keep_tensors) or None)


# ---- ai-edge-quantizer's accumulated view ----

def accumulated_statistics(float_tflite: bytes, quant_tflite: bytes, samples: dict[str, np.ndarray],
                           input_keys: dict[str, str], max_samples: int = 16, progress=_noop) -> dict[str, dict]:
    """{tensor name: mse, snr, snr_db, cosine} against the float model, averaged over samples.

    ``snr`` is ai-edge-quantizer's: mean over samples of mean(ref²) / (mse + 1e-9), a power ratio;
    ``snr_db`` = 10 log10(snr). Its metrics drop NaN/inf values, so NaN is judged on the outputs.
    A tensor equal to the float one (mse 0) is exact: ``snr_db`` inf. Its own SNR would be
    mean(ref²) / 1e-9, a number set by the signal's power (an all-False mask gave -inf dB), not by error.
    """
    import os
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric as M
    progress("accumulated error (ai-edge-quantizer)")
    n = min(len(next(iter(samples.values()))), max_samples)
    data = {"serving_default": [{input_keys.get(k, k): v[i:i + 1] for k, v in samples.items()} for i in range(n)]}
    from .capture import capture_output
    with capture_output():
        qt = quantizer.Quantizer(float_tflite, previous_quantized_model=quant_tflite)
        res = qt.validate(test_data=data, error_metrics=[M.MSE, M.SNR, M.COSINE_SIMILARITY],
                          num_threads=os.cpu_count() or 1)
    out = {}
    for name, m in res.get_all_tensor_results().items():
        snr, mse = float(m["snr"]), float(m["mse"])
        snr_db = math.inf if mse == 0 else 10 * math.log10(snr) if snr > 0 else -math.inf
        out[name] = {"mse": mse, "snr": snr, "snr_db": snr_db,
                     "cosine": float(m["cosine_similarity"])}
    return out


# ---- the table ----

def layer_table(float_graph: list[dict], quant_graph: list[dict], isolated: dict | None,
                accumulated: dict | None) -> list[dict]:
    """One row per op of the float model (keyed by its output tensor name), in graph order, with the
    quantized model's dtype and quantization parameters for that tensor and both views' metrics."""
    qinfo, weights, producer = {}, {}, {}
    for o in quant_graph:
        for name, dt in zip(o["outputs"], o["output_dtypes"]):
            qinfo[name] = (dt, o["quant"], o["op"])
            producer[name] = o
        if o["outputs"]:
            weights[o["outputs"][0]] = o["const_inputs"][0]["dtype"] if o["const_inputs"] else None
    float_ops_by_name = {n: o["op"] for o in float_graph for n in o["outputs"]}
    for name, o in list(producer.items()):
        # int8 models rename a model output: the final DEQUANTIZE takes the name, the op writes "<name>1".
        if o["op"] == "DEQUANTIZE" and float_ops_by_name.get(name, "DEQUANTIZE") != "DEQUANTIZE" and o["inputs"]:
            src = o["inputs"][0]
            qinfo[name] = (*qinfo.get(src, (None, None, None))[:2], "renamed")
            weights[name] = weights.get(src)
    rows = []
    for o in float_graph:
        name = o["outputs"][0] if o["outputs"] else str(o["index"])
        dt, quant, how = qinfo.get(name, (None, None, None))
        row = {"order": o["index"], "tensor": name, "op": o["op"], "dtype": dt or "—", "weights": weights.get(name),
               "scale": quant["scale"][0] if quant and quant["scale"] else None,
               "zero_point": quant["zero_point"] if quant else None,
               "per_channel": bool(quant and quant["channels"] > 1), "inputs": o["inputs"],
               "renamed_output": how == "renamed"}
        if isolated is not None:
            s = isolated.get(name)
            row.update({k: (s or {}).get(k) for k in ("rmse", "max_abs_error", "mean_error", "rmse_per_scale")})
            if s and row["scale"] is None:
                row["scale"], row["zero_point"] = s["scale"], s["zero_point"]
        if accumulated is not None:
            a = accumulated.get(name)
            row.update({"mse": (a or {}).get("mse"), "snr_db": (a or {}).get("snr_db"),
                        "cosine": (a or {}).get("cosine")})
        rows.append(row)
    if accumulated is not None:
        for row in rows:        # the error this op adds: its SNR against the worst of its inputs'
            ins = [accumulated[i]["snr_db"] for i in row["inputs"] if i in accumulated]
            ok = bool(ins) and row["snr_db"] is not None
            lo = min(ins) if ok else None
            # inf - inf: an exact op after exact inputs drops nothing
            row["snr_drop_db"] = (0.0 if lo == row["snr_db"] else lo - row["snr_db"]) if ok else None
            # Noise power this op adds, relative to the signal: 85 -> 42 dB adds 6e-5, 42 -> 0 dB adds ~1.
            row["noise_added"] = (10 ** (-row["snr_db"] / 10) - 10 ** (-min(ins) / 10)) if ok else None
    return rows


def _score(row: dict, basis: str) -> float:
    v = row.get("rmse_per_scale") if basis == "isolated" else row.get("noise_added")
    if v is None:
        return -math.inf
    return math.inf if math.isnan(v) else float(v)      # NaN first: a broken layer is the worst


def rank_layers(rows: list[dict], basis: str) -> list[dict]:
    """Worst first: by RMSE/scale (isolated) or by the noise an op adds (accumulated); no number: last."""
    ranked = sorted(rows, key=lambda r: -_score(r, basis))
    for i, r in enumerate(ranked):
        r["rank"] = i + 1 if _score(r, basis) > -math.inf else None
    return ranked


def suggested_float(ranked: list[dict], basis: str, limit: int = 8) -> list[str]:
    """Layers that stand out: RMSE/scale above 1.0 (~3.5x pure rounding), or adding noise above 1% of
    the signal power (accumulated)."""
    bound = SUSPECT_RMSE_PER_SCALE if basis == "isolated" else SUSPECT_NOISE_ADDED
    return [r["tensor"] for r in ranked if _score(r, basis) > bound and is_quantized(r)][:limit]


def is_quantized(row: dict) -> bool:
    """A layer the quantizer changed: integer output, or integer weights (dynamic range); a renamed
    model output (the final DEQUANTIZE) is not a layer to keep."""
    if row.get("renamed_output"):
        return False
    return row["dtype"] in ("int8", "uint8", "int16") or (row.get("weights") or "") in ("int8", "int4", "int16")


def json_rows(rows: list[dict]) -> list[dict]:
    return [{k: (json_number(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


# ---- validation of names, and the check of the result ----

def check_keep_names(keep_tensors, keep_ops, float_graph: list[dict], quant_graph: list[dict]) -> None:
    """Unknown tensor names or op types are refused (the debugger would ignore them silently)."""
    names = {n for o in float_graph for n in o["outputs"]} | {n for o in quant_graph for n in o["outputs"]}
    ops = {o["op"] for o in quant_graph} - {"QUANTIZE", "DEQUANTIZE"}
    bad = [t for t in keep_tensors if t not in names]
    if bad:
        close = [n for n in sorted(names) if any(b.lower() in n.lower() for b in bad)][:3]
        raise SampleError(f"--keep-float names {', '.join(repr(b) for b in bad)}, which no op of the model outputs"
                          + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else
                             "; names are output tensor names, as `debug` lists them") + ".")
    bad = [o for o in keep_ops if o not in ops]
    if bad:
        raise SampleError(f"--keep-float-ops names {', '.join(bad)}, but the model's quantized ops are "
                          f"{', '.join(sorted(ops))}.")


def check_result(tflite: bytes, keep_tensors, keep_ops) -> list[dict]:
    """The float compute ops of the result; raises when a layer asked for in float is not."""
    from .inspect import float_ops, op_graph
    graph = op_graph(tflite)
    floats = float_ops(graph)
    float_names = {n for o in floats for n in o["outputs"]}
    missing = [t for t in keep_tensors if t not in float_names]
    missing += [f"{o['op']} ({o['outputs'][0]})" for o in graph if o["op"] in set(keep_ops) and o not in floats]
    if missing:
        raise ConversionError(f"Asked to keep {', '.join(missing)} in float, but the result quantizes it; the "
                              "quantizer ignored the request.")
    return [{"tensor": o["outputs"][0], "op": o["op"], "dtype": o["output_dtypes"][0]} for o in floats]


def selective_label(route: str, optimization: str, n_float: int, quantizer: str = "tf") -> str:
    base = f"{route}-{optimization}" if quantizer == "tf" else f"aeq-{optimization}"
    return base + (f" ({n_float} float)" if n_float else "")


def selective_lines(keep_tensors, keep_ops, int8_io: bool) -> list[str]:
    """The Python that builds the selective model (shown in the report and the reproduction script)."""
    return [
        "converter.optimizations = [tf.lite.Optimize.DEFAULT]",
        "converter.representative_dataset = representative_dataset",
        "converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]",
        "debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=lambda: "
        "([list(d.values())[0]] for d in representative_dataset()))",
        f"debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes={list(keep_tensors)!r}, "
        f"denylisted_ops={list(keep_ops)!r}, fully_quantize={bool(int8_io)})",
        "tflite_model = debugger.get_nondebug_quantized_model()",
    ]


# ---- the jobs (worker.py runs these) ----

def _context(prepared: dict, store_root: str | None, limits):
    from .config import Limits
    from .pipeline import _load_npz, _open, _source
    from .store import Store
    limits = limits or Limits.from_env()
    om = _open(_source(prepared["source"]), limits)
    return Store(store_root), limits, om, _load_npz(prepared["samples_path"])


def _export_for_calibration(prepared: dict, om) -> str:
    from .models import exported_saved_model
    # Recurrent models calibrate only unrolled (the looped LSTM crashes TF 2.21's converter).
    return exported_saved_model(om, unrolled=True)[0] if prepared["fixed_batch"] else (
        prepared["export_dir"] or exported_saved_model(om)[0])


def sweep_ks(n: int, steps: int) -> list[int]:
    """0, 1, 2, 4, 8 ... up to n layers, at most ``steps`` values."""
    ks, k = [0], 1
    while k <= n and len(ks) < steps:
        ks.append(k)
        k *= 2
    return ks


def _summary(report: dict) -> dict:
    from . import metrics
    m = report["metrics"]
    acc = report.get("accuracy") or {}
    return {"tflite_bytes": report["tflite_bytes"],
            "max_abs_error": json_number(metrics.worst(float(o["max_abs_error"]) for o in m)),
            "top1_agreement": json_number(metrics.headline_top1(m)),
            "accuracy": acc.get("tflite"), "ok": report["ok"], "failures": report.get("failures", [])}


def overlay_json(rows: list[dict], metric: str) -> dict:
    """Model Explorer's node-data overlay for the float .tflite, keyed by output tensor name."""
    results = {r["tensor"]: {"value": json_number(r[metric])} for r in rows
               if r.get(metric) is not None and not (isinstance(r[metric], float) and math.isnan(r[metric]))}
    if metric == "rmse_per_scale":
        thresholds = [{"value": 0.35, "bgColor": "#a5d6a7"}, {"value": SUSPECT_RMSE_PER_SCALE, "bgColor": "#fff59d"},
                      {"value": 1e30, "bgColor": "#ef9a9a"}]
    else:
        thresholds = [{"value": 0.001, "bgColor": "#a5d6a7"}, {"value": SUSPECT_NOISE_ADDED, "bgColor": "#fff59d"},
                      {"value": 1e30, "bgColor": "#ef9a9a"}]
    return {"main": {"results": results, "thresholds": thresholds}}


MODEL_EXPLORER_COMMAND = ("pip install ai-edge-model-explorer && model-explorer float.tflite "
                          "--node_data_paths=overlay.json --host=127.0.0.1 --port=8080")


def hashlib_sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()[:32]


# ---- remedies: when no layer stands out, or keeping layers float does not reach tolerance ----


