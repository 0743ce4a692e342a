"""Stage: the Debug job — where a quantized model loses accuracy and what fixes it — and the
keep-float conversion it recommends.

``run_debug`` puts the per-layer tables of ``layerwise`` (TensorFlow's QuantizationDebugger) or of
``quantizers`` (ai-edge-quantizer) together with the sweep and the remedies; ``run_selective``
converts with chosen layers kept in float. Imports run one way: debug -> quantizers -> layerwise.

Runs in worker processes only (TensorFlow); every result is plain JSON.
"""
from __future__ import annotations

import time

import numpy as np

from .errors import TFLiteLabError, UnsupportedCombination
from .layerwise import (ACCUMULATED_MEANING, ISOLATED_MEANING, MODEL_EXPLORER_COMMAND, _context,
                        _export_for_calibration, _noop, _summary, accumulated_statistics, calibrated_debugger,
                        check_keep_names, check_result, hashlib_sha, is_quantized, isolated_statistics, json_rows,
                        layer_table, overlay_json, quantize_selective, rank_layers, selective_label,
                        selective_lines, suggested_float, sweep_ks)
from .types import Optimization, Route, json_number


def _check_quantizer(optimization: Optimization, quantizer: str) -> None:
    if quantizer == "tf" and optimization is not Optimization.INT8:
        raise UnsupportedCombination(
            f"TensorFlow's converter keeps layers in float only for int8 (its QuantizationDebugger re-quantizes a "
            f"calibrated int8 model); for {optimization.value} use --quantizer aeq.")


def _plain_int8(dbg, store, key: str, int8_io: bool) -> bytes:
    meta = store.path("tflite", key + "-plain", ".tflite")
    if meta.exists():
        return meta.read_bytes()
    data = quantize_selective(dbg, int8_io=int8_io)
    store.put_bytes("tflite", key + "-plain", ".tflite", data)
    return data


def run_selective(prepared: dict, keep_float=(), keep_float_ops=(), *, optimization: str = "int8",
                  quantizer: str = "tf", int8_io: bool = False, bench=None, store_root: str | None = None,
                  limits=None, progress=_noop) -> dict:
    """Convert with these layers (output tensor names) and op types kept in float, check the result's
    op dtypes, and evaluate it like any cell; the report names the float ops and their size cost."""
    from .inspect import op_graph
    from .pipeline import BenchSpec, _evaluate_tflite
    from .reproduce import reproduction
    from .store import key_of
    opt = Optimization(optimization)
    if quantizer == "aeq":
        from .quantizers import run_aeq_cell
        return run_aeq_cell(prepared, opt, keep_float=keep_float, keep_float_ops=keep_float_ops, int8_io=int8_io,
                            bench=bench, store_root=store_root, limits=limits, progress=progress)
    _check_quantizer(opt, quantizer)
    bench = bench or BenchSpec()
    keep, ops = sorted(set(keep_float)), sorted(set(keep_float_ops))
    store, limits, om, samples = _context(prepared, store_root, limits)
    t0 = time.perf_counter()
    base = key_of(kind="selective", model=prepared["source"]["sha256"], samples=prepared["samples_sha"],
                  int8_io=bool(int8_io))
    key = key_of(base=base, keep=keep, ops=ops)
    path = store.path("tflite", key, ".tflite")
    dbg = None
    if path.exists() and store.path("tflite", base + "-plain", ".tflite").exists():
        tflite, cached = path.read_bytes(), True
        plain = store.path("tflite", base + "-plain", ".tflite").read_bytes()
    else:
        dbg = calibrated_debugger(prepared, om, _export_for_calibration(prepared, om), samples, int8_io, progress)
        plain = _plain_int8(dbg, store, base, int8_io)
        check_keep_names(keep, ops, [], op_graph(plain))
        progress("quantize with float layers")
        tflite, cached = quantize_selective(dbg, keep, ops, int8_io), False
        store.put_bytes("tflite", key, ".tflite", tflite)
    floats = check_result(tflite, keep, ops)
    code, language = selective_script(prepared, keep, ops, int8_io)
    lines = selective_lines(keep, ops, int8_io)
    calls = [f"converter = tf.lite.TFLiteConverter.from_saved_model({prepared['export_dir']!r})", *lines]
    label = selective_label(Route.SAVED_MODEL.value, opt.value, len(floats))
    report = _evaluate_tflite(prepared, tflite, str(path), bench, store, progress, {
        "reproduce": {"code": code, "language": language}, "route": Route.SAVED_MODEL.value,
        "optimization": opt.value, "int8_io": bool(int8_io), "calls": calls, "command": "\n".join(calls),
        "warnings": [], "cached": cached, "converter_log": "", "convert_s": time.perf_counter() - t0,
        "cell": label, "quantizer": "tf", "keep_float": keep, "keep_float_ops": ops, "float_ops": floats,
        "float_cost_bytes": len(tflite) - len(plain), "plain_bytes": len(plain)})
    return report


