"""Stage 5: sample inputs, random or from the user's files, checked against the signature.

Plain NumPy and Pillow only. Nothing is ever unpickled (``allow_pickle=False``).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Limits
from .errors import SampleError, wrapped
from .types import InputRange, Signature, TensorInfo, sha256_arrays

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
LABELS_KEY = "labels"


@dataclass
class SampleSet:
    """Inputs keyed by input name, each with a leading sample axis."""

    arrays: dict[str, np.ndarray]
    origin: str
    warnings: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None          # one per sample: class indices or regression targets
    class_names: list[str] | None = None      # class-named image subfolders, in label order
    inputs: dict | None = None                # random samples: per input, the values drawn and the length
    caveats: list[str] = field(default_factory=list)   # why these random values cannot exercise the model (also in warnings)

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    @property
    def sha256(self) -> str:
        return sha256_arrays(self.arrays)

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.arrays)


DEFAULT_LENGTH = 32       # a dynamic non-batch dim without a maximum in the model: never 1
# Operations that hand an integer input on unchanged in value (so an Embedding after them still
# declares the input's range).
_PASS_THROUGH = {"Cast", "Reshape", "Flatten", "Permute", "Identity", "GetItem", "Squeeze", "ExpandDims",
                 "Masking", "Slice", "StridedSlice"}


def _flat(x) -> list:
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _flat(x[k])]
    if isinstance(x, (list, tuple)):
        return [v for i in x for v in _flat(i)]
    return [x]


def _classes(obj) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def _consumers(model, tensor):
    """(operation, node) pairs of ``model``'s graph that take ``tensor`` (positionally or as a keyword)."""
    graph = getattr(model, "_functional", None) or model        # a Sequential's graph is its _functional
    for op in getattr(graph, "operations", None) or []:
        for node in getattr(op, "_inbound_nodes", None) or []:
            args = getattr(node, "arguments", None)
            if args is not None and any(x is tensor for x in _flat((args.args, args.kwargs))):
                yield op, node


def _declared(model, tensor, depth: int = 0) -> tuple[str, int | None, str] | None:
    """("ids", high, source) or ("mask", None, source) from what consumes ``tensor``, else None."""
    if depth > 40:
        return None
    for op, node in _consumers(model, tensor):
        for k, v in (node.arguments.kwargs or {}).items():
            if "mask" in str(k).lower() and any(x is tensor for x in _flat(v)):
                return "mask", None, f"feeds {k} of {type(op).__name__} '{op.name}'"
        cls = _classes(op)
        if "Embedding" in cls and getattr(op, "input_dim", None):
            return "ids", int(op.input_dim) - 1, f"{type(op).__name__} '{op.name}'"
        if "CategoryEncoding" in cls and getattr(op, "num_tokens", None):
            return "ids", int(op.num_tokens) - 1, f"CategoryEncoding '{op.name}'"
        if "Functional" in cls or "Sequential" in cls:      # a nested model: follow into its own input
            flat, inner = _flat(node.arguments.args), list(getattr(op, "inputs", None) or [])
            pos = next((i for i, x in enumerate(flat) if x is tensor), None)
            found = _declared(op, inner[pos], depth + 1) if pos is not None and pos < len(inner) else None
        elif type(op).__name__ in _PASS_THROUGH:
            found = next((f for out in _flat(node.outputs) if (f := _declared(model, out, depth + 1))), None)
        else:
            found = None
        if found:
            return found
    return None


def _sublayers(model) -> list:
    try:
        return list(model._flatten_layers(include_self=True, recursive=True))
    except Exception:
        return [model, *getattr(model, "layers", [])]


