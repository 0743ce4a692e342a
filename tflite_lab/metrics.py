"""Stage 7: agreement metrics per output, from a small registry, and pass/fail judgement.

NaN and inf are reported as they are: a silently broken conversion is what users must see.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import SampleError
from .types import Optimization, OutputMetrics, Tolerances


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
    """A (samples, classes) output with at least 2 classes."""
    r = np.asarray(ref)
    return r.ndim == 2 and r.shape[1] >= 2


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
        results.append(OutputMetrics(name=name, reference_max_abs=scale, per_sample_max_abs=tuple(per_sample_max_abs(ref, out).tolist()), **vals))
    return results


@dataclass(frozen=True)
class Verdict:
    ok: bool
    failures: list[str] = field(default_factory=list)


def judge(metrics: list[OutputMetrics], optimization: Optimization | str, tolerances: Tolerances | None = None) -> Verdict:
    """Pass/fail per the recipe's default tolerances (or the given ones).

    Defaults: float recipes check max abs error (times max(1, max |original|)); integer recipes check top-1 agreement on
    classifier-like outputs and PSNR on the others. Any tolerance that is set applies whatever the
    recipe. Non-finite errors always fail.
    """
    opt = Optimization(optimization)
    tol = tolerances or Tolerances.for_optimization(opt)
    failures = []
    for m in metrics:
        if not math.isfinite(m.max_abs_error):
            failures.append(f"{m.name}: outputs contain NaN or inf (max abs error {m.max_abs_error})")
            continue
        if tol.max_abs_error is not None:
            scale = max(1.0, m.reference_max_abs or 0.0) if tol.scale_max_abs else 1.0
            if m.max_abs_error > tol.max_abs_error * scale:
                bound = f"{tol.max_abs_error:g}" + (f" x {scale:.3g} (output scale)" if scale > 1 else "")
                failures.append(f"{m.name}: max abs error {m.max_abs_error:.3g} > {bound}")
        if m.top1_agreement is not None:
            if tol.min_top1 is not None and m.top1_agreement < tol.min_top1:
                failures.append(f"{m.name}: top-1 agreement {m.top1_agreement:.3f} < {tol.min_top1:g}")
        elif tol.min_psnr_db is not None and not m.psnr_db >= tol.min_psnr_db:
            failures.append(f"{m.name}: PSNR {m.psnr_db:.1f} dB < {tol.min_psnr_db:g} dB")
    return Verdict(not failures, failures)