def selective_script(prepared: dict, keep, ops, int8_io: bool, with_stats: bool = False) -> tuple[str, str]:
    """The standalone script: export, the int8 converter, the debugger (optionally dumping the
    layer statistics to layers.csv), and the model with these layers in float."""
    from .reproduce import reproduction
    code, language = reproduction(Route.SAVED_MODEL, Optimization.INT8, filename=prepared["source"]["filename"],
                                  fmt=prepared["source"]["format"], int8_io=int8_io,
                                  input_keys={t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]},
                                  fixed_batch=prepared["fixed_batch"], unrolled=bool(prepared["fixed_batch"]))
    lines = selective_lines(keep, ops, int8_io)
    if with_stats:      # the layer-isolated table, as the debugger writes it (rows keyed by tensor_name)
        lines[4:4] = ["debugger.run()", "with open('debugger_layers.csv', 'w') as f:", "    debugger.layer_statistics_dump(f)"]
    return code.replace("tflite_model = converter.convert()", "\n".join(lines)), language


def run_debug(prepared: dict, optimization: str = "int8", *, quantizer: str = "tf", int8_io: bool = False,
              tolerances: dict | None = None, sweep_steps: int = 5, sweep_all: bool = False,
              store_root: str | None = None, limits=None, progress=_noop, sample_spec: dict | None = None,
              remedies: bool = True) -> dict:
    """Per-layer error of one recipe, suggested float layers, the keep-float sweep, and when no layer
    stands out or the sweep does not reach tolerance, the other remedies (``run_remedies``).

    Returns JSON: ``layers`` (worst first), ``suggested_float``, ``sweep`` (each step with
    ``float_layers``, ``tflite_bytes``, ``max_abs_error``, ``top1_agreement``, ``accuracy``, ``ok``),
    ``best_step``, ``remedies`` (smallest passing first) and ``chosen_remedy`` (the cell of the remedy chosen,
    when it beats the sweep), ``model`` (the chosen model's cell report), ``overlay``, ``graph`` and notes.
    """
    from .inspect import op_graph
    from .pipeline import BenchSpec, _evaluate_tflite, convert_cached, judge_report
    from .store import key_of
    from .types import Tolerances
    opt = Optimization(optimization)
    if opt is Optimization.NONE:
        raise UnsupportedCombination("Optimization 'none' quantizes nothing, so there is no per-layer error to "
                                     "debug; pick dynamic, float16, int8 or int16x8.")
    if quantizer == "aeq":
        from .quantizers import run_aeq_debug
        return run_aeq_debug(prepared, opt, int8_io=int8_io, tolerances=tolerances, sweep_steps=sweep_steps,
                             sweep_all=sweep_all, store_root=store_root, limits=limits, progress=progress)
    store, limits, om, samples = _context(prepared, store_root, limits)
    timings, notes, t0 = {}, [], time.perf_counter()
    tol = Tolerances.from_json(tolerances) if tolerances else Tolerances.for_optimization(opt)
    progress("float model")
    float_result, float_path = convert_cached(prepared, Route.SAVED_MODEL, Optimization.NONE, False, store, limits)
    float_tflite = float_result.tflite
    timings["float"] = time.perf_counter() - t0
    dbg = isolated = None
    if opt is Optimization.INT8:
        t = time.perf_counter()
        dbg = calibrated_debugger(prepared, om, _export_for_calibration(prepared, om), samples, int8_io, progress)
        isolated = isolated_statistics(dbg, progress)
        base = key_of(kind="selective", model=prepared["source"]["sha256"], samples=prepared["samples_sha"],
                      int8_io=bool(int8_io))
        quant = _plain_int8(dbg, store, base, int8_io)
        quant_path = str(store.path("tflite", base + "-plain", ".tflite"))
        timings["debugger"] = time.perf_counter() - t
    else:
        notes.append(f"TensorFlow's QuantizationDebugger analyses only full-integer int8; for {opt.value} the "
                     "accumulated view (ai-edge-quantizer) is shown, and keeping layers float needs --quantizer aeq.")
        progress("convert")
        res, quant_path = convert_cached(prepared, Route.SAVED_MODEL, opt, int8_io, store, limits)
        quant = res.tflite
    t = time.perf_counter()
    input_keys = {t_["name"]: t_.get("key") or t_["name"] for t_ in prepared["signature"]["inputs"]}
    try:
        accumulated = accumulated_statistics(float_tflite, quant, samples, input_keys, progress=progress)
    except Exception as e:      # its failure leaves the isolated view standing
        accumulated = None
        notes.append(f"ai-edge-quantizer could not compare tensors: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}")
    timings["accumulated"] = time.perf_counter() - t
    float_graph, quant_graph = op_graph(float_tflite), op_graph(quant)
    rows = layer_table(float_graph, quant_graph, isolated, accumulated)
    basis = "isolated" if isolated is not None else "accumulated"
    ranked = rank_layers(rows, basis)
    suggested = suggested_float(ranked, basis)
    # Float in the quantized model already, or a renamed model output: nothing to keep.
    candidates = [r["tensor"] for r in ranked if r.get("rank") and is_quantized(r)]
    sweep, best, chosen = [], None, None
    bench = BenchSpec(enabled=False)
    ks = sweep_ks(len(candidates), max(1, sweep_steps)) if dbg is not None else [0]
    t = time.perf_counter()
    for i, k in enumerate(ks):
        progress(f"sweep step {i + 1}/{len(ks)}: {k} layer(s) float")
        keep = candidates[:k]
        tflite = quant if k == 0 else quantize_selective(dbg, keep, (), int8_io)
        floats = check_result(tflite, keep, ()) if k else []
        skey = key_of(kind="sweep", base=hashlib_sha(tflite))
        path = store.put_bytes("tflite", skey, ".tflite", tflite)
        report = _evaluate_tflite(prepared, tflite, str(path), bench, store, _noop, {
            "reproduce": None, "route": Route.SAVED_MODEL.value, "optimization": opt.value, "int8_io": bool(int8_io),
            "calls": selective_lines(keep, (), int8_io) if k else [], "command": "", "warnings": [], "cached": False,
            "converter_log": "", "convert_s": 0.0, "cell": selective_label(Route.SAVED_MODEL.value, opt.value, len(floats)),
            "quantizer": "tf", "keep_float": keep, "keep_float_ops": [], "float_ops": floats,
            "float_cost_bytes": len(tflite) - len(quant), "plain_bytes": len(quant)})
        report = judge_report(report, tol)
        step = {"k": k, "float_layers": keep, **_summary(report)}
        sweep.append(step)
        if report["ok"] and (best is None or step["tflite_bytes"] < sweep[best]["tflite_bytes"]):
            best, chosen = len(sweep) - 1, report
        if report["ok"] and not sweep_all:
            break
        if k >= max(1, len(candidates) // 2) and not sweep_all:
            notes.append(f"Stopped the sweep at {k} float layers: the model is mostly float.")
            break
    timings["sweep"] = time.perf_counter() - t
    if best is not None:
        sweep[best]["best"] = True
    elif sweep and dbg is not None:     # without the debugger only k=0 ran; the first note says why
        notes.append("No sweep step is within tolerance.")
    if chosen is None:
        chosen = report
    tried, chosen_remedy = [], None
    if remedies and (not suggested or best is None) and opt is not Optimization.FLOAT16:
        t = time.perf_counter()
        tried, built = run_remedies(prepared, opt, tol, quant=quant, dbg=dbg, rows=rows, om=om, store=store,
                                    limits=limits, int8_io=int8_io, sample_spec=sample_spec, progress=progress)
        timings["remedies"] = time.perf_counter() - t
        first = next((r for r in tried if r["ok"]), None)
        why = "No layer stands out" if not suggested else "Keeping layers float does not reach tolerance"
        if first is None:
            notes.append(remedies_note(tried, tol))
        else:
            if best is None or first["tflite_bytes"] < sweep[best]["tflite_bytes"]:
                chosen, chosen_remedy = built[first["cell"]], first["cell"]
                first["chosen"] = True
            notes.append(f"{why}; of {len(tried)} remedies tried, {sum(r['ok'] for r in tried)} are within "
                         f"tolerance, the smallest: {first['cell']} ({first['changed']}), {first['tflite_bytes']:,} bytes.")
    if dbg is not None and chosen_remedy is None:
        code, language = selective_script(prepared, chosen.get("keep_float") or [], [], int8_io, with_stats=True)
        chosen = {**chosen, "reproduce": {"code": code, "language": language}}
    metric = "rmse_per_scale" if basis == "isolated" else "noise_added"
    timings["total"] = time.perf_counter() - t0
    return {
        "optimization": opt.value, "quantizer": quantizer, "route": Route.SAVED_MODEL.value, "int8_io": bool(int8_io),
        "basis": basis, "metric": metric, "views": {"isolated": isolated is not None, "accumulated": accumulated is not None},
        "meaning": {"isolated": ISOLATED_MEANING, "accumulated": ACCUMULATED_MEANING}, "notes": notes,
        "layers": json_rows(ranked), "suggested_float": suggested, "sweep": sweep, "best_step": best,
        "remedies": tried, "chosen_remedy": chosen_remedy, "model": chosen, "float_tflite_path": float_path, "quant_tflite_path": quant_path, "quant_bytes": len(quant), "float_bytes": len(float_tflite),
        "graph": float_graph, "overlay": overlay_json(ranked, metric), "model_explorer_command": MODEL_EXPLORER_COMMAND,
        "tolerances": tol.to_json(), "timings_s": timings, "num_samples": prepared["num_samples"],
    }


REMEDY_CALIBRATION_MIN = 256        # "more calibration samples": at least this many, 4x the samples, at most


REMEDY_CALIBRATION_MAX = 1024       # this many (TF's calibration otherwise takes the first 100)


REMEDY_STEPS = 4                    # k = 1, 2, 4, 8 layers for the per-layer remedies


def remedy_entry(remedy: str, changed: str, report: dict | None = None, *, error: str | None = None,
                 **extra) -> dict:
    """One remedy as ``debug --json`` lists it: what changed, size, the judged metrics and ``ok``;
    a remedy that could not be built carries ``error`` (and ``ok`` false) instead of numbers."""
    from . import metrics
    entry = {"remedy": remedy, "changed": changed, **extra}
    if report is None:
        return {**entry, "cell": None, "tflite_bytes": None, "max_abs_error": None, "top1_agreement": None,
                "psnr_db": None, "accuracy": None, "ok": False, "failures": [], "outputs": [], "tflite_path": None,
                "error": error or "not built"}
    outs = [{k: v for k, v in m.items() if k != "per_sample_max_abs"} for m in report["metrics"]]
    return {**entry, "cell": report.get("cell") or f"{report['route']}-{report['optimization']}",
            "optimization": report["optimization"], "quantizer": report.get("quantizer", "tf"), **_summary(report),
            "psnr_db": json_number(metrics.worst((o.get("psnr_db") for o in outs), lowest=True)),
            "outputs": outs, "tflite_path": report["tflite_path"]}


def sort_remedies(remedies: list[dict]) -> list[dict]:
    """Passing ones first, smallest first; then the failing ones by size; the ones not built last."""
    return sorted(remedies, key=lambda r: (not r["ok"], r["tflite_bytes"] is None, r["tflite_bytes"] or 0))


def calibration_samples(prepared: dict, spec: dict | None, limits) -> tuple[dict | None, str]:
    """(a larger calibration set, how it was made) or (None, why there is none). Random samples:
    more draws from the same distribution with another seed; a file: all its rows (a --num-samples cut
    or the converter's 100 otherwise leaves some out)."""
    from dataclasses import fields, replace
    from .pipeline import SampleSpec, _load_npz, _make_samples
    from .types import InputRange, Signature
    used = min(prepared["num_samples"], 100)
    if spec is None:
        return None, "the sample settings were not passed to the job"
    names = {f.name for f in fields(SampleSpec)}
    s = SampleSpec(**{k: (tuple(v) if k == "image_range" else v) for k, v in spec.items() if k in names})
    sig = Signature.from_dict(prepared["signature"])
    have = _load_npz(prepared["samples_path"])
    want = min(max(REMEDY_CALIBRATION_MIN, 4 * prepared["num_samples"]), REMEDY_CALIBRATION_MAX, limits.max_samples)
    if not s.path:
        ranges = tuple(InputRange.from_json(r) for r in prepared.get("input_ranges") or ())
        extra = _make_samples(sig, replace(s, count=want - prepared["num_samples"], seed=s.seed + 1), limits,
                              ranges, walked=bool(ranges)).arrays
        big = {k: np.concatenate([have[k], extra[k]])[:want] for k in have}
        how = (f"calibration on {want} samples instead of {used}: the {prepared['num_samples']} random samples plus "
               f"{want - prepared['num_samples']} more from the same distribution (seed {s.seed + 1})")
        return big, how
    rows = _make_samples(sig, replace(s, count=None, labels=None), limits).arrays
    n = min(len(next(iter(rows.values()))), REMEDY_CALIBRATION_MAX)
    if n <= used:
        return None, (f"the calibration already used all {used} samples of the file; give more samples (a file "
                      f"with more rows) to try it")
    return {k: v[:n] for k, v in rows.items()}, f"calibration on {n} samples of the file instead of {used}"


def _convert_calibrated(prepared: dict, om, big: dict, store, limits, opt: Optimization = Optimization.INT8,
                        int8_io: bool = False) -> tuple[bytes, str, list[str]]:
    """TF's int8 (or 16x8) conversion calibrated on ``big``; cached in the store by those samples."""
    from .models import exported_saved_model
    from .routes import ConversionRequest, convert
    from .samples import representative_dataset
    req = ConversionRequest(Route.SAVED_MODEL, opt, int8_io)
    sha = hashlib_sha(b"".join(np.ascontiguousarray(big[k]).tobytes() + k.encode() for k in sorted(big)))
    key = req.key(prepared["source"]["sha256"], "calib-" + sha)
    path = store.path("tflite", key, ".tflite")
    if path.exists():
        return path.read_bytes(), str(path), []
    keys = {t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]}
    rep = representative_dataset(big, keys, max_n=len(next(iter(big.values()))))
    unrolled = bool(prepared["fixed_batch"])
    export_dir = exported_saved_model(om, unrolled=True)[0] if unrolled else (
        prepared["export_dir"] or exported_saved_model(om)[0])
    result = convert(req, om, export_dir, prepared["fixed_batch"], rep, None, unrolled)
    return result.tflite, str(store.put_bytes("tflite", key, ".tflite", result.tflite)), list(result.warnings)


