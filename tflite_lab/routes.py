"""Stage 3: the four conversion routes and the one capability table that governs them.

The table is plain data (no TensorFlow): the CLI's choices, the matrix, the pages and the tests
read it. ``convert`` does the work, each route through its own TensorFlow API.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError, UnsupportedCombination
from .recipes import CLI_FLAGS, RECIPES
from .types import Optimization, Route, SourceFormat

KERAS_FORMATS = frozenset({SourceFormat.KERAS, SourceFormat.H5})
GRAPH_FORMATS = frozenset({SourceFormat.KERAS, SourceFormat.H5, SourceFormat.SAVED_MODEL})
ALL_OPTIMIZATIONS = frozenset(Optimization)


@dataclass(frozen=True)
class RouteCapability:
    route: Route
    title: str
    explanation: str
    api: str
    sources: frozenset
    optimizations: frozenset
    refusals: dict = field(default_factory=dict)   # Optimization -> reason


CAPABILITIES = {
    Route.KERAS: RouteCapability(
        Route.KERAS, "from_keras_model",
        "Converts the in-memory Keras model directly; the shortest path for Keras files.",
        "tf.lite.TFLiteConverter.from_keras_model", KERAS_FORMATS, ALL_OPTIMIZATIONS),
    Route.SAVED_MODEL: RouteCapability(
        Route.SAVED_MODEL, "from_saved_model",
        "Converts a SavedModel (Keras files are exported once); the recommended, most general route.",
        "tf.lite.TFLiteConverter.from_saved_model", GRAPH_FORMATS, ALL_OPTIMIZATIONS),
    Route.CONCRETE_FUNCTION: RouteCapability(
        Route.CONCRETE_FUNCTION, "from_concrete_functions",
        "Converts the traced serving function of the exported model; for custom signatures.",
        "tf.lite.TFLiteConverter.from_concrete_functions", GRAPH_FORMATS, ALL_OPTIMIZATIONS),
    Route.CLI: RouteCapability(
        Route.CLI, "tflite_convert",
        "Runs the tflite_convert program on a SavedModel; what CI/CD scripts use.",
        "tflite_convert", GRAPH_FORMATS,
        frozenset({Optimization.NONE, Optimization.DYNAMIC, Optimization.FLOAT16}),
        refusals={o: f"{o.value} needs representative samples, but route 'cli' cannot calibrate "
                     "(tflite_convert has no flag for a representative dataset). "
                     "Use route 'saved_model', or optimization 'dynamic'."
                  for o in (Optimization.INT8, Optimization.INT16X8)}),
}


def refusal(route: Route | str, optimization: Optimization | str, fmt: SourceFormat | str) -> str | None:
    """Why this cell cannot run, in one line; None when it can."""
    route, optimization, fmt = Route(route), Optimization(optimization), SourceFormat(fmt)
    cap = CAPABILITIES[route]
    if fmt is SourceFormat.TFLITE:
        return "The model is already a .tflite; there is nothing to convert. Compare it against its original instead."
    if fmt not in cap.sources:
        return (f"Route '{route.value}' needs a Keras model, but this is a {fmt.value} that Keras 3 cannot load. "
                "Use route 'saved_model', 'concrete_function' or 'cli'.")
    if optimization not in cap.optimizations:
        return cap.refusals.get(optimization, f"Route '{route.value}' cannot apply optimization '{optimization.value}'.")
    return None


def check_supported(route, optimization, fmt) -> None:
    """Raises UnsupportedCombination, before any work, for a cell the table excludes."""
    reason = refusal(route, optimization, fmt)
    if reason:
        raise UnsupportedCombination(reason)


def supported_cells(fmt: SourceFormat | str) -> list[tuple[Route, Optimization]]:
    return [(r, o) for r in Route for o in Optimization if refusal(r, o, fmt) is None]


@dataclass(frozen=True)
class ConversionRequest:
    route: Route
    optimization: Optimization
    int8_io: bool = False          # int8 recipe only: int8 model inputs/outputs instead of float

    def key(self, model_sha: str, calibration_sha: str | None) -> str:
        """Store key: the model bytes and everything that changes the converted bytes."""
        from .store import key_of
        needs = RECIPES[self.optimization].needs_calibration
        return key_of(kind="tflite", model=model_sha, route=self.route.value, opt=self.optimization.value,
                      int8_io=bool(self.int8_io and self.optimization is Optimization.INT8),
                      calibration=calibration_sha if needs else None)


@dataclass
class ConversionResult:
    tflite: bytes
    route: Route
    optimization: Optimization
    calls: list[str]                # the exact Python lines or shell command that produced it
    warnings: list[str]
    log: str
    convert_s: float
    fixed_batch: bool = False
    cached: bool = False
    created_at: str | None = None   # when it was converted (UTC); for a cached result, the earlier run

    @property
    def command(self) -> str:
        return "\n".join(self.calls)


# ---- failure recognition: the common converter errors, with what to do ----

HINTS = [
    (re.compile(r"Lowering tensor list ops is failed"),
     "a recurrent layer with a dynamic batch cannot be lowered to builtin ops on TF 2.21. Re-export the model "
     "with a fixed batch (keras.Input(batch_shape=(1, ...))); Keras files are handled automatically."),
    (re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
     "the model uses TensorFlow op '{0}', which has no TFLite builtin kernel. Replace it in the model; Select-TF "
     "ops would need the Flex delegate, which LiteRT here cannot run."),
    (re.compile(r"ops are not supported|are not supported by the TFLite builtin"),
     "some TensorFlow ops have no TFLite builtin kernel. Replace them in the model; Select-TF ops would need "
     "the Flex delegate, which LiteRT here cannot run."),
    (re.compile(r"Empty min/max for tensor (\S+)"),
     "calibration recorded no value range for tensor {0} (typically an integer input such as token ids, "
     "which 16x8 cannot quantize). Use 'int8' or 'dynamic' for this model."),
    (re.compile(r"representative.?dataset", re.I),
     "calibration with the representative samples failed; check that the samples match the inputs."),
    (re.compile(r"quantiz\w+ .*not supported|Quantization not yet supported|Failed to quantize", re.I),
     "an op cannot be quantized with this recipe. Try 'dynamic' or 'float16', or 'int16x8'."),
    (re.compile(r"TypeError: 'NoneType' object is not callable"),
     "tflite_convert's --keras_model_file loader is broken for Keras 3 files; convert a SavedModel export instead."),
]


def explain_failure(route: Route, optimization: Optimization, log: str) -> str:
    for pattern, hint in HINTS:
        m = pattern.search(log)
        if m:
            return f"Conversion {route.value}-{optimization.value} failed: " + hint.format(*m.groups())
    last = [ln for ln in log.strip().splitlines() if ln.strip() and "W0000" not in ln and "I0000" not in ln]
    tail = last[-1].strip()[:200] if last else "no message"
    return f"Conversion {route.value}-{optimization.value} failed: {tail}"


# ---- the routes ----

def _tflite_convert_command() -> list[str]:
    exe = Path(sys.executable).with_name("tflite_convert")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorflow.lite.python.tflite_convert"]


def _conversion_warnings(fixed_batch: bool, unrolled: bool) -> list[str]:
    warnings: list[str] = []
    if fixed_batch:
        warnings.append("Converted with a fixed batch of 1: recurrent layers fail with a dynamic batch on TF 2.21 "
                        "(\"Lowering tensor list ops is failed\"). The .tflite takes one sample per call.")
    if unrolled:
        warnings.append("Recurrent layers were unrolled (unroll=True, same weights): calibrating the looped form "
                        "crashes TF 2.21's converter (SIGSEGV) for int8/16x8.")
    return warnings


def _refuse_dict_inputs(route: Route, opt: Optimization, original) -> None:
    struct = getattr(getattr(original, "keras_model", None), "_inputs_struct", None)
    if route is Route.KERAS and isinstance(struct, dict):
        # from_keras_model traces the model with a list of inputs; a dict-input model (KerasHub
        # backbones) refuses it and TF falls back to a tf_keras path that fails ("'NoneType' ...").
        raise ConversionError(f"Conversion {route.value}-{opt.value} failed: from_keras_model cannot convert a "
                              f"model whose inputs are a dict "
                              f"({', '.join(sorted(struct))}): TensorFlow feeds it a list. Use the saved_model route "
                              "(the same model through its model.export() SavedModel).")


@contextmanager
def _one_load_per_conversion():
    """TFLiteConverter.from_saved_model loads the SavedModel in Python, and its convert() loads it
    again only to read its graph_debug_info (TF 2.21 lite.py; ~0.8 s of a 3.8 s MobileNetV2
    conversion). Within one conversion the second load is given the first's object (same folder
    and tags): the bytes are TensorFlow's own (``test_conversions_are_tensorflows_own_bytes``).
    Never across conversions: a loaded SavedModel that converted once converts differently."""
    from tensorflow.lite.python import lite
    original = lite._load
    if getattr(original, "_tflite_lab_memo", False):        # nested: the outer conversion's memo holds
        yield
        return
    loaded: dict = {}

    def load(path, tags=None):
        key = (str(path), tuple(sorted(tags)) if tags else None)
        if key not in loaded:
            loaded[key] = original(path, tags)
        return loaded[key]
    load._tflite_lab_memo = True
    lite._load = load
    try:
        yield
    finally:
        lite._load = original
        loaded.clear()


def _captured(route: Route, opt: Optimization, work):
    """``work()`` with TensorFlow's prints captured: (its value, the log). Any exception of the
    converter becomes a ConversionError with the one-line explanation and the log as detail."""
    from .capture import capture_output
    with capture_output() as cap:
        try:
            with _one_load_per_conversion():
                value = work()
            error = None
        except Exception as e:  # the converter raises many types; all mean "conversion failed"
            error = e
    if error is not None:
        full = f"{cap.text}\n{type(error).__name__}: {error}"
        raise ConversionError(explain_failure(route, opt, full), detail=full) from None
    return value, cap.text


def convert(request: ConversionRequest, original, export_dir: str | None, fixed_batch: bool,
            representative=None, workdir: str | None = None, unrolled: bool = False) -> ConversionResult:
    """Convert ``original`` (an OriginalModel) through ``request.route`` with ``request.optimization``.

    ``export_dir`` is the SavedModel folder (the source itself, or the one-time Keras export).
    Raises ConversionError with a one-line explanation and the converter's log as detail.
    """
    route, opt = request.route, request.optimization
    check_supported(route, opt, original.source.format)
    warnings = _conversion_warnings(fixed_batch, unrolled)
    t0 = time.perf_counter()
    _refuse_dict_inputs(route, opt, original)
    if route is Route.CLI:
        tflite, calls, log = _convert_cli(opt, export_dir, workdir)
    else:
        (tflite, calls), log = _captured(route, opt, lambda: _convert_api(
            request, original, export_dir, fixed_batch, representative, unrolled))
    if not tflite:
        raise ConversionError(f"Conversion {route.value}-{opt.value} produced an empty model.", detail=log)
    return ConversionResult(tflite, route, opt, calls, warnings, log, time.perf_counter() - t0, fixed_batch)


def _convert_api(request, original, export_dir, fixed_batch, representative, unrolled=False):
    from . import recipes
    converter, calls = _route_converter(request.route, original, export_dir, fixed_batch, unrolled)
    calls += recipes.apply(converter, request.optimization, representative, request.int8_io)
    calls.append("tflite_model = converter.convert()")
    return converter.convert(), calls


def _route_converter(route: Route, original, export_dir, fixed_batch, unrolled):
    """The route's TFLiteConverter, before any recipe, and the Python lines that made it."""
    import tensorflow as tf
    from .models import variant_model
    if route is Route.KERAS:
        model = variant_model(original.keras_model, fixed_batch, unrolled)
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        calls = [f"model = keras.models.load_model({original.source.filename!r}, safe_mode=True)"]
        if unrolled:
            calls.append("model = unrolled copy: LSTM/GRU configs with unroll=True, same weights")
        if fixed_batch:
            calls.append("model = keras.Model(inp := keras.Input(batch_shape=(1, *model.input_shape[1:])), model(inp))")
        calls.append("converter = tf.lite.TFLiteConverter.from_keras_model(model)")
    elif route is Route.SAVED_MODEL:
        converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        calls = _export_lines(original, export_dir, fixed_batch, unrolled)
        calls.append(f"converter = tf.lite.TFLiteConverter.from_saved_model({export_dir!r})")
    else:
        # Passing the Keras model as trackable_obj silently yields NaN outputs (weights not captured);
        # the loaded SavedModel's signature carries its variables.
        loaded = tf.saved_model.load(export_dir)
        fn = loaded.signatures["serving_default"]
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded)
        calls = _export_lines(original, export_dir, fixed_batch, unrolled)
        calls += [f"loaded = tf.saved_model.load({export_dir!r})",
                  "concrete_func = loaded.signatures['serving_default']",
                  "converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_func], loaded)"]
    return converter, calls


