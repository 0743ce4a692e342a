"""Stage 6: run a .tflite with LiteRT (``ai_edge_litert``), fed by name, in float.

Inputs are quantized and outputs dequantized with each tensor's own scale and zero point, so
every comparison happens in float. Feeding ``x.astype(np.int8)`` instead gives plausible nonsense.
"""
from __future__ import annotations

import numpy as np

from .errors import ConversionError, SignatureError
from .signature import tflite_signature
from .types import Signature

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
            raise ConversionError(f"LiteRT cannot load {name}: {_line(e)}", detail=str(e)) from None
        try:
            # Before any signature runner exists: later it refuses ("reference to internal data").
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise ConversionError(f"LiteRT cannot prepare {name}: {_line(e)}", detail=str(e)) from None
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

    @property
    def batch_size(self) -> int | None:
        """None when every input takes any batch; else the fixed batch size."""
        firsts = {t.shape[0] if t.shape else 1 for t in self.signature.inputs}
        return None if firsts == {None} else int(max(d or 1 for d in firsts))

    def match(self, reference: Signature) -> tuple[dict[str, str], dict[str, str]]:
        """Map reference input/output names to this model's keys: by key, then name, then order."""
        def pair(ref, mine):
            keys = [t.key for t in mine]
            by_name = {}
            for t in ref:
                for cand in (t.key, t.name):
                    if cand in keys and cand not in by_name.values():
                        by_name[t.name] = cand
                        break
            if len(by_name) == len(ref):
                return by_name
            if len(ref) == len(mine):
                # No signature (e.g. tflite_convert's V1 mode): tensors keep the SavedModel's order.
                return {t.name: k for t, k in zip(ref, keys)}
            raise SignatureError(f"The .tflite's tensors ({', '.join(keys)}) do not match the reference's "
                                 f"({', '.join(t.name for t in ref)}).")
        return pair(reference.inputs, self.signature.inputs), pair(reference.outputs, self.signature.outputs)

    def _invoke(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: quantize(v, self.in_details[k]) for k, v in feed.items()}
        if self.runner is not None:
            out = self.runner(**feed)
        else:
            it = self.interpreter
            for k, v in feed.items():
                d = self.in_details[k]
                if self._shapes[k] != v.shape:
                    it.resize_tensor_input(d["index"], v.shape)
                    it.allocate_tensors()
                    self._shapes[k] = v.shape
                it.set_tensor(d["index"], v)
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


def _line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
