"""Stage 7: agreement metrics per output, from a small registry, and pass/fail judgement.

NaN and inf are reported as they are: a silently broken conversion is what users must see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import SampleError
from .types import Optimization, OutputMetrics, Task, Tolerances


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def max_abs_error(ref, out) -> float:
    """max |ref - out| over all elements; NaN if any element is NaN; 0 for empty tensors."""
    d = np.abs(_f64(ref) - _f64(out))
    return float(np.max(d)) if d.size else 0.0


def mean_abs_error(ref, out) -> float:
    """mean |ref - out|; 0 for empty tensors."""
    d = np.abs(_f64(ref) - _f64(out))
    return float(np.mean(d)) if d.size else 0.0


def rmse(ref, out) -> float:
    """sqrt(mean((ref - out)^2)); 0 for empty tensors."""
    d = _f64(ref) - _f64(out)
    return float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def cosine(ref, out) -> float:
    """<ref, out> / (|ref| |out|) over the flattened tensors.

    Both zero: 1.0 (identical). One zero: 0.0. NaN propagates.
    """
    a, b = _f64(ref).ravel(), _f64(out).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if np.isnan(na) or np.isnan(nb):
        return float("nan")
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def psnr_db(ref, out) -> float:
    """20 log10(peak / rmse), peak = max(ref) - min(ref) (the reference's dynamic range).

    Identical tensors: inf. A constant reference uses peak = max(|ref|, 1).
    """
    e = rmse(ref, out)
    r = _f64(ref)
    if r.size == 0:
        return float("inf")
    if math.isnan(e):
        return float("nan")
    if e == 0:
        return float("inf")
    peak = float(np.max(r) - np.min(r)) or max(float(np.max(np.abs(r))), 1.0)
    return float(20 * np.log10(peak / e))


def is_classifier_like(ref) -> bool:
    """A (samples, classes) output with at least 2 classes: the shape top-1 agreement needs."""
    r = np.asarray(ref)
    return r.ndim == 2 and r.shape[1] >= 2


def detect_task(ref) -> tuple[str, str]:
    """(task, why) from the original's values: a classifier's rows are probabilities.

    The shape alone is not enough: embeddings, multi-target regressors and box coordinates are
    (samples, k) too, and judging them by argmax would pass any value error. Logits (negative
    values) count as regression unless the user says otherwise (``--task``).
    """
    r = _f64(ref)
    if not is_classifier_like(r):
        return Task.REGRESSION.value, f"shape {tuple(r.shape)} is not (samples, classes)"
    if not np.all(np.isfinite(r)):
        return Task.REGRESSION.value, "the original's values include NaN/inf"
    if r.size and r.min() < 0:
        return Task.REGRESSION.value, "values are not probabilities (some are negative)"
    sums = r.sum(axis=1)
    if r.shape[0] and np.allclose(sums, 1.0, atol=1e-3):
        return Task.CLASSIFICATION.value, "rows are non-negative and sum to 1 (probabilities)"
    return Task.REGRESSION.value, "rows do not sum to 1 (not a probability distribution)"


def top1_agreement(ref, out) -> float | None:
    """Fraction of samples whose argmax matches; None for outputs that are not classifier-like."""
    if not is_classifier_like(ref):
        return None
    return float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))


def top5_agreement(ref, out) -> float | None:
    """Fraction of samples whose reference top-1 class is in the candidate's top 5 (>= 5 classes)."""
    r = np.asarray(ref)
    if not is_classifier_like(r) or r.shape[1] < 5:
        return None
    top5 = np.argsort(-np.asarray(out, dtype=np.float64), axis=1)[:, :5]
    return float(np.mean([a in row for a, row in zip(np.argmax(r, axis=1), top5)]))


REGISTRY = {
    "max_abs_error": max_abs_error,
    "mean_abs_error": mean_abs_error,
    "rmse": rmse,
    "cosine": cosine,
    "psnr_db": psnr_db,
    "top1_agreement": top1_agreement,
    "top5_agreement": top5_agreement,
}


def per_sample_max_abs(ref, out) -> np.ndarray:
    d = np.abs(_f64(ref) - _f64(out))
    return d.reshape(len(d), -1).max(axis=1) if d.size else np.zeros(len(d))


def compare_outputs(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[OutputMetrics]:
    """Every registered metric for every output, in the reference's output order.

    Raises:
        SampleError: an output missing from the candidate, or shapes that differ.
    """
    results = []
    for name, ref in reference.items():
        if name not in candidate:
            raise SampleError(f"The TFLite model has no output '{name}' (it has {', '.join(candidate)}).")
        out = candidate[name]
        if np.shape(ref) != np.shape(out):
            if np.size(ref) == np.size(out):
                out = np.reshape(out, np.shape(ref))
            else:
                raise SampleError(f"Output '{name}' has shape {np.shape(out)} in TFLite but {np.shape(ref)} "
                                  "in the original.")
        vals = {k: fn(ref, out) for k, fn in REGISTRY.items()}
        scale = float(np.max(np.abs(_f64(ref)))) if np.size(ref) else 0.0
        task, why = detect_task(ref)
        results.append(OutputMetrics(name=name, reference_max_abs=scale, task=task, task_reason=why,
                                     per_sample_max_abs=tuple(per_sample_max_abs(ref, out).tolist()), **vals))
    return results


def output_stats(outputs: dict[str, np.ndarray]) -> list[dict]:
    """What can be said of outputs without a reference: shape, range, and how many are NaN/inf."""
    stats = []
    for name, y in outputs.items():
        a = _f64(y)
        fin = a[np.isfinite(a)]
        stats.append({"name": name, "shape": list(a.shape), "nonfinite": int(a.size - fin.size),
                      "min": float(fin.min()) if fin.size else None, "max": float(fin.max()) if fin.size else None,
                      "mean": float(fin.mean()) if fin.size else None})
    return stats


def worst(values, lowest: bool = False) -> float | None:
    """The largest (or smallest) of some per-output numbers, NaN-aware: Python's max() would drop
    a NaN that is not first (max([0.1, nan]) is 0.1), hiding exactly the broken output.
    None when there are no numbers."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    if any(math.isnan(v) for v in vals):
        return float("nan")
    return min(vals) if lowest else max(vals)


def headline_top1(outputs) -> float | None:
    """The lowest top-1 agreement over the classifier outputs, NaN-aware: a regression output's
    argmax means nothing, so a box head's 0.958 must not stand for a classifier at 1.000. None
    when no output is a classifier. ``outputs``: per-output metric dicts (a record without its
    task counts, as older reports did)."""
    return worst((None if o.get("top1_agreement") is None else float(o["top1_agreement"])
                  for o in outputs if o.get("task", "classification") == "classification"), lowest=True)


@dataclass(frozen=True)
class Check:
    """One tolerance applied to one output."""

    output: str
    metric: str
    bound: float
    value: float
    ok: bool
    why: str                    # where the bound comes from: the recipe's default or the user

    def to_json(self) -> dict:
        from .types import json_number
        return {"output": self.output, "metric": self.metric, "bound": json_number(self.bound),
                "value": json_number(self.value), "ok": self.ok, "why": self.why}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    failures: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)   # per output: tolerances not applied, and why
    tasks: dict[str, tuple[str, str]] = field(default_factory=dict)   # per output: (task, why)


def judge(metrics: list[OutputMetrics], optimization: Optimization | str, tolerances: Tolerances | None = None) -> Verdict:
    """Apply every tolerance to every output it applies to; NaN/inf always fail.

    - max abs error: every output (a default bound scales with max(1, max |original|)).
    - top-1 agreement: by default the classifier outputs; set by the user, every (samples, classes)
      output the user did not declare a regression.
    - PSNR: by default the non-classifier outputs; set by the user, every output.
    An output's task is detected from the original's values (``detect_task``) unless overridden.
    """
    opt = Optimization(optimization)
    tol = tolerances or Tolerances.for_optimization(opt)
    names = {m.name for m in metrics}
    unknown = sorted(set(dict(tol.tasks)) - names)
    if unknown and metrics:
        from .errors import SampleError
        raise SampleError(f"A task is set for output(s) {', '.join(unknown)}, but the model's outputs are "
                          f"{', '.join(sorted(names))}.")
    failures, checks, notes, tasks = [], [], {}, {}
    for m in metrics:
        forced = tol.task_of(m.name)
        task = forced or m.task
        tasks[m.name] = (task, "set by you" if forced else m.task_reason)
        skipped = notes.setdefault(m.name, [])

        def why(metric: str) -> str:
            if metric in tol.user_set:
                return "set by you"
            return f"default for {opt.value}" + (f" on a {task} output" if metric != "max_abs_error" else "")

        if not math.isfinite(m.max_abs_error):
            failures.append(f"{m.name}: outputs contain NaN or inf (max abs error {m.max_abs_error})")
            checks.append(Check(m.name, "finite", 0.0, m.max_abs_error, False, "NaN/inf always fail"))
            continue
        if tol.max_abs_error is not None:
            scaled = tol.scale_max_abs and "max_abs_error" not in tol.user_set
            scale = max(1.0, m.reference_max_abs or 0.0) if scaled else 1.0
            bound = tol.max_abs_error * scale
            ok = m.max_abs_error <= bound
            reason = why("max_abs_error") + (f", x {scale:.3g} (output scale)" if scale > 1 else "")
            checks.append(Check(m.name, "max_abs_error", bound, m.max_abs_error, ok, reason))
            if not ok:
                text = f"{tol.max_abs_error:g}" + (f" x {scale:.3g} (output scale)" if scale > 1 else "")
                failures.append(f"{m.name}: max abs error {m.max_abs_error:.3g} > {text}")
        if tol.min_top1 is not None:
            user = "min_top1" in tol.user_set
            applies = task == Task.CLASSIFICATION.value or (user and forced != Task.REGRESSION.value
                                                            and m.top1_agreement is not None)
            if applies and m.top1_agreement is None:
                failures.append(f"{m.name}: cannot be judged by top-1 agreement (it is not a (samples, classes) "
                                "output); set its task to regression")
                checks.append(Check(m.name, "min_top1", tol.min_top1, float("nan"), False, why("min_top1")))
            elif applies:
                ok = m.top1_agreement >= tol.min_top1
                checks.append(Check(m.name, "min_top1", tol.min_top1, m.top1_agreement, ok, why("min_top1")))
                if not ok:
                    failures.append(f"{m.name}: top-1 agreement {m.top1_agreement:.3f} < {tol.min_top1:g}")
            else:
                skipped.append(f"top-1 agreement not applied: a {task} output ({tasks[m.name][1]})")
        if tol.min_psnr_db is not None:
            user = "min_psnr_db" in tol.user_set
            if user or task == Task.REGRESSION.value:
                ok = m.psnr_db >= tol.min_psnr_db
                checks.append(Check(m.name, "min_psnr_db", tol.min_psnr_db, m.psnr_db, ok, why("min_psnr_db")))
                if not ok:
                    failures.append(f"{m.name}: PSNR {m.psnr_db:.1f} dB < {tol.min_psnr_db:g} dB")
            else:
                skipped.append("PSNR not applied by default to a classifier output (judged by top-1)")
        if not any(c.output == m.name for c in checks):
            skipped.append("no tolerance applies to this output")
    return Verdict(not failures, failures, checks, notes, tasks)


# ---- task accuracy against labels ----

def labels_fit(outputs: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, str]:
    """(output name, metric) the labels score: "accuracy" for class indices against a (samples,
    classes) output (or 0/1 against a single sigmoid column), else "mae" against an output with the
    labels' shape per sample.

    Raises:
        SampleError: no output fits, naming the labels' shape and the outputs'.
    """
    lab = np.asarray(labels)
    flat = lab.reshape(len(lab), -1)
    integral = lab.dtype.kind in "iu" or bool(np.all(np.equal(np.mod(lab, 1), 0)))
    if integral and flat.shape[1] == 1 and lab.min() >= 0:
        for name, y in outputs.items():
            if is_classifier_like(y) and lab.max() < y.shape[1]:
                return name, "accuracy"
        for name, y in outputs.items():
            a = np.asarray(y)
            if a.ndim <= 2 and a.size == len(a) and lab.max() <= 1 and a.size and a.min() >= 0 and a.max() <= 1:
                return name, "accuracy"            # a sigmoid probability: class 1 above 0.5
    for name, y in outputs.items():
        if np.size(y) == lab.size and len(y) == len(lab):
            return name, "mae"
    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in outputs.items())
    raise SampleError(f"Labels of shape {tuple(lab.shape)} fit no output ({shapes}): give class indices below the "
                      "number of classes, or one regression target per output value.")


def task_score(y: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """Accuracy: fraction of samples whose argmax (or p > 0.5 for one column) is the label.
    MAE: mean |y - label|. NaN in y gives NaN for MAE and counts as wrong for accuracy."""
    y = _f64(y)
    lab = np.asarray(labels)
    if metric == "accuracy":
        if y.ndim == 2 and y.shape[1] >= 2:
            pred = np.argmax(y, axis=1)
            ok = (pred == lab.reshape(-1)) & np.all(np.isfinite(y), axis=1)
        else:
            pred = (y.reshape(len(y)) > 0.5).astype(np.int64)
            ok = pred == lab.reshape(-1).astype(np.int64)
        return float(np.mean(ok))
    return float(np.mean(np.abs(y.reshape(len(y), -1) - _f64(lab).reshape(len(lab), -1))))


def accuracy_report(reference: dict[str, np.ndarray] | None, candidate: dict[str, np.ndarray],
                    labels: np.ndarray) -> dict:
    """``{"metric", "output", "original", "tflite", "delta", "num_labels"}``; delta = tflite - original
    (negative accuracy delta, positive MAE delta: the .tflite is worse). No reference: original None."""
    name, metric = labels_fit(reference if reference is not None else candidate, labels)
    tfl = task_score(candidate[name], labels, metric)
    orig = task_score(reference[name], labels, metric) if reference is not None else None
    from .types import json_number
    return {"metric": metric, "output": name, "original": json_number(orig), "tflite": json_number(tfl),
            "delta": json_number(tfl - orig) if orig is not None else None, "num_labels": int(len(labels))}


def accuracy_check(acc: dict, min_delta: float) -> dict:
    """The --min-accuracy-delta tolerance: accuracy may change by at least ``min_delta`` (e.g. -0.01:
    lose at most one point); for MAE the bound is relative: MAE may grow by at most |min_delta| x the
    original's MAE. NaN fails."""
    d = acc.get("delta")
    if d is None:
        return {"metric": "min_accuracy_delta", "bound": min_delta, "value": None, "ok": True,
                "why": "not applied: no original to compare with"}
    d = float(d)
    if acc["metric"] == "accuracy":
        value, what = d, "accuracy delta"
    else:
        orig = float(acc["original"])
        value, what = (-d / orig if orig else (0.0 if d == 0 else -math.inf)), "relative MAE change (negated)"
    ok = math.isfinite(value) and value >= min_delta
    from .types import json_number
    return {"metric": "min_accuracy_delta", "bound": min_delta, "value": json_number(value), "ok": ok,
            "why": f"set by you ({what})"}


def finite_or_inf(x) -> float:
    """A number to rank by, smallest best: NaN, inf and missing values rank last (never first)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.inf
    return v if math.isfinite(v) else math.inf