def _export_lines(original, export_dir, fixed_batch, unrolled) -> list[str]:
    if not original.source.format.is_keras:     # (the Keras model itself need not be loaded here)
        return []
    lines = [f"model = keras.models.load_model({original.source.filename!r}, safe_mode=True)"]
    if unrolled:
        lines.append("model = unrolled copy: LSTM/GRU configs with unroll=True, same weights")
    if fixed_batch:
        lines.append("model = keras.Model(inp := keras.Input(batch_shape=(1, *model.input_shape[1:])), model(inp))")
    lines.append(f"model.export({export_dir!r})  # once per model")
    return lines


# ---- one calibration, several recipes (recipes.quantize) ----

@dataclass(frozen=True)
class Calibration:
    """TensorFlow's calibrate-only output for one model, samples and route: the float flatbuffer
    with every tensor's min/max, from which ``quantize_calibrated`` makes int8 (float or int8 I/O)
    and int16x8 without converting or calibrating again."""

    model: bytes
    model_type: int               # conversion metadata's modelType: which TFLiteConverter.from_* made it
    calls: list[str]              # the Python lines that produced it
    log: str
    calibrate_s: float
    fixed_batch: bool = False
    unrolled: bool = False
    created_at: str | None = None
    unusable: str | None = None   # why the recipes must calibrate on their own (then ``model`` is empty)

    def meta(self) -> dict:
        return {"model_type": self.model_type, "calls": self.calls, "log": self.log, "calibrate_s": self.calibrate_s,
                "fixed_batch": self.fixed_batch, "unrolled": self.unrolled, "created_at": self.created_at,
                "unusable": self.unusable}

    @classmethod
    def from_meta(cls, model: bytes, meta: dict) -> "Calibration":
        return cls(model, **meta)


