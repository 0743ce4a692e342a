"""The stages put together: prepare a model once, then evaluate route x recipe cells on it.

These functions are what worker processes run (see worker.py); results are plain JSON-able dicts
so they cross process boundaries and land in the store unchanged.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .config import Limits
from .errors import ConversionError, TFLiteLabError
from .bench import BenchSpec
from .models import open_cached as _open
from .store import Store, key_of, load_npz as _load_npz, now_utc
from .types import ModelSource, Optimization, Route, Signature, SourceFormat, Tolerances, source_from_json as _source


@dataclass(frozen=True)
class SampleSpec:
    """Where samples come from: a user file, or random draws from the signature."""

    path: str | None = None
    count: int | None = None           # None: 64 random, or every sample in the file
    seed: int = 0
    low: float | None = None           # None: from the model where it declares a range (ids), else 0
    high: float | None = None          # None: from the model where it declares a range (ids), else 1
    lengths: tuple = ()                # ((input name or "" for every input, length), ...) of dynamic dims
    image_range: tuple = (0.0, 1.0)
    labels: str | None = None          # --labels FILE (.npy/.csv); else labels inside the samples file
    labels_key: str = "labels"         # the .npz key or CSV column holding labels

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(tuple(x) for x in self.lengths or ()))
        # Jobs run in their own workspace (another cwd): a relative path would point nowhere.
        for name in ("path", "labels"):
            if getattr(self, name):
                object.__setattr__(self, name, str(Path(getattr(self, name)).resolve()))

    def key(self) -> str:
        d = asdict(self)
        for name in ("path", "labels"):
            if d[name]:
                p = Path(d[name])
                d[name] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else _folder_sha(p)
        return key_of(**d)


def _folder_sha(p: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")) if p.is_dir() else []:
        if f.is_file():     # the relative path: class-named subfolders are the labels
            h.update(f.relative_to(p).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def _noop(step: str) -> None:
    pass


def source_json(s: ModelSource) -> dict:
    return {**asdict(s), "format": s.format.value}


def describe(source: dict, limits: Limits | None = None, progress=_noop, refused_ok: bool = False) -> dict:
    """Signature, parameter count, layer summary (and, for .tflite, the inspection).

    ``refused_ok``: a .tflite refused for its ops is described anyway (its op table, each op with
    whether it runs here; ``signature`` None, it is never loaded), for ``inspect``.
    """
    from .inspect import analyzer_report, inspect_tflite
    limits = limits or Limits.from_env()
    src = _source(source)
    if src.format is SourceFormat.TFLITE:
        from .runtime import TFLiteModel
        data = Path(src.path).read_bytes()
        insp = inspect_tflite(data, src.filename)
        if insp.refused and refused_ok:
            return {"source": source, "signature": None, "info": {"params": None, "layers": []},
                    "inspection": {**insp.to_json(), "analysis": ""}}
        sig = TFLiteModel(data, name=src.filename, inspection=insp).signature
        return {"source": source, "signature": sig.to_dict(), "info": {"params": None, "layers": []},
                "inspection": {**insp.to_json(), "analysis": analyzer_report(data)}}
    if src.format is SourceFormat.SAVED_MODEL:
        # Read from the protobuf: describing never loads or runs the graph.
        from .errors import SignatureError
        from .graph_policy import check_saved_model
        from .models import check_input_bounds
        from .signature import signature_def_signature
        report = check_saved_model(src.path, src.filename)
        if "serving_default" not in report.signatures:
            raise SignatureError(f"{src.filename} has no 'serving_default' signature; export it with "
                                 "model.export() or tf.saved_model.save(..., signatures=...).")
        sig = signature_def_signature(report.signatures["serving_default"])
        check_input_bounds(sig, limits)
        return {"source": source, "signature": sig.to_dict(),
                "info": {"params": report.params, "layers": [], "recurrent": False}, "inspection": None}
    om = _open(src, limits)
    return {"source": source, "signature": om.signature.to_dict(), "info": om.info(), "inspection": None}


def _make_samples(signature: Signature, spec: SampleSpec, limits: Limits, ranges=(), walked: bool = False):
    """``ranges``/``walked``: what the loaded model declares about its inputs (samples.keras_input_ranges)."""
    from .samples import load_labels_file, load_samples_path, random_samples
    if spec.path:
        s = load_samples_path(spec.path, signature, limits, tuple(spec.image_range), spec.labels_key)
    else:
        s = random_samples(signature, min(spec.count or 64, limits.max_samples), spec.seed, spec.low, spec.high,
                           ranges=ranges, lengths=spec.lengths, walked=walked, limits=limits)
    if spec.labels:     # one label per sample of the file (before --num-samples cuts both)
        s.labels = load_labels_file(spec.labels, s.count, None, spec.labels_key)
        s.class_names = None
    if spec.path and spec.count:
        s.arrays = {k: v[: spec.count] for k, v in s.arrays.items()}
        if s.labels is not None:
            s.labels = s.labels[: spec.count]
    return s



def _prepared_key(source: dict, spec: SampleSpec, bench: BenchSpec) -> str:
    return key_of(kind="prepared", model=source["sha256"], samples=spec.key(), bench=asdict(bench))


def stored_prepared(source: dict, spec: SampleSpec, bench: BenchSpec, *, store_root: str | None = None) -> dict | None:
    """What ``prepare`` gave before for the same model bytes, samples and bench settings, while its
    files are still in the store; None otherwise. Reads the store only (no TensorFlow)."""
    cached = Store(store_root).get_json("reports", _prepared_key(source, spec, bench))
    if cached and Path(cached["samples_path"]).exists() and (
            cached["reference_path"] is None or Path(cached["reference_path"]).exists()) and (
            not cached.get("labels") or Path(cached["labels"]["path"]).exists()):
        return {**cached, "cached": True}
    return None


def prepare(source: dict, spec: SampleSpec, bench: BenchSpec, *, store_root: str | None = None,
            limits: Limits | None = None, progress=_noop, export: bool = True) -> dict:
    """Load the original, derive its signature, fix the samples, run the reference, export once.

    ``export=False`` (only the keras route will run: it never reads the export) skips the export;
    a later cell that needs it exports on demand."""
    limits = limits or Limits.from_env()
    store = Store(store_root)
    src = _source(source)
    key = _prepared_key(source, spec, bench)
    cached = stored_prepared(source, spec, bench, store_root=store_root)
    if cached:
        return cached
    t0 = time.perf_counter()
    progress("load")
    if src.format is SourceFormat.TFLITE:
        return _prepare_tflite_only(src, source, spec, limits, store, key, t0)
    om = _open(src, limits)
    load_s = time.perf_counter() - t0
    ranges = input_ranges(om)
    samples = _make_samples(om.signature, spec, limits, ranges, walked=om.is_keras)
    samples_path = store.path("samples", key, ".npz")
    samples.save(samples_path)
    labels = _save_labels(store, key, samples)
    from .models import exported_saved_model, needs_fixed_batch
    if not export and om.is_keras:
        progress("run original")
        t2 = time.perf_counter()
        reference = _run_original(om, samples)
        ref_s = time.perf_counter() - t2
        export_dir, fixed, export_s = None, needs_fixed_batch(om.keras_model), 0.0
    else:
        progress("export")
        from concurrent.futures import ThreadPoolExecutor
        # The export (mostly Python tracing) and the reference run (TensorFlow kernels) overlap on
        # two cores; latency is measured afterwards, on a quiet machine.
        with ThreadPoolExecutor(1) as ex:
            t1 = time.perf_counter()
            exporting = ex.submit(exported_saved_model, om)
            progress("run original")
            t2 = time.perf_counter()
            reference = _run_original(om, samples)
            ref_s = time.perf_counter() - t2
            export_dir, fixed = exporting.result()
            export_s = time.perf_counter() - t1
    reference_path = store.path("samples", key + "-reference", ".npz")
    np.savez(reference_path, **reference)
    latency = None      # the original is timed with each .tflite, in the bench phase (bench.time_all)
    if labels:
        from .metrics import labels_fit, task_score
        labels["output"], labels["metric"] = labels_fit(reference, samples.labels)
        labels["original"] = task_score(reference[labels["output"]], samples.labels, labels["metric"])
    nonfinite = [k for k, v in reference.items() if not np.all(np.isfinite(v))]
    warnings = list(samples.warnings)
    if not spec.path:
        from .samples import image_classifier_on_noise
        noise = image_classifier_on_noise(om.signature, reference)
        if noise:
            warnings.append(noise)
            samples.caveats.append(noise)
    if nonfinite:
        warnings.append(f"The original model itself gives NaN/inf on these samples for {', '.join(nonfinite)}.")
    flat = [v.reshape(len(v), -1) for v in reference.values()]
    if len(samples.arrays) and samples.count > 1 and all(np.allclose(f, f[:1]) for f in flat):
        warnings.append("The original model gives the same output for every sample (untrained, or BatchNorm "
                        "statistics at their defaults?): error metrics will say little.")
    prepared = {
        "source": source, "signature": om.signature.to_dict(), "info": om.info(),
        "samples_path": str(samples_path), "samples_origin": samples.origin, "num_samples": samples.count,
        "samples_random": not spec.path, "sample_inputs": samples.inputs, "sample_caveats": samples.caveats,
        "input_ranges": [r.to_json() for r in ranges],
        "samples_sha": samples.sha256, "reference_path": str(reference_path), "export_dir": export_dir,
        "fixed_batch": fixed, "original_latency": latency, "warnings": warnings, "labels": labels,
        "timings_s": {"load": load_s, "export": export_s, "reference": ref_s}, "cached": False,
        "created_at": now_utc(),
    }
    store.put_json("reports", key, prepared)
    return prepared


def input_ranges(om) -> tuple:
    """What a loaded Keras model declares about its inputs' values and lengths; () for SavedModels."""
    if not om.is_keras:
        return ()
    from .samples import keras_input_ranges
    try:
        return keras_input_ranges(om.keras_model)
    except Exception:      # an unusual graph declares nothing: the generic sample rules apply
        return ()