def run_remedies(prepared: dict, opt: Optimization, tol, *, quant: bytes, dbg, rows: list[dict], om, store, limits,
                 int8_io: bool = False, sample_spec: dict | None = None, progress=_noop) -> tuple[list[dict], dict]:
    """Every other remedy, each a real conversion run on the same samples and judged with ``tol``:
    int16x8 (TF, else ai-edge-quantizer), float16, aeq int8 with int16 activations on the layers adding
    the most noise, more calibration samples, and keeping layers float ranked by accumulated noise.
    Returns (remedies sorted smallest passing first, {cell: full report} of those built)."""
    from .pipeline import BenchSpec, _evaluate_tflite, judge_report, run_cell
    from .quantizers import run_aeq_cell
    off = BenchSpec(enabled=False)
    root = str(store.root)
    built: dict[str, dict] = {}
    out: list[dict] = []
    # The worst layers by accumulated noise (the isolated ranking already had its sweep).
    acc = [dict(r) for r in rows]
    acc_ranked = [r["tensor"] for r in rank_layers(acc, "accumulated") if r.get("rank") and is_quantized(r)]
    ks = [k for k in sweep_ks(len(acc_ranked), REMEDY_STEPS + 1)[1:] if k <= max(1, len(acc_ranked) // 2)]
    plan: list[tuple[str, str, object]] = []

    def add(remedy, changed, make, **extra):
        plan.append((remedy, changed, make, extra))

    if opt is Optimization.INT8:
        add("int16x8", "int16 activations, int8 weights (TensorFlow's 16x8 ops)",
            lambda: run_cell(prepared, Route.SAVED_MODEL, Optimization.INT16X8, bench=off, store_root=root,
                             limits=limits), quantizer="tf")
    if opt in (Optimization.INT8, Optimization.INT16X8, Optimization.DYNAMIC):
        add("float16", "float16 weights, float32 compute",
            lambda: run_cell(prepared, Route.SAVED_MODEL, Optimization.FLOAT16, bench=off, store_root=root,
                             limits=limits), quantizer="tf")
    if opt is Optimization.INT8 and not ks:
        why = "not tried: " + ("no layer is quantized" if rows and all(r.get("snr_db") is not None for r in rows)
                               else "the accumulated view (ai-edge-quantizer) did not run, so no layer is ranked by noise")
        out.append(remedy_entry("mixed precision", "ai-edge-quantizer int8 with int16 activations on the noisiest "
                                "layers", error=why, quantizer="aeq"))
        out.append(remedy_entry("keep float (accumulated)", "layers float, ranked by accumulated noise", error=why,
                                quantizer="tf"))
    if opt is Optimization.INT8:
        for k in ks:
            layers = acc_ranked[:k]
            add("mixed precision", f"ai-edge-quantizer int8 with int16 activations on the {k} layer(s) adding the "
                "most noise", (lambda layers=layers: run_aeq_cell(prepared, Optimization.INT8, int8_io=int8_io,
                                                                   bench=off, store_root=root, limits=limits,
                                                                   int16_layers=layers)),
                quantizer="aeq", layers=layers, group="mixed")
        add("more calibration samples", None, "calibration", quantizer="tf")
        # The op writing a model output (a SOFTMAX): int8 fixes its output scale at 1/256, so near-uniform
        # probabilities over many classes round to 0 whatever its isolated error says (measured on
        # MobileNetV2: top-1 0.11 -> 0.41).
        out_ops = sorted({r["op"] for r in rows if r.get("renamed_output")} - {"DEQUANTIZE", "QUANTIZE"})
        if dbg is not None and out_ops:
            add("keep output op float", f"every {', '.join(out_ops)} op float (the op type writing the model's "
                "output; int8 gives it a fixed output scale)", ("ops", out_ops), quantizer="tf", ops=out_ops)
        if dbg is not None:
            for k in ks:
                add("keep float (accumulated)", f"{k} layer(s) float, ranked by the noise they add (accumulated)",
                    ("keep", acc_ranked[:k]), quantizer="tf", layers=acc_ranked[:k], group="keep")
    passed_groups: set[str] = set()
    for i, (remedy, changed, make, extra) in enumerate(plan):
        group = extra.pop("group", None)
        if group in passed_groups:      # more layers would only be larger
            continue
        progress(f"remedy {i + 1}/{len(plan)}: {remedy}" + (f" ({len(extra['layers'])} layers)" if "layers" in extra else ""))
        try:
            if make == "calibration":
                big, how = calibration_samples(prepared, sample_spec, limits)
                changed = how if big is not None else "calibration on more samples"
                extra["calibration_samples"] = {"before": min(prepared["num_samples"], 100),
                                                "after": None if big is None else len(next(iter(big.values())))}
                if big is None:
                    out.append(remedy_entry(remedy, changed, error=f"not tried: {how}", **extra))
                    continue
                tflite, path, warns = _convert_calibrated(prepared, om, big, store, limits, int8_io=int8_io)
                report = _evaluate_tflite(prepared, tflite, path, off, store, _noop, {
                    "reproduce": None, "route": Route.SAVED_MODEL.value, "optimization": opt.value,
                    "int8_io": bool(int8_io), "calls": [], "command": "", "warnings": [how, *warns], "cached": False,
                    "converter_log": "", "convert_s": 0.0, "quantizer": "tf",
                    "cell": f"{Route.SAVED_MODEL.value}-{opt.value} ({extra['calibration_samples']['after']} calibration)"})
            elif isinstance(make, tuple):
                keep, ops = (make[1], []) if make[0] == "keep" else ([], make[1])
                tflite = quantize_selective(dbg, keep, ops, int8_io)
                floats = check_result(tflite, keep, ops)
                path = store.put_bytes("tflite", key_of_bytes(tflite), ".tflite", tflite)
                report = _evaluate_tflite(prepared, tflite, str(path), off, store, _noop, {
                    "reproduce": None, "route": Route.SAVED_MODEL.value, "optimization": opt.value,
                    "int8_io": bool(int8_io), "calls": selective_lines(keep, ops, int8_io), "command": "",
                    "warnings": [], "cached": False, "converter_log": "", "convert_s": 0.0, "quantizer": "tf",
                    "cell": (f"{Route.SAVED_MODEL.value}-{opt.value} ({', '.join(ops)} float)" if ops else
                             selective_label(Route.SAVED_MODEL.value, opt.value, len(floats))), "keep_float": keep,
                    "keep_float_ops": ops, "float_ops": floats, "float_cost_bytes": len(tflite) - len(quant),
                    "plain_bytes": len(quant)})
            else:
                report = make()
        except TFLiteLabError as e:
            out.append(remedy_entry(remedy, changed, error=e.user_message, **extra))
            continue
        report = judge_report(report, tol)
        report.setdefault("cell", f"{report['route']}-{report['optimization']}")
        built[report["cell"]] = report
        out.append(remedy_entry(remedy, changed, report, **extra))
        if report["ok"] and group:
            passed_groups.add(group)
    # TF's 16x8 failing (or not within tolerance): ai-edge-quantizer's 16x8, its calibration differs.
    tf16 = next((r for r in out if r["remedy"] == "int16x8"), None)
    if tf16 is not None and not tf16["ok"]:
        progress("remedy: int16x8 (ai-edge-quantizer)")
        try:
            report = judge_report(run_aeq_cell(prepared, Optimization.INT16X8, bench=off, store_root=root,
                                               limits=limits), tol)
            built[report["cell"]] = report
            out.append(remedy_entry("int16x8", "int16 activations, int8 weights (ai-edge-quantizer)", report,
                                    quantizer="aeq"))
        except TFLiteLabError as e:
            out.append(remedy_entry("int16x8", "int16 activations, int8 weights (ai-edge-quantizer)",
                                    error=e.user_message, quantizer="aeq"))
    return sort_remedies(out), built


def key_of_bytes(data: bytes) -> str:
    from .store import key_of
    return key_of(kind="remedy", base=hashlib_sha(data))


def remedies_note(remedies: list[dict], tol) -> str:
    """The last word when nothing passes: every remedy, with its numbers."""
    def one(r):
        if r["tflite_bytes"] is None:
            return f"{r['remedy']} ({r['error']})"
        bits = [f"{r['tflite_bytes']:,} bytes"]
        if r.get("top1_agreement") is not None:
            bits.append(f"top-1 {r['top1_agreement']:.3f}")
        if r.get("psnr_db") is not None:
            bits.append(f"PSNR {r['psnr_db']:.1f} dB")
        if r.get("accuracy") is not None:
            bits.append(f"accuracy {r['accuracy']:.4g}")
        return f"{r['cell']} [{r['remedy']}]: " + ", ".join(bits)
    return ("Nothing is within tolerance: no sweep step and none of the remedies tried. " +
            "; ".join(one(r) for r in remedies) + ".")