# convert()'s conversion metadata names the quantization that made the model.
_OPTIMIZATION_MODES = {Optimization.INT8: "PTQ_FULL_INTEGER", Optimization.INT16X8: "PTQ_INT16"}


def calibrate(request: ConversionRequest, original, export_dir: str | None, fixed_batch: bool, representative,
              unrolled: bool = False) -> Calibration:
    """Run the route's converter once in calibrate-only mode (int8 settings; any calibrated recipe
    would give the same float model and statistics). ``request`` names the cell that asked, for
    its messages. A model the replay cannot stand in for (settings it does not honour, a
    quantization-aware trained graph, whose conversion depends on the recipe) comes back
    ``unusable``, with the reason."""
    from . import recipes
    route, opt = request.route, request.optimization
    check_supported(route, opt, original.source.format)
    if route is Route.CLI:
        raise ValueError("tflite_convert cannot calibrate")
    _refuse_dict_inputs(route, opt, original)
    t0 = time.perf_counter()

    def work():
        converter, calls = _route_converter(route, original, export_dir, fixed_batch, unrolled)
        calls += recipes.apply(converter, Optimization.INT8, representative)
        why = recipes.replay_mismatch(converter)
        if why:
            return b"", calls, 0, why
        calls += recipes.apply_calibrate_only(converter) + ["calibrated = converter.convert()"]
        calibrated = converter.convert()
        from tensorflow.lite.python import conversion_metadata_schema_py_generated as meta_fb
        if meta_fb.ModelOptimizationMode.QUANTIZATION_AWARE_TRAINING in converter._metadata.options.modelOptimizationModes:
            return b"", calls, 0, "a quantization-aware trained graph converts differently for int8 and int16x8"
        return calibrated, calls, converter._metadata.environment.modelType, None

    (model, calls, model_type, unusable), log = _captured(route, opt, work)
    if not model and not unusable:
        raise ConversionError(f"Conversion {route.value}-{opt.value} produced an empty calibration model.", detail=log)
    return Calibration(bytes(model), int(model_type), calls, log, time.perf_counter() - t0, fixed_batch, unrolled,
                       unusable=unusable)