def _run_original(om, samples) -> dict[str, np.ndarray]:
    """The reference outputs; TensorFlow refusing the samples (an index past a vocabulary, a shape
    it cannot take) is the user's input problem, said in one line, not an internal error."""
    from .errors import SampleError
    try:
        return om.predict(samples.arrays)
    except TFLiteLabError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first.split("}} ", 1)[-1][:200]          # drop TF's {{function_node ...}} prefix
        raise SampleError(f"The original model fails on these samples ({samples.origin}): {first}. Check that "
                          "they fit the model: value ranges (token ids below the vocabulary size; --low/--high "
                          "for random samples), shapes and dtypes.", detail=str(e)) from None


def _prepare_tflite_only(src, source, spec, limits, store, key, t0) -> dict:
    """A .tflite without its original: samples from its own signature; run and benchmark only."""
    from .models import check_input_bounds
    from .runtime import TFLiteModel
    sig = TFLiteModel(Path(src.path).read_bytes(), name=src.filename).signature
    check_input_bounds(sig, limits)
    samples = _make_samples(sig, spec, limits)
    samples_path = store.path("samples", key, ".npz")
    samples.save(samples_path)
    prepared = {"labels": _save_labels(store, key, samples), "samples_random": not spec.path,
        "sample_inputs": samples.inputs, "sample_caveats": samples.caveats, "input_ranges": [],
        "source": source, "signature": sig.to_dict(), "info": {"params": None, "layers": [], "recurrent": False},
        "samples_path": str(samples_path), "samples_origin": samples.origin, "num_samples": samples.count,
        "samples_sha": samples.sha256, "reference_path": None, "export_dir": None, "fixed_batch": False,
        "original_latency": None, "warnings": list(samples.warnings) + [
            "No original model given: the .tflite was run and benchmarked, not compared."],
        "timings_s": {"load": time.perf_counter() - t0, "export": 0.0, "reference": 0.0}, "cached": False,
        "created_at": now_utc(),
    }
    store.put_json("reports", key, prepared)
    return prepared


