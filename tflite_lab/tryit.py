"""Try it: one input — a photo, a dropped image or one of the cell's samples — through the original,
the server's .tflite and (through the browser target) the .tflite in the visitor's browser, with the
three predictions side by side; class names, when the user gives them, label them.
"""
from __future__ import annotations

import hashlib
import io
import math

import numpy as np

from .errors import SampleError, SourceError
from .store import Store

MAX_CLASS_NAMES = 100_000
MAX_CLASS_NAMES_BYTES = 4 * 1024 * 1024
TOP_K = 3


def load_class_names(data: bytes, filename: str = "class names") -> list[str]:
    """One name per line (UTF-8; surrounding blank lines dropped, a blank line inside is an error)."""
    if len(data) > MAX_CLASS_NAMES_BYTES:
        raise SourceError(f"{filename} is {len(data):,} bytes: more than the {MAX_CLASS_NAMES_BYTES:,} a list of "
                          "class names needs.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{filename} is not UTF-8 text: give one class name per line.") from None
    if "\x00" in text:
        raise SourceError(f"{filename} is a binary file, not text: give one class name per line.")
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or lines == [""]:
        raise SourceError(f"{filename} is empty: give one class name per line.")
    blank = [i + 1 for i, line in enumerate(lines) if not line]
    if blank:
        raise SourceError(f"{filename} has an empty line ({blank[0]}): give one class name per line, in the "
                          "order of the model's output.")
    if len(lines) > MAX_CLASS_NAMES:
        raise SourceError(f"{filename} has {len(lines):,} lines, more than {MAX_CLASS_NAMES:,} classes.")
    return [line[:200] for line in lines]


def names_for(class_names: list[str] | None, classes: int) -> tuple[list[str] | None, str | None]:
    """The names when they fit an output of ``classes`` classes, else None and why."""
    if not class_names:
        return None, None
    if len(class_names) != classes:
        return None, f"{len(class_names)} class names given, but this output has {classes} classes: shown as indices."
    return class_names, None


def _classifier(y: np.ndarray) -> bool:
    """A row of class scores: one (1, C) output with C > 1."""
    return y.ndim == 2 and y.shape[0] == 1 and y.shape[1] > 1


def prediction(y: np.ndarray, class_names: list[str] | None = None, k: int = TOP_K) -> dict:
    """One output of one sample as a prediction: the top-k classes, or the values (NaN kept)."""
    y = np.asarray(y)
    if _classifier(y):
        row = np.asarray(y[0], dtype=np.float64)
        order = np.argsort(-np.nan_to_num(row, nan=-np.inf), kind="stable")[:k]
        names, note = names_for(class_names, row.size)
        return {"kind": "classes", "classes": row.size, "note": note, "nonfinite": int(np.sum(~np.isfinite(row))),
                "top": [{"index": int(i), "name": names[i] if names else str(int(i)), "score": float(row[i])}
                        for i in order]}
    flat = np.asarray(y, dtype=np.float64).reshape(-1)
    return {"kind": "values", "shape": list(y.shape), "values": [float(v) for v in flat[:8]],
            "more": max(0, flat.size - 8), "nonfinite": int(np.sum(~np.isfinite(flat)))}


def predictions(outputs: dict[str, np.ndarray], class_names: list[str] | None = None) -> dict[str, dict]:
    return {name: prediction(y, class_names) for name, y in outputs.items()}


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """max |a − b| per output (NaN when either side is not finite where the other is)."""
    out = {}
    for name in a:
        if name not in b:
            continue
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        both = np.isfinite(x) & np.isfinite(y)
        same_nonfinite = np.all((~np.isfinite(x)) == (~np.isfinite(y)))
        out[name] = float(np.max(np.abs(x[both] - y[both]))) if both.any() and same_nonfinite else math.nan
    return out


def one_sample(samples_path: str, index: int) -> dict[str, np.ndarray]:
    """Sample ``index`` of the cell's samples, batch 1."""
    with np.load(samples_path) as z:
        arrays = {k: z[k] for k in z.files}
    n = len(next(iter(arrays.values())))
    if not 0 <= index < n:
        raise SampleError(f"Sample {index} does not exist: the cell has {n} samples (0–{n - 1}).")
    return {k: v[index:index + 1] for k, v in arrays.items()}


