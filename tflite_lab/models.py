"""The original model in TensorFlow: open a ModelSource safely, run it, export it once.

TensorFlow is imported inside functions so that importing this module stays cheap.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Limits
from .errors import SignatureError, SourceError
from .signature import keras_signature, saved_model_signature
from .sources import check_keras_file
from .types import ModelSource, Signature, SourceFormat

RECURRENT_LAYERS = {"LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
                    "Bidirectional", "LSTMCell", "GRUCell"}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


@dataclass
class OriginalModel:
    """A loaded original model with a uniform batch-in, dict-out interface."""

    source: ModelSource
    signature: Signature
    keras_model: object = None      # keras.Model for .keras/.h5
    loaded: object = None           # tf.saved_model.load result for SavedModels
    _fn: object = None

    @property
    def is_keras(self) -> bool:
        return self.keras_model is not None

    def _function(self):
        if self._fn is None:
            import tensorflow as tf
            if self.is_keras:
                m = self.keras_model
                # One trace for every batch size: a retrace per shape costs seconds on big models.
                specs = keras_inputs(m, {t.name: tf.TensorSpec(t.shape, t.dtype) for t in self.signature.inputs})
                self._fn = tf.function(lambda xs: m(xs, training=False), input_signature=[specs])
            else:
                self._fn = self.loaded.signatures["serving_default"]
        return self._fn

    def call(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through the model; outputs keyed by signature output name."""
        import tensorflow as tf
        fn = self._function()
        if self.is_keras:
            out = fn(keras_inputs(self.keras_model, {t.name: tf.constant(arrays[t.name]) for t in self.signature.inputs}))
            if isinstance(out, dict):
                out = [out[t.name] for t in self.signature.outputs]
            elif not isinstance(out, (list, tuple)):
                out = [out]
            return {t.name: np.asarray(o) for t, o in zip(self.signature.outputs, out)}
        out = fn(**{t.key: tf.constant(arrays[t.name]) for t in self.signature.inputs})
        return {t.name: np.asarray(out[t.key]) for t in self.signature.outputs}

    @property
    def batch(self) -> int | None:
        """The fixed batch of the inputs, or None when any batch goes."""
        shape = self.signature.inputs[0].shape
        return int(shape[0]) if shape and shape[0] else None

    def timed_call(self, one: dict[str, np.ndarray]):
        """A no-argument callable for latency: the model compiled for exactly ``one``'s shapes (a
        concrete function, inputs prebuilt as tensors), outputs copied to numpy like LiteRT's."""
        import tensorflow as tf
        if self.is_keras:
            m = self.keras_model
            arg = keras_inputs(m, {t.name: tf.constant(one[t.name]) for t in self.signature.inputs})
            fn = tf.function(lambda xs: m(xs, training=False)).get_concrete_function(
                tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), arg))
            return lambda: [o.numpy() for o in tf.nest.flatten(fn(arg))]
        fn = self.loaded.signatures["serving_default"]
        feed = {t.key: tf.constant(one[t.name]) for t in self.signature.inputs}
        return lambda: [o.numpy() for o in fn(**feed).values()]

    def predict(self, arrays: dict[str, np.ndarray], batch_size: int = 64) -> dict[str, np.ndarray]:
        n = len(next(iter(arrays.values())))
        fixed = self.batch
        step = fixed or batch_size
        parts = []
        for i in range(0, n, step):
            chunk = {k: v[i:i + step] for k, v in arrays.items()}
            m = len(next(iter(chunk.values())))
            if fixed and m < step:   # a model with a fixed batch: pad the last chunk, drop the padding
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], step - m, axis=0)]) for k, v in chunk.items()}
            parts.append({k: v[:m] for k, v in self.call(chunk).items()})
        return {t.name: np.concatenate([p[t.name] for p in parts]) for t in self.signature.outputs}

    def info(self) -> dict:
        """Parameter count and a layer summary (name, class, output shape, params)."""
        if self.is_keras:
            m = self.keras_model
            layers = []
            for layer in m.layers:
                try:
                    shape = str(tuple(layer.output.shape))
                except Exception:
                    shape = "?"
                layers.append({"name": layer.name, "class": type(layer).__name__,
                               "output_shape": shape, "params": int(layer.count_params())})
            return {"params": int(m.count_params()), "layers": layers,
                    "recurrent": needs_fixed_batch(m)}
        params = int(sum(int(np.prod(v.shape)) for v in getattr(self.loaded, "variables", ())))
        return {"params": params, "layers": [], "recurrent": False}