def _save_labels(store: Store, key: str, samples) -> dict | None:
    """The samples' labels next to them (never inside samples.npz, which is keyed by input name)."""
    if samples.labels is None:
        return None
    path = store.path("samples", key + "-labels", ".npy")
    np.save(path, np.asarray(samples.labels), allow_pickle=False)
    return {"path": str(path), "count": int(len(samples.labels)), "class_names": samples.class_names}


def convert_cached(prepared: dict, route: Route, optimization: Optimization, int8_io: bool,
                   store: Store, limits: Limits, progress=_noop):
    """The ConversionResult for this cell, from the store when the same bytes were converted before.

    int8 and int16x8 share one calibration per model, samples and route (``_stored_calibration``):
    the first of them calibrates, every other quantizes the stored statistics, in this process or
    another, with the same bytes as a conversion of its own. tflite_convert cannot calibrate."""
    from .recipes import RECIPES
    from .routes import ConversionRequest, ConversionResult, check_supported
    from .samples import representative_dataset
    src = _source(prepared["source"])
    check_supported(route, optimization, src.format)
    req = ConversionRequest(route, optimization, int8_io)
    key = req.key(src.sha256, prepared["samples_sha"])
    meta = store.get_json("tflite", key)
    tpath = store.path("tflite", key, ".tflite")
    if meta and tpath.exists():
        return ConversionResult(tpath.read_bytes(), route, optimization, meta["calls"], meta["warnings"],
                                meta["log"], meta["convert_s"], meta["fixed_batch"], cached=True,
                                created_at=meta.get("created_at")), str(tpath)
    result = None
    if RECIPES[optimization].needs_calibration and route is not Route.CLI:
        result = _convert_from_calibration(prepared, src, req, store, limits, progress)
    if result is None:
        calibrated = optimization in (Optimization.INT8, Optimization.INT16X8)
        unrolled = bool(prepared["fixed_batch"] and calibrated)
        om = _for_conversion(src, prepared, route, unrolled, limits)
        progress("convert")
        rep = None
        if calibrated:
            rep = representative_dataset(_load_npz(prepared["samples_path"]), {t.name: t.key for t in om.signature.inputs})
        from .routes import convert
        result = convert(req, om, _cell_export_dir(prepared, om, route, unrolled), prepared["fixed_batch"], rep,
                         None, unrolled)
    result.created_at = now_utc()
    store.put_bytes("tflite", key, ".tflite", result.tflite)
    store.put_json("tflite", key, {"calls": result.calls, "warnings": result.warnings, "log": result.log,
                                   "convert_s": result.convert_s, "fixed_batch": result.fixed_batch,
                                   "created_at": result.created_at})
    return result, str(tpath)