def image_sample(image: bytes, filename: str, signature: dict, samples_path: str, limits=None,
                 base_index: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """A photo as the model's image input (its H x W and channels, scaled into the range the cell's
    samples span for that input); any other input from sample ``base_index``. Returns the arrays
    and a sentence saying how the image was made an input."""
    from .config import Limits
    from .samples import _image_input, images_to_array
    from .types import Signature
    limits = limits or Limits.from_env()
    sig = Signature.from_dict(signature)
    t = _image_input(sig)
    arrays = one_sample(samples_path, base_index)
    seen = arrays.get(t.key)
    lo, hi = (0.0, 1.0) if seen is None or not np.all(np.isfinite(seen)) else (float(np.min(seen)), float(np.max(seen)))
    if hi <= lo:
        lo, hi = 0.0, 1.0
    with np.load(samples_path) as z:          # the whole sample set's range, not one sample's
        if t.key in z.files and np.all(np.isfinite(z[t.key])) and float(np.max(z[t.key])) > float(np.min(z[t.key])):
            lo, hi = float(np.min(z[t.key])), float(np.max(z[t.key]))
    x = images_to_array([(filename, image)], t, limits, (lo, hi))
    arrays[t.key] = x.astype(arrays[t.key].dtype if t.key in arrays else x.dtype)
    s = t.sample_shape
    how = (f"{filename} resized to {s[1] or 224}x{s[0] or 224}, {'grey' if len(s) == 2 or s[-1] == 1 else 'RGB'}, "
           f"scaled to [{lo:.4g}, {hi:.4g}] (the range of the cell's samples for '{t.name}')")
    others = [k for k in arrays if k != t.key]
    if others:
        how += f"; {', '.join(others)} from sample {base_index}"
    return arrays, how


def save_inputs(arrays: dict[str, np.ndarray], store_root: str | None = None) -> str:
    """The one-sample inputs in the store (keyed by their bytes), for the worker and the browser."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    return str(Store(store_root).put_bytes("try", hashlib.sha256(data).hexdigest()[:24], ".npz", data))


def try_job(tflite_path: str, inputs_path: str, signature: dict, source: dict | None = None,
            store_root: str | None = None, progress=None) -> dict:
    """Worker job: the one sample through the original (when there is one) and the server's .tflite;
    and the browser target's folder for it (``browser``: device_job's answer)."""
    from pathlib import Path

    from . import pipeline
    from .config import Limits
    from .runtime import TFLiteModel
    from .targets import TargetInput
    from .types import Signature
    from .targets.browser import Refusal, prepare_cell
    from .targets.web_assets import serve_cell
    sig = Signature.from_dict(signature)
    with np.load(inputs_path) as z:
        arrays = {k: z[k] for k in z.files}
    store = Store(store_root)
    key = Path(inputs_path).stem
    original = None
    if source is not None:
        if progress:
            progress("run original")
        original = pipeline._run_original(pipeline._open(pipeline._source(source), Limits.from_env()),
                                          _Samples(arrays, "this input"))
    if progress:
        progress("run tflite")
    model = TFLiteModel(Path(tflite_path).read_bytes(), None, "the cell's .tflite")
    in_map, out_map = model.match(sig)
    tflite = model.predict(arrays, in_map, out_map)
    reference_path = None
    if original is not None:
        reference_path = str(store.path("try", key + "-reference", ".npz"))
        np.savez(reference_path, **original)
    browser = {"refusal": None, "cell_dir": None, "served": None}
    try:
        cell = prepare_cell(TargetInput(tflite_path, inputs_path, reference_path, signature, store_root=store_root),
                            warmup=1, runs=5)
        browser = {"refusal": None, "cell_dir": str(cell), "served": serve_cell(cell, store_root)}
    except Refusal as e:
        browser["refusal"] = str(e)
    return {"inputs_path": inputs_path, "browser": browser,
            "original": {k: v.tolist() for k, v in original.items()} if original is not None else None,
            "tflite": {k: v.tolist() for k, v in tflite.items()}}


class _Samples:
    """What pipeline._run_original reads of a sample set."""

    def __init__(self, arrays, origin):
        self.arrays, self.origin = arrays, origin


def browser_outputs(cell_dir: str, raw: dict, progress=None) -> dict[str, list]:
    """Worker job: the browser's outputs for the one sample, decoded by the cell's manifest."""
    from pathlib import Path

    from .targets.browser import decode_outputs
    return {k: v.tolist() for k, v in decode_outputs(Path(cell_dir), raw["outputs"]).items()}