def keras_inputs(model, by_name: dict):
    """Values keyed by input name in the structure the model was built with: a dict for models
    with dict inputs (KerasHub backbones refuse a list), else a list, or the one value."""
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return {k: by_name[v.name] for k, v in struct.items()}
    xs = [by_name[t.name] for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def needs_fixed_batch(model) -> bool:
    """Recurrent layers fail on TF 2.21 with a dynamic batch ("Lowering tensor list ops is failed")."""
    return any(type(layer).__name__ in RECURRENT_LAYERS for layer in _walk_layers(model))


def _walk_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        inner = getattr(layer, "forward_layer", None)
        if inner is not None:
            yield inner
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)


def resolve_kerashub(class_name: str, module: str, registered_name: str | None) -> str | None:
    """Why a config node is not a class or function of the installed keras_hub, or None.

    Imports keras_hub first (this registers every class it ships in Keras' global registry), then
    checks the object Keras would pick: by registered name from the registry, else by name from a
    module keras_hub has already imported (never importing a module the upload names). It must be
    defined in keras_hub (old names keras_hub registers as aliases, e.g. BertClassifier, count).
    Used as ``check_keras_config``'s ``resolve`` in the process that loads the file.
    """
    import sys
    import keras
    import keras_hub
    version = getattr(keras_hub, "__version__", "?")
    if registered_name is not None:
        obj = keras.saving.get_registered_object(registered_name)
        if obj is None:
            return f"registered as {registered_name}, which keras_hub {version} does not register"
    else:
        mod = sys.modules.get(module)
        obj = vars(mod).get(class_name) if mod is not None else None
        if obj is None:
            return f"module {module}, which keras_hub {version} does not provide"
    defined_in = getattr(obj, "__module__", "") or ""
    if not defined_in.startswith("keras_hub."):
        return f"registered as {registered_name} by {defined_in or 'an unknown module'}, not by keras_hub"
    return None


def open_model(source: ModelSource, limits: Limits | None = None) -> OriginalModel:
    """Load a Keras file or SavedModel without running code from it.

    Raises:
        SourceError: corrupt file, code-carrying layers, ops outside the allowlist in a SavedModel.
    """
    limits = limits or Limits.from_env()
    if source.format.is_keras:
        # HDF5 links, code layers, paths: all before Keras opens it; KerasHub classes checked against
        # the registry of the keras_hub imported here, so load_model finds exactly those classes.
        check_keras_file(source, resolve_kerashub)
        import keras
        try:
            model = keras.models.load_model(source.path, safe_mode=True, compile=False)
        except Exception as e:
            raise SourceError(f"{source.filename} cannot be loaded by Keras: {_first_line(e)}", detail=repr(e)) from None
        sig = keras_signature(model)
        om = OriginalModel(source, sig, keras_model=model)
    elif source.format is SourceFormat.SAVED_MODEL:
        from .graph_policy import check_saved_model
        check_saved_model(source.path, source.filename)   # refuses before TensorFlow loads anything
        import tensorflow as tf
        try:
            loaded = tf.saved_model.load(source.path)
        except Exception as e:
            raise SourceError(f"{source.filename} cannot be loaded as a SavedModel: {_first_line(e)}", detail=repr(e)) from None
        if "serving_default" not in getattr(loaded, "signatures", {}):
            raise SignatureError(f"{source.filename} has no 'serving_default' signature; export it with "
                                 "model.export() or tf.saved_model.save(..., signatures=...).")
        sig = saved_model_signature(loaded.signatures["serving_default"])
        om = OriginalModel(source, sig, loaded=loaded)
    else:
        raise SourceError(f"{source.filename} is a .tflite model: there is no original to run; "
                          "give the original model as the reference.")
    check_input_bounds(om.signature, limits)
    return om