def _for_conversion(src: ModelSource, prepared: dict, route: Route, unrolled: bool, limits: Limits):
    """The original as this cell's converter needs it. A route that reads the SavedModel prepare
    exported (or the uploaded one) needs its name and signature only: loading it again would cost a
    fresh worker seconds on a large model (prepare loaded and checked it)."""
    if route is not Route.KERAS and not unrolled and (prepared.get("export_dir") or not src.format.is_keras):
        from .models import OriginalModel
        return OriginalModel(src, Signature.from_dict(prepared["signature"]))
    return _open(src, limits)


def _cell_export_dir(prepared: dict, om, route: Route, unrolled: bool) -> str | None:
    from .models import exported_saved_model
    return exported_saved_model(om, unrolled=True)[0] if unrolled else (
        prepared["export_dir"] or (None if route is Route.KERAS else exported_saved_model(om)[0]))


def _calibration_key(prepared: dict, route: Route) -> str:
    """What a calibration depends on: the model bytes, the samples, the route's converter, the
    batch-1/unrolled variant and TensorFlow (every key also carries the code fingerprint)."""
    from importlib.metadata import version
    fixed = bool(prepared["fixed_batch"])
    return key_of(kind="calibration", model=prepared["source"]["sha256"], samples=prepared["samples_sha"],
                  route=route.value, fixed_batch=fixed, unrolled=fixed, tf=version("tensorflow"))