def _max_length(model) -> tuple[int, str] | None:
    """The model's own longest sequence: a position embedding's length, or KerasHub's max_sequence_length."""
    found = []
    for layer in _sublayers(model):
        v = getattr(layer, "sequence_length", None) if "PositionEmbedding" in _classes(layer) else None
        v = v or getattr(layer, "max_sequence_length", None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            found.append((v, f"{type(layer).__name__} '{layer.name}'"))
    return min(found) if found else None


def keras_input_ranges(model) -> tuple[InputRange, ...]:
    """What a loaded Keras model declares about each input, by walking its graph from the input:
    an Embedding (or CategoryEncoding) it feeds gives the id range, a ``mask`` keyword it feeds (or
    the name ``padding_mask``) makes it a padding mask; KerasHub's ``token_ids`` fall back to the
    backbone's ``vocabulary_size``. Runs where the model is loaded (a worker); no TensorFlow here."""
    longest = _max_length(model)
    vocab = next(((int(v), f"{type(la).__name__} '{la.name}' (vocabulary_size)") for la in _sublayers(model)
                  if isinstance(v := getattr(la, "vocabulary_size", None), int) and v > 0), None)
    out = []
    for t in model.inputs:
        name = t.name
        found = None
        try:
            found = _declared(model, t)
        except Exception:      # an unusual graph: nothing declared, the generic rules apply
            found = None
        kind, low, high, source = "unknown", None, None, ""
        if found and found[0] == "ids":
            kind, low, high, source = "ids", 0, found[1], found[2]
        elif found or "mask" in name.lower() and np.dtype(_dtype(t)).kind in "iub":
            kind, source = "mask", found[2] if found else f"named '{name}'"
        elif name == "token_ids" and vocab:
            kind, low, high, source = "ids", 0, vocab[0] - 1, vocab[1]
        out.append(InputRange(name, kind, low, high, source, longest[0] if longest else None))
    return tuple(out)


def _dtype(t) -> str:
    dt = t.dtype
    name = getattr(dt, "name", None) or str(dt)
    try:
        return np.dtype(name).name
    except TypeError:
        return "float32"


def max_length_source(model) -> str:
    longest = _max_length(model)
    return longest[1] if longest else ""


def parse_lengths(items) -> tuple[tuple[str, int], ...]:
    """``--length NAME=N`` (or ``N`` for every input) as (name, n) pairs; "" names every input.

    Raises:
        SampleError: not NAME=N, or N not a whole number of at least 1.
    """
    out = []
    for item in items or ():
        name, sep, num = str(item).rpartition("=")
        try:
            n = int(num)
        except ValueError:
            n = 0
        if n < 1 or (sep and not name):
            raise SampleError(f"--length takes NAME=N (or N for every input) with N a whole number of at least 1, "
                              f"got '{item}'.")
        out.append((name, n))
    return tuple(out)


def resolve_lengths(signature: Signature, ranges=(), lengths=()) -> dict[str, tuple[int, str]]:
    """(length, why) for every input with a dynamic non-batch dim.

    A length named for one input also moves the unnamed inputs that had the same default (a
    sequence shared by token ids, mask and segment ids stays one length).

    Raises:
        SampleError: a name that is no input, a length above the model's own maximum.
    """
    by_name = {r.name: r for r in ranges}
    named = {k: v for k, v in lengths if k}
    everyone = next((v for k, v in lengths if not k), None)
    dynamic = [t for t in signature.inputs if any(d is None for d in t.sample_shape)]
    unknown = [k for k in named if k not in {t.name for t in signature.inputs}]
    if unknown:
        raise SampleError(f"--length names {', '.join(repr(k) for k in unknown)}, which is no input of the model; "
                          f"inputs: {', '.join(t.name for t in signature.inputs)}.")

    def default(t):
        r = by_name.get(t.name)
        if r and r.max_length:
            return r.max_length, "the model's maximum"
        return DEFAULT_LENGTH, "the default"
    defaults = {t.name: default(t) for t in dynamic}
    out = {}
    for t in dynamic:
        if t.name in named:
            out[t.name] = (named[t.name], "as set")
        elif everyone is not None:
            out[t.name] = (everyone, "as set")
        else:
            shared = next((named[k] for k in named if k in defaults and defaults[k] == defaults[t.name]), None)
            out[t.name] = (shared, "as set") if shared else defaults[t.name]
        r = by_name.get(t.name)
        if r and r.max_length and out[t.name][0] > r.max_length:
            raise SampleError(f"Length {out[t.name][0]} for input '{t.name}' is more than the model's maximum "
                              f"sequence length {r.max_length}.")
    return out


def _mask(rng, shape: tuple, dtype) -> np.ndarray:
    """Ones for a prefix of random length (at least 1) along the first sample axis, zeros after."""
    if len(shape) < 2:
        return np.ones(shape, dtype=dtype)
    keep = rng.integers(1, shape[1] + 1, size=shape[0])
    m = np.arange(shape[1])[None, :] < keep[:, None]
    m = m.reshape(m.shape + (1,) * (len(shape) - 2))
    return np.broadcast_to(m, shape).astype(dtype)


VOCAB_UNKNOWN = "the vocabulary is unknown, so these samples are not meaningful; give real samples"


def random_samples(signature: Signature, n: int = 64, seed: int = 0, low: float | None = None,
                   high: float | None = None, ranges=(), lengths=(), walked: bool = False,
                   limits: Limits | None = None) -> SampleSet:
    """Random samples that exercise the model where it says how.

    Ids the model declares (``ranges``: an Embedding's vocabulary) are drawn uniformly over all of
    them, padding masks are valid masks, dynamic dims get ``resolve_lengths``. ``low``/``high``
    (None: from the model, else 0 and 1) bound floats in [low, high) and the other integers in
    [low, high]. ``walked``: the model's graph was read (a Keras model), so an integer input with no
    declared range is known to feed no vocabulary; else its vocabulary is unknown.
    """
    rng = np.random.default_rng(seed)
    by_name = {r.name: r for r in ranges}
    lens = resolve_lengths(signature, ranges, lengths)
    arrays, warnings, described, caveats = {}, [], {}, []
    given = low is not None or high is not None
    for t in signature.inputs:
        r = by_name.get(t.name) or InputRange(t.name)
        length = lens.get(t.name)
        shape = (n, *(length[0] if d is None else int(d) for d in t.sample_shape))
        if length:
            mb = int(np.prod(shape[1:])) * np.dtype(t.dtype).itemsize / 2**20
            if limits and mb > limits.input_sample_mb:
                raise SampleError(f"Input '{t.name}' at length {length[0]} is {mb:,.0f} MB per sample, more than the "
                                  f"limit of {limits.input_sample_mb:.0f} MB; give a shorter length.")
            warnings.append(f"Input '{t.name}' has dynamic dims {t.shape_text}; random samples use length "
                            f"{length[0]} there ({length[1]}; --length {t.name}=N to change).")
        dt = np.dtype(t.dtype)
        is_mask = r.kind == "mask" or (not walked and "mask" in t.name.lower() and dt.kind in "iub")
        if dt.kind in "iub" and is_mask:
            arrays[t.name] = _mask(rng, shape, dt)
            text = "padding mask: ones, then zeros (random length ≥ 1)"
        elif dt.kind in "iu":
            lo = int(low) if low is not None else (r.low if r.kind == "ids" else 0)
            hi = int(high) if high is not None else (r.high if r.kind == "ids" else 1)
            if hi < lo:
                raise SampleError(f"Random integers for '{t.name}' need high >= low, got [{lo}, {hi}].")
            arrays[t.name] = rng.integers(lo, hi + 1, size=shape).astype(dt)
            text = (f"ids {lo}–{hi} " + ("(--low/--high; the model declares " + r.text() + ")" if given else
                                         "from " + r.source)) if r.kind == "ids" else f"integers {lo}–{hi}"
            if r.kind != "ids" and not given:
                caveats.append(f"random token ids for '{t.name}' (integers {lo}–{hi}): {VOCAB_UNKNOWN} (or set "
                                "--low/--high)." if not walked else
                                f"Random integers {lo}–{hi} for '{t.name}': the model declares no range for it (it "
                                "feeds no Embedding); set --low/--high to the values it expects, or give real samples.")
        elif dt.kind == "b":
            arrays[t.name] = rng.integers(0, 2, size=shape).astype(bool)
            text = "booleans"
        else:
            lo = 0.0 if low is None else float(low)
            hi = 1.0 if high is None else float(high)
            arrays[t.name] = rng.uniform(lo, hi, size=shape).astype(dt)
            text = f"uniform [{lo:g}, {hi:g})"
        described[t.name] = {"values": text, "length": length[0] if length else None}
    parts = [f"{k} {d['values']}" + (f", length {d['length']}" if d["length"] else "") for k, d in described.items()]
    s = SampleSet(arrays, f"random, seed {seed}: " + "; ".join(parts), warnings + caveats)
    s.inputs, s.caveats = described, caveats
    return s


def image_classifier_on_noise(signature: Signature, reference: dict[str, np.ndarray]) -> str | None:
    """A warning when random values fill an image input of a classifier: its answers on noise mean nothing."""
    from .metrics import detect_task
    images = [t for t in signature.inputs if np.dtype(t.dtype).kind == "f" and len(t.sample_shape) == 3
              and t.sample_shape[-1] in (1, 3, 4) and all(d is None or d >= 8 for d in t.sample_shape[:2])]
    if not images or not any(detect_task(v)[0] == "classification" for v in reference.values()):
        return None
    return (f"random images for '{images[0].name}': a classifier's answers on noise are not meaningful (they test "
            "the arithmetic, not the task); give real samples (a folder or zip of images).")


def conform(arrays: dict[str, np.ndarray], signature: Signature, limits: Limits | None = None,
            origin: str = "file") -> SampleSet:
    """Match user arrays to the signature; errors name the file they came from."""
    try:
        return _conform(arrays, signature, limits, origin)
    except SampleError as e:
        if origin and origin != "file" and not e.user_message.startswith(origin):
            raise SampleError(wrapped(f"{origin}: ", e.user_message)) from None
        raise


def _conform(arrays: dict[str, np.ndarray], signature: Signature, limits: Limits | None,
             origin: str) -> SampleSet:
    """Match user arrays to the signature: names, shapes, dtypes; cap the sample count.

    Raises:
        SampleError: a missing input, or a shape/dtype that does not fit, naming both shapes.
    """
    limits = limits or Limits.from_env()
    names = [t.name for t in signature.inputs]
    if len(arrays) == 1 and len(names) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SampleError(f"Samples lack input(s) {', '.join(repr(m) for m in missing)}; they hold "
                          f"{', '.join(repr(k) for k in arrays) or 'nothing'}. Key an .npz by input name.")
    out, warnings, counts = {}, [], set()
    for t in signature.inputs:
        a = np.asarray(arrays[t.name])
        if a.dtype == object or a.dtype.kind in "OUSV":
            raise SampleError(f"Samples for '{t.name}' have dtype {a.dtype}; numeric arrays are required.")
        if a.ndim == len(t.sample_shape) and _fits(a.shape, t.sample_shape):
            a = a[None]   # one sample given without the batch axis
        if a.ndim != len(t.shape) or not _fits(a.shape[1:], t.sample_shape):
            raise SampleError(f"Samples for input '{t.name}' have shape {tuple(a.shape)}, but the model expects "
                              f"{t.shape_text} (first axis = samples).")
        want = np.dtype(t.dtype)
        if a.dtype != want:
            if want.kind in "iu" and a.dtype.kind == "f" and not np.all(np.equal(np.mod(a, 1), 0)):
                raise SampleError(f"Samples for input '{t.name}' are {a.dtype} with fractions, but the model "
                                  f"expects {want}.")
            a = a.astype(want)
        if a.shape[0] > limits.max_samples:
            warnings.append(f"Using the first {limits.max_samples} of {a.shape[0]} samples (limit).")
            a = a[: limits.max_samples]
        counts.add(a.shape[0])
        out[t.name] = np.ascontiguousarray(a)
    if len(counts) > 1:
        raise SampleError(f"Inputs have different sample counts {sorted(counts)}; give the same number for each.")
    if 0 in counts:
        raise SampleError("The sample file holds zero samples.")
    return SampleSet(out, origin, warnings)


def _fits(shape, expected) -> bool:
    return len(shape) == len(expected) and all(e is None or int(e) == int(s) for s, e in zip(shape, expected))


def _load_npy(data: bytes, name: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SampleError(f"{name} holds pickled Python objects; they are never loaded. "
                              "Save a plain numeric array with np.save.") from None
        raise SampleError(wrapped(f"{name} is not a valid .npy file (", e, ").")) from None
    except Exception as e:
        raise SampleError(f"{name} is not a valid .npy file ({type(e).__name__}).") from None


def _load_npz(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise SampleError(f"{name} holds pickled Python objects; they are never loaded.") from None
        raise SampleError(wrapped(f"{name} is not a valid .npz file (", e, ").")) from None
    except Exception as e:
        raise SampleError(f"{name} is not a valid .npz file ({type(e).__name__}).") from None


def _load_csv(data: bytes, name: str, labels_key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The CSV's numbers, and its ``labels_key`` column (taken out of the inputs) when it has one."""
    import pandas as pd
    try:
        df = pd.read_csv(io.BytesIO(data))
    except Exception as e:
        raise SampleError(f"{name} is not a readable CSV ({type(e).__name__}).") from None
    header_is_data = all(_is_number(c) for c in df.columns)
    if header_is_data:
        df = pd.read_csv(io.BytesIO(data), header=None)
    labels = None
    if labels_key and not header_is_data and labels_key in df.columns:
        labels = df.pop(labels_key).to_numpy()
    try:
        return df.to_numpy(dtype=np.float32), labels
    except (ValueError, TypeError):
        bad = [c for c in df.columns if df[c].dtype == object][:3]
        raise SampleError(f"{name} has non-numeric columns ({', '.join(map(str, bad))}); "
                          "CSV samples must be numbers, one row per sample.") from None


def _is_number(s) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _image_input(signature: Signature) -> TensorInfo:
    for t in signature.inputs:
        s = t.sample_shape
        if len(s) == 3 and s[-1] in (1, 3, 4) or len(s) == 2:
            return t
    raise SampleError("Images were given, but no input looks like an image (H, W, C) or (H, W); "
                      f"inputs: {', '.join(t.name + ' ' + t.shape_text for t in signature.inputs)}.")


def images_to_array(blobs: list[tuple[str, bytes]], t: TensorInfo, limits: Limits,
                    value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Decode, convert to the input's channels, resize to its H x W and scale into value_range."""
    from PIL import Image
    if len(blobs) > limits.max_images:
        raise SampleError(f"{len(blobs)} images given, more than the limit of {limits.max_images}.")
    s = t.sample_shape
    h, w = (s[0] or 224), (s[1] or 224)
    channels = s[2] if len(s) == 3 else None
    mode = {1: "L", 3: "RGB", 4: "RGBA", None: "L"}[channels]
    out = []
    for name, data in blobs:
        try:
            img = Image.open(io.BytesIO(data))
            if img.size[0] * img.size[1] > limits.max_image_pixels:
                raise SampleError(f"Image {name} is {img.size[0]}x{img.size[1]} pixels, more than the limit of "
                                  f"{limits.max_image_pixels:,}.")
            img = img.convert(mode).resize((w, h), Image.BILINEAR)
        except SampleError:
            raise
        except Exception as e:
            raise SampleError(f"Image {name} cannot be decoded ({type(e).__name__}); it is corrupt or not an image.") from None
        a = np.asarray(img, dtype=np.float32) / 255.0
        if channels == 1:
            a = a[..., None]
        lo, hi = value_range
        out.append(lo + a * (hi - lo))
    return np.stack(out).astype(np.dtype(t.dtype) if np.dtype(t.dtype).kind == "f" else np.float32)


def load_samples(data: bytes, filename: str, signature: Signature, limits: Limits | None = None,
                 image_range: tuple[float, float] = (0.0, 1.0), labels_key: str = LABELS_KEY) -> SampleSet:
    """Samples from one uploaded file (.npy, .npz, .csv, an image, or a zip of images).

    The content decides the format; the name only appears in messages. Labels come along when the
    file has them: the .npz key or CSV column ``labels_key``, or class-named image subfolders.
    """
    limits = limits or Limits.from_env()
    name = Path(filename).name
    if len(data) > limits.upload_mb * 2**20:
        raise SampleError(f"{name} is larger than the upload limit of {limits.upload_mb:.0f} MB.")
    if not data:
        raise SampleError(f"{name} is empty.")
    if data.startswith(b"\x93NUMPY"):
        return conform({signature.inputs[0].name: _load_npy(data, name)}, signature, limits, name) \
            if len(signature.inputs) == 1 else _one_array_many_inputs(name, signature)
    if data.startswith(b"PK\x03\x04"):
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
        except zipfile.BadZipFile:
            raise SampleError(f"{name} is a corrupt zip archive.") from None
        if names and all(n.endswith(".npy") for n in names):
            arrays = _load_npz(data, name)
            labels = _pop_labels(arrays, labels_key, signature)
            rows = len(next(iter(arrays.values()))) if arrays else 0
            return _with_labels(conform(arrays, signature, limits, name), labels, name, rows)
        images = [n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES and not Path(n).name.startswith(".")]
        if not images:
            raise SampleError(f"{name} is a zip with neither .npy arrays nor images.")
        if len(images) > limits.max_images:
            raise SampleError(f"{name} holds {len(images)} images, more than the limit of {limits.max_images}.")
        total = sum(zf.getinfo(n).file_size for n in images)
        if total > limits.unzip_total_mb * 2**20:
            raise SampleError(f"{name} would expand to {total / 2**20:.0f} MB; refused.")
        blobs = [(n, zf.read(n)) for n in sorted(images)]
        return _class_folders(blobs, signature, limits, image_range, name)
    if data.startswith((b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8", b"RIFF")):
        return image_samples([(name, data)], signature, limits, image_range, origin=name)
    if data[:1] == b"\x80":
        raise SampleError(f"{name} is a Python pickle; pickles are never loaded. Use .npy, .npz, .csv or images.")
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        raise SampleError(f"{name} is not a sample file this tool reads (.npy, .npz, .csv, png/jpg or a zip "
                          "of images).") from None
    if len(signature.inputs) != 1:
        raise SampleError(f"{name} is a CSV, which fills one input; the model has {len(signature.inputs)}. "
                          "Use an .npz keyed by input name.")
    values, labels = _load_csv(data, name, labels_key)
    return _with_labels(conform({signature.inputs[0].name: values}, signature, limits, name), labels, name, len(values))


def _one_array_many_inputs(name: str, signature: Signature):
    raise SampleError(f"{name} is one .npy array, but the model has {len(signature.inputs)} inputs "
                      f"({', '.join(t.name for t in signature.inputs)}); use an .npz keyed by input name.")


def image_samples(blobs, signature, limits, image_range=(0.0, 1.0), origin="images") -> SampleSet:
    if len(signature.inputs) != 1:
        raise SampleError(f"Images fill one input; the model has {len(signature.inputs)}. Use an .npz keyed by input name.")
    t = _image_input(signature)
    return conform({t.name: images_to_array(blobs, t, limits, image_range)}, signature, limits, origin)


def load_samples_path(path: str | Path, signature: Signature, limits: Limits | None = None,
                      image_range: tuple[float, float] = (0.0, 1.0), labels_key: str = LABELS_KEY) -> SampleSet:
    """Samples from a file or a folder of images."""
    limits = limits or Limits.from_env()
    p = Path(path)
    if not p.exists():
        raise SampleError(f"{p} does not exist.")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:         # class-named subfolders (cat/1.png, dog/2.png): the labels are the folders
            files = sorted(f for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")
                           for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SampleError(f"{p} is a folder without images (png/jpg).")
        if len(files) > limits.max_images:
            raise SampleError(f"{p} holds {len(files)} images, more than the limit of {limits.max_images}.")
        blobs = [(f.relative_to(p).as_posix(), f.read_bytes()) for f in files]
        return _class_folders(blobs, signature, limits, image_range, p.name)
    if p.stat().st_size > limits.upload_mb * 2**20:
        raise SampleError(f"{p.name} is larger than the upload limit of {limits.upload_mb:.0f} MB.")
    return load_samples(p.read_bytes(), p.name, signature, limits, image_range, labels_key)


def representative_dataset(arrays: dict[str, np.ndarray], signature_keys: dict[str, str], max_n: int = 100):
    """A callable yielding one sample at a time (batch 1) as {signature key: array} for calibration."""
    n = min(len(next(iter(arrays.values()))), max_n)

    def gen():
        for i in range(n):
            yield {signature_keys.get(k, k): v[i:i + 1].astype(np.float32) if v.dtype.kind == "f" else v[i:i + 1]
                   for k, v in arrays.items()}
    return gen


# ---- labels ----

def _pop_labels(arrays: dict[str, np.ndarray], key: str | None, signature: Signature) -> np.ndarray | None:
    """Take the labels array out of an .npz, unless the key names one of the model's inputs."""
    if not key or key not in arrays or key in {t.name for t in signature.inputs}:
        return None
    return arrays.pop(key)


def _class_folders(blobs, signature, limits, image_range, origin) -> SampleSet:
    """Images, labelled by their folder when every one sits in a class-named subfolder."""
    parents = [Path(n).parent.name for n, _ in blobs]
    if not all(parents) or len(set(parents)) < 2:
        return image_samples(blobs, signature, limits, image_range, origin=origin)
    classes = sorted(set(parents))
    s = image_samples(blobs, signature, limits, image_range, origin=origin)
    s.labels = np.array([classes.index(c) for c in parents], dtype=np.int64)[: s.count]
    s.class_names = classes
    return s


def check_labels(labels, count: int, origin: str, total: int | None = None) -> np.ndarray:
    """Labels as a numeric array with one row per sample.

    Raises:
        SampleError: text, NaN, or a count that differs from the samples', naming both.
    """
    a = np.asarray(labels)
    if a.dtype == object or a.dtype.kind in "OUSV":
        raise SampleError(f"Labels from {origin} are {a.dtype} (text?); give numbers: class indices 0..K-1 or "
                          "regression targets.")
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    if a.ndim == 0 or a.size == 0:
        raise SampleError(f"Labels from {origin} hold no values; give one label per sample.")
    if not np.all(np.isfinite(a.astype(np.float64))):
        raise SampleError(f"Labels from {origin} contain NaN or inf; every sample needs a finite label.")
    n = len(a)
    if n != (total if total is not None else count):
        raise SampleError(f"Labels from {origin} have {n} rows, but there are {total if total is not None else count} "
                          "samples; give exactly one label per sample, in the same order.")
    return a[:count]


def load_labels_file(path: str | Path, count: int, total: int | None = None, labels_key: str = LABELS_KEY) -> np.ndarray:
    """Labels from ``--labels FILE``: a .npy array, or a .csv (its ``labels_key`` column, else its only column)."""
    p = Path(path)
    if not p.is_file():
        raise SampleError(f"Labels file {p} does not exist.")
    data = p.read_bytes()
    if data.startswith(b"\x93NUMPY"):
        return check_labels(_load_npy(data, p.name), count, p.name, total)
    if data.startswith(b"PK\x03\x04"):
        arrays = _load_npz(data, p.name)
        if labels_key not in arrays and len(arrays) != 1:
            raise SampleError(f"{p.name} has no '{labels_key}' array (it has {', '.join(arrays)}).")
        return check_labels(arrays.get(labels_key, next(iter(arrays.values()))), count, p.name, total)
    import pandas as pd
    try:
        df = pd.read_csv(io.BytesIO(data))
        if all(_is_number(c) for c in df.columns):
            df = pd.read_csv(io.BytesIO(data), header=None)
    except Exception as e:
        raise SampleError(f"{p.name} is not a labels file this tool reads (.npy or .csv): {type(e).__name__}.") from None
    if labels_key in df.columns:
        col = df[labels_key]
    elif df.shape[1] == 1:
        col = df.iloc[:, 0]
    else:
        raise SampleError(f"{p.name} has {df.shape[1]} columns and none is named '{labels_key}'; give one column "
                          "of labels, or name it.")
    return check_labels(col.to_numpy(), count, p.name, total)


def _with_labels(s: SampleSet, labels, origin: str, rows: int) -> SampleSet:
    """``rows``: samples in the file before any cap; the labels must match those, then follow the cut."""
    if labels is not None:
        s.labels = check_labels(labels, s.count, origin, total=rows)
    return s