def quantize_calibrated(request: ConversionRequest, calibration: Calibration, reused: bool) -> ConversionResult:
    """The cell's .tflite from a calibration: byte for byte what ``convert`` gives (its quantization
    step replayed, then convert()'s last steps). ``reused``: the calibration was made for another
    cell; its lines are shown as comments, and ``convert_s`` is this cell's quantization alone."""
    from . import recipes
    route, opt = request.route, request.optimization
    t0 = time.perf_counter()

    def work():
        quantized, lines = recipes.quantize(calibration.model, opt, request.int8_io)
        return _finish_like_convert(quantized, calibration.model_type, opt), lines

    (tflite, lines), log = _captured(route, opt, work)
    quantize_s = time.perf_counter() - t0
    if reused:
        when = calibration.created_at or "an earlier job"
        calls = [f"# calibrated: the stored calibration of this model, samples and route ({when}), made by:"]
        calls += [f"#   {line}" for line in calibration.calls]
        log = f"(calibration reused, made {when})\n{log}"
    else:
        calls = list(calibration.calls)
        log = f"{calibration.log}{log}"
    calls += lines + ["tflite_model = convert()'s last steps: _deduplicate_readonly_buffers(quantized), then its "
                      f"conversion metadata ({_OPTIMIZATION_MODES[opt]}, model hash)"]
    if not tflite:
        raise ConversionError(f"Conversion {route.value}-{opt.value} produced an empty model.", detail=log)
    return ConversionResult(tflite, route, opt, calls, _conversion_warnings(calibration.fixed_batch, calibration.unrolled),
                            log, quantize_s + (0.0 if reused else calibration.calibrate_s), calibration.fixed_batch)