def _stored_calibration(store: Store, key: str):
    from .routes import Calibration
    meta = store.get_json("calibration", key)
    path = store.path("calibration", key, ".tflite")
    if not meta or (not meta.get("unusable") and not path.exists()):
        return None
    return Calibration.from_meta(b"" if meta.get("unusable") else path.read_bytes(), meta)


def _lock_waiting(fh, on_wait) -> None:
    """An exclusive flock on the open file ``fh``; ``on_wait()`` first when another process holds it
    (a killed holder's lock dies with it)."""
    import fcntl
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        on_wait()
        fcntl.flock(fh, fcntl.LOCK_EX)


def _convert_from_calibration(prepared: dict, src: ModelSource, req, store: Store, limits: Limits, progress):
    """The cell quantized from the model's one calibration (made here if no job made it yet: a
    second job waits for the first instead of calibrating too); None when the model's recipes
    must calibrate on their own (``Calibration.unusable``)."""
    from dataclasses import replace
    from .routes import calibrate, quantize_calibrated
    from .samples import representative_dataset
    key = _calibration_key(prepared, req.route)
    cal, reused = _stored_calibration(store, key), True
    if cal is None:
        with open(store.path("calibration", key, ".lock"), "a") as lock:
            _lock_waiting(lock, lambda: progress("wait for calibration"))
            cal = _stored_calibration(store, key)       # made by the job we waited for
            if cal is None:
                reused = False
                fixed = bool(prepared["fixed_batch"])
                om = _for_conversion(src, prepared, req.route, fixed, limits)
                progress("convert")         # the converter's run (calibrate-only): what a cancel waits for
                rep = representative_dataset(_load_npz(prepared["samples_path"]),
                                             {t.name: t.key for t in om.signature.inputs})
                cal = replace(calibrate(req, om, _cell_export_dir(prepared, om, req.route, fixed), fixed, rep, fixed),
                              created_at=now_utc())
                if not cal.unusable:
                    store.put_bytes("calibration", key, ".tflite", cal.model)
                store.put_json("calibration", key, cal.meta())     # last: readers go by the JSON
        # closing the file releases the lock, also when calibrating raised
    if cal.unusable:
        return None
    if reused:
        progress("convert")
    return quantize_calibrated(req, cal, reused)


def run_cell(prepared: dict, route: Route | str, optimization: Optimization | str, *, int8_io: bool = False,
             bench: BenchSpec = BenchSpec(), store_root: str | None = None, limits: Limits | None = None,
             progress=_noop, targets: dict | None = None) -> dict:
    """Convert one route x recipe cell, run it on the prepared samples and measure it.

    ``targets``: ``{name: options}`` of deployment targets to run the cell on (see targets/).
    Returns the report (see ``report_json``); a refused or failed cell raises the project's errors.
    """
    job_start = time.time()         # the job's wall-clock window: a bench phase must not overlap it
    limits = limits or Limits.from_env()
    store = Store(store_root)
    route, optimization = Route(route), Optimization(optimization)
    int8_io = bool(int8_io and optimization is Optimization.INT8)
    result, tflite_path = convert_cached(prepared, route, optimization, int8_io, store, limits, progress)
    from .recipes import RECIPES
    from .reproduce import reproduction
    src = prepared["source"]
    code, language = reproduction(
        route, optimization, filename=src["filename"], fmt=src["format"], int8_io=int8_io,
        input_keys={t["name"]: t.get("key") or t["name"] for t in prepared["signature"]["inputs"]},
        fixed_batch=prepared["fixed_batch"],
        unrolled=bool(prepared["fixed_batch"] and RECIPES[optimization].needs_calibration))
    report = _evaluate_tflite(prepared, result.tflite, tflite_path, bench, store, progress, {
        "reproduce": {"code": code, "language": language},
        "route": route.value, "optimization": optimization.value, "int8_io": int8_io,
        "calls": result.calls, "command": result.command, "warnings": list(result.warnings),
        # A cached cell keeps the earlier run's convert time, labelled with that run's date.
        "cached": result.cached, "cached_at": result.created_at if result.cached else None,
        "converted_at": result.created_at, "converter_log": result.log, "convert_s": result.convert_s},
        targets=targets, store_root=store_root)
    return {**report, "job_window": [job_start, time.time()]}


