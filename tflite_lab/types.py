"""The data that flows through the pipeline: enums users type, frozen records each stage returns.

Nothing here imports TensorFlow, so the CLI parent process and the Streamlit server can use it.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np


class Route(StrEnum):
    KERAS = "keras"
    SAVED_MODEL = "saved_model"
    CONCRETE_FUNCTION = "concrete_function"
    CLI = "cli"


class Optimization(StrEnum):
    NONE = "none"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"


class SourceFormat(StrEnum):
    KERAS = "keras"          # Keras 3 zip archive (.keras)
    H5 = "h5"                # HDF5, saved by Keras 3 or legacy tf.keras
    SAVED_MODEL = "saved_model"
    TFLITE = "tflite"

    @property
    def is_keras(self) -> bool:
        return self in (SourceFormat.KERAS, SourceFormat.H5)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output. ``shape`` uses None for dynamic dims; ``key`` is its name in the
    serving signature (what TFLite's signature runner is fed with)."""

    name: str
    shape: tuple
    dtype: str
    key: str = ""

    @property
    def shape_text(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"

    @property
    def sample_shape(self) -> tuple:
        """Shape of one sample (batch dim dropped)."""
        return tuple(self.shape[1:])

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if d is None]

    def sample_bytes(self) -> int:
        """Declared bytes of one sample; a dynamic non-batch dim counts as 1."""
        n = 1
        for d in self.sample_shape:
            n *= 1 if d is None else int(d)
        return n * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def to_dict(self) -> dict:
        return {"inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs]}

    @staticmethod
    def from_dict(d: dict) -> "Signature":
        mk = lambda t: TensorInfo(t["name"], tuple(t["shape"]), t["dtype"], t.get("key", ""))  # noqa: E731
        return Signature(tuple(mk(t) for t in d["inputs"]), tuple(mk(t) for t in d["outputs"]))


@dataclass(frozen=True)
class InputRange:
    """What the model itself declares about one input's values and length (samples.keras_input_ranges).

    ``kind``: "ids" (integers low..high, e.g. an Embedding's vocabulary), "mask" (a padding mask:
    ones, then zeros) or "unknown" (nothing declared). ``max_length``: the model's own longest
    sequence (a position embedding's), the default for its dynamic dims."""

    name: str
    kind: str = "unknown"
    low: int | None = None
    high: int | None = None
    source: str = ""
    max_length: int | None = None

    def text(self) -> str:
        if self.kind == "ids":
            return f"ids {self.low}–{self.high} from {self.source}"
        if self.kind == "mask":
            return f"padding mask ({self.source})" if self.source else "padding mask"
        return ""

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "InputRange":
        return InputRange(**{k: d.get(k) for k in ("name", "kind", "low", "high", "source", "max_length")})


@dataclass(frozen=True)
class ModelSource:
    """A model file (or SavedModel folder) on disk, identified by the hash of its bytes."""

    path: str
    format: SourceFormat
    sha256: str
    size_bytes: int
    filename: str


class Task(StrEnum):
    """How an output is judged by default: classifiers by top-1 agreement, the rest by PSNR."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"


TOLERANCE_FIELDS = ("max_abs_error", "min_top1", "min_psnr_db", "min_accuracy_delta")


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail thresholds; None means the check does not apply.

    Defaults come from the recipe and apply by task (top-1 to classifiers, PSNR to the rest).
    A tolerance in ``user_set`` was set by the user and applies to every output it can: max abs
    and PSNR to all, top-1 to every (samples, classes) output not declared a regression.
    ``tasks`` overrides the task detected from an output's values, per output name.
    """

    max_abs_error: float | None = None
    min_top1: float | None = None
    min_psnr_db: float | None = None
    min_accuracy_delta: float | None = None     # on labelled samples: tflite accuracy - original's (see metrics)
    # Defaults scale max_abs_error by max(1, max |original|): 1e-4 on probabilities, but a float32
    # regressor predicting ~300 is judged relative to its scale. Tolerances a user sets are absolute.
    scale_max_abs: bool = False
    user_set: tuple[str, ...] = ()
    tasks: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def for_optimization(opt: "Optimization | str") -> "Tolerances":
        opt = Optimization(opt)
        if opt is Optimization.NONE:
            return Tolerances(max_abs_error=1e-4, scale_max_abs=True)
        if opt is Optimization.FLOAT16:
            return Tolerances(max_abs_error=1e-2, scale_max_abs=True)
        return Tolerances(min_top1=0.95, min_psnr_db=30.0)

    def override(self, *, tasks: dict[str, str] | None = None, **kw) -> "Tolerances":
        """These tolerances with the ones the user set (None: keep) and per-output task overrides."""
        unknown = set(kw) - set(TOLERANCE_FIELDS)
        if unknown:
            raise TypeError(f"unknown tolerance(s) {sorted(unknown)}")
        vals = asdict(self)
        given = {k: float(v) for k, v in kw.items() if v is not None}
        vals.update(given)
        if "max_abs_error" in given:
            vals["scale_max_abs"] = False
        vals["user_set"] = tuple(sorted(set(self.user_set) | set(given)))
        merged = dict(self.tasks)
        merged.update({k: Task(v).value for k, v in (tasks or {}).items()})
        vals["tasks"] = tuple(sorted(merged.items()))
        return Tolerances(**vals)

    def task_of(self, output: str) -> str | None:
        return dict(self.tasks).get(output)

    def to_json(self) -> dict:
        return {**{f: json_number(getattr(self, f)) for f in TOLERANCE_FIELDS},
                "scale_max_abs": self.scale_max_abs, "user_set": list(self.user_set), "tasks": dict(self.tasks)}

    @staticmethod
    def from_json(d: dict) -> "Tolerances":
        return Tolerances(**{f: from_json_number(d.get(f)) for f in TOLERANCE_FIELDS},
                          scale_max_abs=bool(d.get("scale_max_abs")), user_set=tuple(d.get("user_set") or ()),
                          tasks=tuple(sorted((d.get("tasks") or {}).items())))


@dataclass(frozen=True)
class Latency:
    """Batch-1 latency over repeated runs after a warm-up, plus batch throughput."""

    median_ms: float
    p90_ms: float
    runs: int
    warmup: int
    threads: int | None
    samples_ms: tuple[float, ...] = ()
    throughput_sps: float | None = None
    throughput_batch: int | None = None

    def summary(self) -> dict:
        return {"median": self.median_ms, "p90": self.p90_ms}


def sha256_arrays(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + b"\0" + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def json_number(x):
    """JSON has no inf/NaN: non-finite floats become the strings "inf", "-inf", "nan"."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def from_json_number(x):
    return None if x is None else float(x)


@dataclass(frozen=True)
class OutputMetrics:
    """Agreement between reference and TFLite for one output (see metrics.py for formulas)."""

    name: str
    max_abs_error: float
    mean_abs_error: float
    rmse: float
    cosine: float
    psnr_db: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    reference_max_abs: float | None = None      # max |original output|: the output's scale
    task: str = "regression"                     # detected from the original's values (see metrics.detect_task)
    task_reason: str = ""
    per_sample_max_abs: tuple[float, ...] = field(default=(), repr=False)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "max_abs_error": json_number(self.max_abs_error),
            "mean_abs_error": json_number(self.mean_abs_error),
            "rmse": json_number(self.rmse),
            "cosine": json_number(self.cosine),
            "psnr_db": json_number(self.psnr_db),
            "top1_agreement": json_number(self.top1_agreement),
            "top5_agreement": json_number(self.top5_agreement),
            "reference_max_abs": json_number(self.reference_max_abs),
            "task": self.task, "task_reason": self.task_reason,
        }

    @staticmethod
    def from_json(d: dict) -> "OutputMetrics":
        nums = ("max_abs_error", "mean_abs_error", "rmse", "cosine", "psnr_db", "top1_agreement",
                "top5_agreement", "reference_max_abs")
        return OutputMetrics(name=d["name"], **{k: from_json_number(d.get(k)) for k in nums},
                             task=d.get("task", Task.REGRESSION.value), task_reason=d.get("task_reason", ""),
                             per_sample_max_abs=tuple(float(x) for x in d.get("per_sample_max_abs", ())))


def source_from_json(d: dict) -> ModelSource:
    """A ModelSource from its JSON form (``pipeline.source_json``), as jobs receive it."""
    return ModelSource(d["path"], SourceFormat(d["format"]), d["sha256"], d["size_bytes"], d["filename"])
