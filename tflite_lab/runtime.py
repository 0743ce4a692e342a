"""Stage 6: run a .tflite with LiteRT (``ai_edge_litert``), fed by name, in float.

Inputs are quantized and outputs dequantized with each tensor's own scale and zero point, so
every comparison happens in float. Feeding ``x.astype(np.int8)`` instead gives plausible nonsense.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import ConversionError, SignatureError, mid_sentence
from .signature import tflite_signature
from .types import Signature, TensorInfo

FILE_OPS = ("ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "PyFunc", "EagerPyFunc")


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dt = np.dtype(detail["dtype"])
    if dt.kind not in "iu":
        return x.astype(dt)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if not scale:
        return x.astype(dt)
    info = np.iinfo(dt)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dt)


def dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y


class TFLiteModel:
    """One interpreter (not thread-safe: one per thread/run), fed by signature keys."""

    def __init__(self, tflite: bytes, threads: int | None = None, name: str = "this .tflite", inspection=None):
        """``inspection`` (inspect.Inspection of these bytes) saves parsing the flatbuffer again."""
        from ai_edge_litert.interpreter import Interpreter
        from .inspect import inspect_tflite, refuse_oversized, refuse_unsafe
        inspection = inspection or inspect_tflite(tflite, name)
        refuse_unsafe(inspection, name)
        refuse_oversized(inspection, name)   # allocate_tensors would allocate them all at once
        try:
            self.interpreter = Interpreter(model_content=tflite, num_threads=threads)
        except Exception as e:
            raise ConversionError(f"LiteRT cannot load {mid_sentence(name)}: {mid_sentence(_line(e))}", detail=str(e)) from None
        try:
            # Before any signature runner exists: later it refuses ("reference to internal data").
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise ConversionError(f"LiteRT cannot prepare {mid_sentence(name)}: {mid_sentence(_line(e))}", detail=str(e)) from None
        self.signature = tflite_signature(self.interpreter)
        sigs = self.interpreter.get_signature_list()
        self.runner = None
        if sigs:
            key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
            self.runner = self.interpreter.get_signature_runner(key)
            self.in_details = self.runner.get_input_details()
            self.out_details = self.runner.get_output_details()
        else:
            self.in_details = {t.key: d for t, d in zip(self.signature.inputs, self.interpreter.get_input_details())}
            self.out_details = {t.key: d for t, d in zip(self.signature.outputs, self.interpreter.get_output_details())}
        self._shapes = {k: tuple(d["shape"]) for k, d in self.in_details.items()}
        self.match_notes: list[str] = []

    @property
    def batch_size(self) -> int | None:
        """None when every input takes any batch; else the fixed batch size."""
        firsts = {t.shape[0] if t.shape else 1 for t in self.signature.inputs}
        return None if firsts == {None} else int(max(d or 1 for d in firsts))

    def match(self, reference: Signature) -> tuple[dict[str, str], dict[str, str]]:
        """Map reference input/output names to this model's keys (see ``match_tensors``).

        How tensors that were not matched by key were matched is kept in ``match_notes``.
        Raises SignatureError when the two sides cannot be paired without guessing.
        """
        quantized = {k for k, d in {**self.in_details, **self.out_details}.items()
                     if np.dtype(d["dtype"]).kind in "iu" and (d.get("quantization") or (0.0, 0))[0]}
        ins, in_notes = match_tensors("input", reference.inputs, self.signature.inputs, quantized)
        outs, out_notes = match_tensors("output", reference.outputs, self.signature.outputs, quantized)
        self.match_notes = in_notes + out_notes
        return ins, outs

    def _invoke(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: quantize(v, self.in_details[k]) for k, v in feed.items()}
        if self.runner is not None:
            out = self.runner(**feed)
        else:
            it = self.interpreter
            # Resize every input before allocating: allocating between two resizes prepares the graph
            # with mismatched batches ("XNNPack delegate failed to reshape runtime").
            resized = [k for k, v in feed.items() if self._shapes[k] != v.shape]
            for k in resized:
                it.resize_tensor_input(self.in_details[k]["index"], feed[k].shape)
                self._shapes[k] = feed[k].shape
            if resized:
                it.allocate_tensors()
            for k, v in feed.items():
                it.set_tensor(self.in_details[k]["index"], v)
            it.invoke()
            out = {k: it.get_tensor(d["index"]) for k, d in self.out_details.items()}
        return {k: dequantize(np.asarray(v), self.out_details[k]) for k, v in out.items()}

    def predict(self, arrays: dict[str, np.ndarray], names: dict[str, str] | None = None,
                out_names: dict[str, str] | None = None, chunk: int = 64) -> dict[str, np.ndarray]:
        """Run all samples, batched when the model allows it, else in its fixed batch (padded)."""
        names = names or {t.key: t.key for t in self.signature.inputs}
        n = len(next(iter(arrays.values())))
        step = self.batch_size or chunk
        parts = []
        for i in range(0, n, step):
            feed = {}
            for ref_name, key in names.items():
                x = arrays[ref_name][i:i + step]
                if self.batch_size and len(x) < step:
                    x = np.concatenate([x, np.repeat(x[-1:], step - len(x), axis=0)])
                feed[key] = x
            got = self._invoke(feed)
            m = min(step, n - i)
            parts.append({k: v[:m] for k, v in got.items()})
        inv = {v: k for k, v in (out_names or {k: k for k in parts[0]}).items()}
        return {inv.get(k, k): np.concatenate([p[k] for p in parts]) for k in parts[0]}


# tflite_convert's V1 mode writes no signature: the outputs are StatefulPartitionedCall[_N][:i], the
# i-th of the serving signature's outputs in TensorFlow's flattening order (its keys sorted as strings).
_V1_OUTPUT = re.compile(r"^StatefulPartitionedCall(?:_\d+)?(?::(\d+))?$")


def undecorated(name: str) -> str:
    """A tensor name without the decorations conversion adds: ``serving_default_`` and ``:0``."""
    name = name[:-2] if name.endswith(":0") else name
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _elements(shape) -> int | None:
    n = 1
    for d in shape:
        if d is None or d < 0:
            return None
        n *= int(d)
    return n


def _compatible(ref: TensorInfo, mine: TensorInfo, quantized: set[str]) -> bool:
    """Same kind of tensor: dtype (or float vs a quantized integer) and per-sample shape."""
    rdt, mdt = np.dtype(ref.dtype), np.dtype(mine.dtype)
    if rdt != mdt and not (rdt.kind == "f" and (mdt.kind == "f" or mine.key in quantized)):
        return False
    a, b = tuple(ref.shape[1:]), tuple(mine.shape[1:])
    if len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b)):
        return True
    na, nb = _elements(a), _elements(b)
    return na is not None and na == nb        # the same values, reshaped (e.g. (n, 1) and (n,))


def match_tensors(kind: str, ref: tuple[TensorInfo, ...], mine: tuple[TensorInfo, ...],
                  quantized: set[str] = frozenset()) -> tuple[dict[str, str], list[str]]:
    """Pair each reference tensor with one of ``mine``: by key, then by name without decorations
    (``serving_default_``, ``:0``; tflite_convert V1's ``StatefulPartitionedCall:i``), then by a
    shape and dtype no other tensor has. Position only when exactly one tensor is left on each
    side, with a warning; anything else is refused rather than guessed.

    Returns ({reference name: my key}, notes on every tensor not matched by key).
    """
    if len(ref) != len(mine):
        raise SignatureError(f"The .tflite has {len(mine)} {kind}(s) ({', '.join(t.key for t in mine)}) but the "
                             f"original has {len(ref)} ({', '.join(t.name for t in ref)}).")
    pairs: dict[str, str] = {}
    notes: list[str] = []
    free = {t.key: t for t in mine}

    def take(r: TensorInfo, key: str, how: str | None) -> None:
        pairs[r.name] = key
        free.pop(key)
        if how:
            notes.append(f"{kind} '{r.name}' matched to '{key}' {how}")

    for r in ref:
        for cand in (r.key, r.name):
            if cand and cand in free:
                take(r, cand, None)
                break
    for r in [r for r in ref if r.name not in pairs]:
        hits = [k for k in free if undecorated(k) in (r.key, r.name)]
        if len(hits) == 1:
            take(r, hits[0], "by name (without its serving_default_/:0 decoration)")
    v1 = {k: int(m.group(1) or 0) for k in free if (m := _V1_OUTPUT.match(k))}
    if kind == "output" and v1 and len(v1) == len(free):
        order = sorted(r.key or r.name for r in ref)
        for r in [r for r in ref if r.name not in pairs]:
            hits = [k for k, i in v1.items() if k in free and i < len(order) and order[i] == (r.key or r.name)]
            if len(hits) == 1:
                take(r, hits[0], "by tflite_convert V1's output numbering (signature keys in sorted order)")
    for r in [r for r in ref if r.name not in pairs]:
        hits = [k for k, t in free.items() if _compatible(r, t, quantized)]
        rivals = [q for q in ref if q.name not in pairs and any(_compatible(q, free[k], quantized) for k in hits)]
        if len(hits) == 1 and rivals == [r]:
            take(r, hits[0], f"by shape and dtype (the only {kind} of shape {free[hits[0]].shape_text})")
    left = [r for r in ref if r.name not in pairs]
    if len(left) == 1 and len(free) == 1:
        key = next(iter(free))
        take(left[0], key, "by position, the only one left: check that this is right")
        notes[-1] = "warning: " + notes[-1]
    elif left:
        raise SignatureError(
            f"Cannot tell which .tflite {kind} is which: the original's {', '.join(r.name for r in left)} against the "
            f".tflite's {', '.join(free)} (same shapes and dtypes, no matching names). Export the model with a "
            "signature (model.export or tf.saved_model.save) so that names carry over.")
    return pairs, notes


def _line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    import os
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def tf_threads() -> tuple[int, int]:
    """TensorFlow's (intra-op, inter-op) thread counts as configured in this process (0 = TF's default)."""
    import tensorflow as tf
    return (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())


def set_tf_threads(n: int) -> bool:
    """Set both TensorFlow pools to ``n`` threads; True when they are ``n`` afterwards. After TF
    has run an op the pools are fixed (RuntimeError), so it is only False if they differ."""
    import tensorflow as tf
    if tf_threads() == (n, n):
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:
        return False
    return tf_threads() == (n, n)