def run_provided(prepared: dict, tflite_source: dict, *, bench: BenchSpec = BenchSpec(),
                 store_root: str | None = None, progress=_noop, targets: dict | None = None) -> dict:
    """Compare a .tflite the user brought against its original (no conversion)."""
    store = Store(store_root)
    data = Path(tflite_source["path"]).read_bytes()
    return _evaluate_tflite(prepared, data, tflite_source["path"], bench, store, progress, {
        "route": None, "optimization": "provided", "int8_io": False, "calls": [], "command": "", "reproduce": None,
        "warnings": [], "cached": False, "cached_at": None, "converted_at": None, "converter_log": "",
        "convert_s": 0.0}, tflite_source["filename"], targets=targets, store_root=store_root)


def _evaluate_tflite(prepared, tflite: bytes, tflite_path: str, bench: BenchSpec, store: Store, progress, head: dict,
                     name: str = "The converted .tflite", *, targets: dict | None = None,
                     store_root: str | None = None) -> dict:
    from .inspect import inspect_tflite, recipe_not_applied, refuse_unsafe
    from .metrics import compare_outputs, output_stats
    from .runtime import TFLiteModel
    progress("run tflite")
    t0 = time.perf_counter()
    sig = Signature.from_dict(prepared["signature"])
    insp = inspect_tflite(tflite, name)
    refuse_unsafe(insp, name)            # Flex ops, custom ops the installed LiteRT has no kernel for
    warnings = list(head["warnings"]) + insp.findings
    unchanged = recipe_not_applied(insp, head["optimization"])
    if unchanged:
        warnings.append(unchanged)
    model = TFLiteModel(tflite, bench.threads, name, insp)
    in_map, out_map = model.match(sig)
    warnings += [n.removeprefix("warning: ") for n in model.match_notes if n.startswith("warning: ")]
    samples = _load_npz(prepared["samples_path"])
    reference = _load_npz(prepared["reference_path"]) if prepared["reference_path"] else None
    try:
        t_run = time.perf_counter()
        candidate = model.predict(samples, in_map, out_map)
        run_s = time.perf_counter() - t_run
    except TFLiteLabError:
        raise
    except Exception as e:
        raise ConversionError(f"LiteRT failed running the converted model: {str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}",
                              detail=str(e)) from None
    progress("compare")
    metrics = compare_outputs(reference, candidate) if reference is not None else []
    accuracy = None
    if prepared.get("labels"):
        from .metrics import accuracy_report
        accuracy = accuracy_report(reference, candidate, np.load(prepared["labels"]["path"], allow_pickle=False))
    stats = output_stats(candidate)
    compare_s = time.perf_counter() - t0
    pred_key = hashlib.sha256(tflite).hexdigest()[:24] + "-" + prepared["samples_sha"][:16]
    pred_path = store.path("predictions", pred_key, ".npz")
    np.savez(pred_path, **candidate)
    target_reports = {}
    if targets:
        from .targets import TargetInput, run_targets
        progress("targets")
        target_reports = run_targets(targets, TargetInput(
            tflite_path, prepared["samples_path"], prepared["reference_path"], prepared["signature"],
            dict(in_map), dict(out_map), store_root))
    latency = {"original": None, "tflite": None}
    if bench.enabled:
        # Timed after the conversion, in this job, with nothing else of this run converting; a
        # matrix times its cells in a bench phase of its own instead (orchestrate.run_cells).
        from .bench import bench_phase
        timed = bench_phase(prepared, {"cell": tflite_path}, bench, progress=progress)
        latency = {"original": timed["original"], "tflite": timed["tflite"]["cell"], "conditions": timed["conditions"]}
    src = prepared["source"]
    return {
        **head,
        "warnings": warnings + list(prepared.get("warnings", [])),
        "original_bytes": src["size_bytes"], "tflite_bytes": len(tflite),
        "size_ratio": len(tflite) / src["size_bytes"] if src["size_bytes"] else None,
        "num_samples": prepared["num_samples"], "samples": sample_facts(prepared),
        "metrics": [{**m.to_json(), "per_sample_max_abs": list(m.per_sample_max_abs)} for m in metrics],
        "output_stats": stats, "matching": model.match_notes, "accuracy": accuracy,
        "latency": latency,
        "timings_s": {"load": prepared["timings_s"]["load"], "convert": head["convert_s"], "compare": compare_s},
        "tflite_path": tflite_path, "samples_path": prepared["samples_path"],
        "reference_path": prepared["reference_path"], "predictions_path": str(pred_path),
        "labels_path": (prepared.get("labels") or {}).get("path"),
        "inspection": insp.to_json(), "source": src, "targets": target_reports,
        # The load/reference timings belong to the run that prepared the model (maybe an earlier one).
        "prepared_at": prepared.get("created_at"), "prepared_cached": bool(prepared.get("cached")),
    }