def check_input_bounds(signature: Signature, limits: Limits) -> None:
    """Refuse absurd declared input sizes before anything is allocated."""
    for t in signature.inputs:
        if t.dtype == "string":
            raise SignatureError(f"Input '{t.name}' is a string tensor; only numeric inputs can be compared.")
        mb = t.sample_bytes() / 2**20
        if mb > limits.input_sample_mb:
            raise SignatureError(f"Input '{t.name}' declares {t.shape_text} {t.dtype}: {mb:,.0f} MB per sample, "
                                 f"more than the limit of {limits.input_sample_mb:.0f} MB; refused before allocating.")


def fixed_batch_model(model):
    """The same model with a batch of exactly 1 (same input names), sharing weights."""
    import keras
    inputs = [keras.Input(batch_shape=(1, *t.shape[1:]), dtype=t.dtype, name=t.name) for t in model.inputs]
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs, name=f"{model.name}_batch1")


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def unrolled_model(model):
    """The same model with recurrent layers unrolled (unroll=True), sharing the weights' values.

    TF 2.21's converter crashes (SIGSEGV) calibrating int8/16x8 on a looped LSTM; unrolled, the
    loop becomes plain ops that quantize like any others. Needs a fixed number of timesteps.
    Runs the very source the reproduction script shows.
    """
    from .reproduce import UNROLL_SOURCE
    scope: dict = {}
    exec(UNROLL_SOURCE, scope)  # noqa: S102 - our own constant source, never user input
    return scope["unrolled"](model)


def variant_model(model, fixed: bool, unrolled: bool):
    if unrolled:
        model = unrolled_model(model)
    return fixed_batch_model(model) if fixed else model


def exported_saved_model(om: OriginalModel, unrolled: bool = False) -> tuple[str, bool]:
    """The SavedModel folder for this model: exported once per model (bytes), then reused.

    Returns (folder, fixed_batch). Recurrent Keras models are exported with a batch of 1,
    and unrolled when ``unrolled`` (for calibrated recipes).
    """
    if not om.is_keras:
        return om.source.path, False
    fixed = needs_fixed_batch(om.keras_model)
    unrolled = unrolled and fixed
    from .store import CODE_FINGERPRINT
    name = "export-batch1-unrolled" if unrolled else "export-batch1" if fixed else "export"
    # Made by this code: a change to the export (or anything else in the package) exports afresh.
    target = Path(om.source.path).parent / f"{name}-{CODE_FINGERPRINT}"
    if (target / "saved_model.pb").exists():
        return str(target), fixed
    with _locked(target.parent / ".export.lock"):
        if not (target / "saved_model.pb").exists():
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
            try:
                kwargs = {}
                model = om.keras_model
                if fixed:
                    # model.export() resets the batch dim to None; only an explicit signature keeps 1.
                    import keras
                    model = variant_model(model, True, unrolled)
                    specs = [keras.InputSpec(shape=tuple(t.shape), dtype=t.dtype, name=t.name) for t in model.inputs]
                    kwargs["input_signature"] = [specs if len(specs) > 1 else specs[0]]
                model.export(str(tmp / "sm"), format="tf_saved_model", verbose=False, **kwargs)
                os.replace(tmp / "sm", target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target), fixed


_OPENED: dict[str, OriginalModel] = {}      # per process: the two originals opened last, by sha256


def open_cached(source: ModelSource, limits: Limits | None = None) -> OriginalModel:
    """``open_model``, once per model bytes per process (a worker serves one upload's cells)."""
    om = _OPENED.get(source.sha256)
    if om is None:
        om = open_model(source, limits)
        if len(_OPENED) >= 2:
            _OPENED.pop(next(iter(_OPENED)))
        _OPENED[source.sha256] = om
    return om