def _finish_like_convert(quantized: bytes, model_type: int, opt: Optimization) -> bytes:
    """What TFLiteConverter.convert() does after quantizing (TF 2.21: _optimize_tflite_model, then
    _convert_and_export_metrics): share identical read-only buffers, then add the conversion
    metadata it would have written (its own helpers, the same field values)."""
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as meta_fb
    from tensorflow.lite.python import lite
    from tensorflow.lite.tools import flatbuffer_utils
    from tensorflow.python.framework import versions
    model = lite._deduplicate_readonly_buffers(quantized)
    obj = flatbuffer_utils.convert_bytearray_to_object(model)
    meta = meta_fb.ConversionMetadataT()
    meta.environment = meta_fb.EnvironmentT()
    meta.environment.tensorflowVersion = versions.__version__
    meta.environment.apiVersion = 2
    meta.environment.modelType = model_type
    meta.options = meta_fb.ConversionOptionsT()
    meta.options.allowCustomOps = False
    meta.options.enableSelectTfOps = False
    meta.options.forceSelectTfOps = False
    meta.options.modelOptimizationModes = [getattr(meta_fb.ModelOptimizationMode, _OPTIMIZATION_MODES[opt])]
    meta.options.modelOptimizationModes.extend(lite._get_sparsity_modes(obj))
    meta.environment.modelHash = lite._get_model_hash(obj)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(lite._populate_conversion_metadata(obj, meta)))


def _convert_cli(opt: Optimization, export_dir: str, workdir: str | None):
    import shutil
    out_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="cli-"))   # inside the job's workspace
    try:
        out = out_dir / "model.tflite"
        cmd = _tflite_convert_command() + [f"--saved_model_dir={export_dir}", f"--output_file={out}"] + CLI_FLAGS[opt]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        log = f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}"
        if proc.returncode != 0 or not out.exists():
            raise ConversionError(explain_failure(Route.CLI, opt, log) + f" (exit code {proc.returncode})", detail=log)
        return out.read_bytes(), [shlex.join(cmd)], log
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