def _when(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC") if iso else "an earlier run (date not recorded)"


def provenance(report: dict) -> str | None:
    """One line when results came from the store, not from this run (None when all are fresh)."""
    if report.get("cached"):
        return (f"From the store: converted {_when(report.get('cached_at'))}; the conversion time is from that "
                "run. Any change to TFLite Lab's code, TensorFlow or LiteRT converts afresh.")
    return None


NO_REFERENCE = "ran, no reference"


def judge_report(report: dict, tolerances: Tolerances | None = None) -> dict:
    """Apply tolerances (defaults by recipe) to a cell report.

    Adds ``ok``, ``verdict`` ("pass", "fail", or "ran, no reference" for a .tflite run without its
    original, which fails only on NaN/inf outputs), ``failures`` and ``tolerances``, and to each
    output its ``task`` and the ``checks`` applied (bound, value, why) or ``not_applied``.
    """
    from .metrics import judge
    from .types import OutputMetrics
    opt = report["optimization"]
    opt = Optimization.NONE if opt == "provided" else Optimization(opt)
    tol = tolerances or Tolerances.for_optimization(opt)
    if report.get("reference_path") is None:
        bad = [s for s in report.get("output_stats", []) if s["nonfinite"]]
        failures = [f"{s['name']}: {s['nonfinite']} of the outputs are NaN or inf" for s in bad]
        targets, target_fail = _judge_targets(report, tol, opt)
        return {**report, "ok": not failures and not target_fail, "verdict": "fail" if failures else NO_REFERENCE,
                "failures": failures + target_fail, "tolerances": tol.to_json(),
                **({"targets": targets} if targets else {})}
    metrics = [OutputMetrics.from_json(m) for m in report["metrics"]]
    v = judge(metrics, opt, tol)
    accuracy, acc_fail = _judge_accuracy(report.get("accuracy"), tol)
    judged = []
    for m in report["metrics"]:
        task, why = v.tasks[m["name"]]
        judged.append({**m, "task": task, "task_reason": why,
                       "checks": [c.to_json() for c in v.checks if c.output == m["name"]],
                       "not_applied": v.notes.get(m["name"], [])})
    ok = v.ok and not acc_fail
    targets, target_fail = _judge_targets(report, tol, opt)
    return {**report, "metrics": judged, "ok": ok and not target_fail, "verdict": "pass" if ok else "fail",
            "accuracy": accuracy, "failures": v.failures + acc_fail + target_fail, "tolerances": tol.to_json(),
            **({"targets": targets} if targets else {})}


def _judge_targets(report: dict, tol: Tolerances, opt: Optimization) -> tuple[dict, list[str]]:
    """Each deployment target judged with the cell's tolerances (targets.judge_targets)."""
    if not report.get("targets"):
        return {}, []
    from .targets import judge_targets
    return judge_targets(report, tol, opt)


def _judge_accuracy(accuracy: dict | None, tol: Tolerances) -> tuple[dict | None, list[str]]:
    """The accuracy with its check (when --min-accuracy-delta is set) and the failure it makes."""
    if not accuracy or tol.min_accuracy_delta is None:
        return accuracy, []
    from .metrics import accuracy_check
    check = accuracy_check(accuracy, tol.min_accuracy_delta)
    failed = [] if check["ok"] else [
        f"{accuracy['output']}: {accuracy['metric']} {accuracy['original']} -> {accuracy['tflite']} "
        f"(change {check['value']} < {tol.min_accuracy_delta:g})"]
    return {**accuracy, "check": check}, failed


def sample_facts(prepared: dict) -> dict:
    """Where a cell's samples came from: random or the user's, and per input what was drawn."""
    return {"random": bool(prepared.get("samples_random")), "origin": prepared.get("samples_origin"),
            "inputs": prepared.get("sample_inputs"), "caveats": list(prepared.get("sample_caveats") or [])}


VERDICT_WORDS = {"pass": "PASS", "fail": "FAIL", "ran, no reference": "RAN, NO REFERENCE (nothing compared)",
                 "error": "ERROR"}


def samples_phrase(report: dict) -> str:
    """ "on 64 random samples" (or "on 12 samples") for a compared cell, else ""."""
    n = report.get("num_samples")
    if report.get("verdict") not in ("pass", "fail") or not n:
        return ""
    kind = "random " if (report.get("samples") or {}).get("random") else ""
    return f"on {n} {kind}sample{'s' if n != 1 else ''}"


def verdict_text(report: dict, words: dict | None = None) -> str:
    """The verdict as people read it: "PASS on 64 random samples" (a PASS on random values proves the
    arithmetic, not the task); the JSON ``verdict`` keeps its values."""
    word = (words or VERDICT_WORDS).get(report.get("verdict"), "PASS" if report.get("ok") else "FAIL")
    return " ".join(x for x in (word, samples_phrase(report)) if x)


def report_json(report: dict) -> dict:
    """The CLI/JSON contract: one object per cell (see README)."""
    lat = report.get("latency") or {}
    def summ(x):
        return None if not x else {"median": x["median_ms"], "p90": x["p90_ms"]}
    return {
        "route": report["route"], "optimization": report["optimization"], "ok": report["ok"],
        "verdict": report.get("verdict"), "int8_io": report.get("int8_io", False),
        "original_bytes": report["original_bytes"], "tflite_bytes": report["tflite_bytes"],
        "size_ratio": report["size_ratio"], "num_samples": report["num_samples"],
        "samples": report.get("samples"),
        "outputs": [{k: v for k, v in m.items() if k != "per_sample_max_abs"} for m in report["metrics"]],
        "output_stats": report.get("output_stats", []), "matching": report.get("matching", []),
        "accuracy": report.get("accuracy"), "latency_ms": {"original": summ(lat.get("original")), "tflite": summ(lat.get("tflite"))},
        "latency_conditions": lat.get("conditions"), "job_window": report.get("job_window"),
        "timings_s": report["timings_s"], "warnings": report["warnings"], "failures": report.get("failures", []),
        "calls": report["calls"], "command": report["command"], "cached": report.get("cached", False),
        "cached_at": report.get("cached_at"), "converted_at": report.get("converted_at"),
        "prepared_at": report.get("prepared_at"),
        "tolerances": report.get("tolerances"),
        **({"targets": _public_targets(report["targets"])} if report.get("targets") else {}),
        **{k: report[k] for k in ("cell", "quantizer", "keep_float", "keep_float_ops", "float_ops", "float_cost_bytes")
           if k in report},
    }


def _public_targets(targets: dict) -> dict:
    from .targets import public_targets
    return public_targets(targets)


def failed_cell_json(route: str, optimization: str, error: TFLiteLabError) -> dict:
    """A matrix cell that was refused or failed: same keys, ``ok`` false and the reason."""
    return {"route": route, "optimization": optimization, "ok": False, "verdict": "error", "error": error.user_message,
            "error_kind": type(error).__name__, "original_bytes": None, "tflite_bytes": None, "size_ratio": None,
            "num_samples": None, "outputs": [], "accuracy": None, "latency_ms": {"original": None, "tflite": None},
            "timings_s": None, "warnings": [], "failures": [error.user_message], "calls": [], "command": ""}
