"""Plotly figures for the dashboard: one function per chart, arrays and report dicts in, Figure out.

Nothing here imports Streamlit or TensorFlow, so every chart can be built and checked in a plain test.
NaN and inf are shown (counted in titles and annotations), never dropped silently.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .metrics import finite_or_inf as _num

ORIGINAL_COLOR = "#636EFA"
TFLITE_COLOR = "#EF553B"
PASS_COLOR = "#00A86B"
FAIL_COLOR = "#D62728"
MAX_POINTS = 20_000          # scatter points drawn per output; more only slows the browser


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.0, "xanchor": "left"}, height=height,
                      margin={"l": 60, "r": 20, "t": 60, "b": 50},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0})
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    return a[np.isfinite(a)]


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KB' (binary multiples)."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_ms(ms: float | None) -> str:
    """0.0068 -> '6.8 µs', 12.3 -> '12.3 ms'."""
    if ms is None or not math.isfinite(ms):
        return "–"
    return f"{ms * 1000:.3g} µs" if ms < 0.1 else f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


# ---- Compare ----

def scatter_figure(reference: np.ndarray, candidate: np.ndarray, name: str, max_points: int = MAX_POINTS) -> go.Figure:
    """Every output element, original (x) against TFLite (y), with the y = x line of perfect agreement."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(candidate, dtype=np.float64).ravel()
    shown = ""
    if ref.size > max_points:
        idx = np.random.default_rng(0).choice(ref.size, max_points, replace=False)
        ref, out = ref[idx], out[idx]
        shown = f" ({max_points:,} of {np.asarray(reference).size:,} values)"
    fig = go.Figure(go.Scattergl(x=ref, y=out, mode="markers", name="values",
                                 marker={"size": 5, "opacity": 0.6, "color": TFLITE_COLOR},
                                 hovertemplate="original %{x:.6g}<br>TFLite %{y:.6g}<extra></extra>"))
    both = np.concatenate([_finite(ref), _finite(out)])
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x (identical)",
                                 line={"color": "gray", "dash": "dash", "width": 1}, hoverinfo="skip"))
    bad = int(np.sum(~np.isfinite(out)))
    if bad:
        shown += f" — {bad} NaN/inf TFLite values not drawn"
    return _layout(fig, f"Original vs TFLite: {name}{shown}", "original output", "TFLite output")


def error_histogram_figure(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                           bins: int = 50, max_points: int | None = None) -> go.Figure:
    """Histogram of |original - TFLite| per element on a log scale (errors span many decades).

    ``max_points``: above this many values per output, the bins are counted here and sent as bars
    (same counts, a fraction of the bytes; the HTML report uses it).
    """
    fig = go.Figure()
    notes = []
    lows, highs = [], []
    for name, ref in reference.items():
        err = np.abs(np.asarray(ref, dtype=np.float64) - np.asarray(candidate[name], dtype=np.float64)).ravel()
        nonfinite = int(np.sum(~np.isfinite(err)))
        zeros = int(np.sum(err == 0))
        pos = err[np.isfinite(err) & (err > 0)]
        if pos.size and max_points is not None and pos.size > max_points:
            counts, edges = np.histogram(np.log10(pos), bins=bins)
            fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name=name,
                                 opacity=0.75, hovertemplate="|Δ| ≈ 10^%{x:.2f}<br>%{y} values<extra>" + name
                                 + "</extra>"))
        elif pos.size:
            fig.add_trace(go.Histogram(x=np.log10(pos), name=name, nbinsx=bins, opacity=0.75,
                                       hovertemplate="|Δ| ≈ 10^%{x:.2f}<br>%{y} values<extra>" + name + "</extra>"))
        if pos.size:
            lows.append(math.floor(np.log10(pos.min())))
            highs.append(math.ceil(np.log10(pos.max())))
        if zeros:
            notes.append(f"{name}: {zeros:,} exact")
        if nonfinite:
            notes.append(f"{name}: {nonfinite:,} NaN/inf")
    fig.update_layout(barmode="overlay")
    if lows:
        step = max(1, math.ceil((max(highs) - min(lows)) / 8))
        ticks = list(range(min(lows), max(highs) + 1, step))
        fig.update_xaxes(tickvals=ticks, ticktext=[f"1e{t}" for t in ticks])
    if notes:       # exact matches and NaN/inf have no place on a log axis: counted here instead
        fig.add_annotation(text="<br>".join(notes), xref="paper", yref="paper", x=0.01, y=0.98, showarrow=False,
                           xanchor="left", yanchor="top", align="left", font={"size": 11})
    return _layout(fig, "Absolute error per output value", "|original − TFLite| (log scale)", "number of values")


def per_sample_error_figure(per_sample: dict[str, list[float]], tolerance: float | None = None,
                            highlight: int | None = None) -> go.Figure:
    """One bar per sample: its largest |original - TFLite| over the output's elements.

    A NaN/inf sample has no bar height, so it is drawn as a red marker at the top of the axis and
    counted in the title: it must stand out, not vanish.
    """
    fig = go.Figure()
    finite_max = max((float(np.max(_finite(e))) for e in per_sample.values() if _finite(e).size), default=0.0)
    top = max(finite_max, tolerance or 0.0) * 1.1 or 1.0
    bad_total = 0
    for name, errs in per_sample.items():
        e = np.asarray(errs, dtype=np.float64)
        ok = np.isfinite(e)
        fig.add_trace(go.Bar(x=np.arange(len(e)), y=np.where(ok, e, np.nan), name=name,
                             hovertemplate="sample %{x}<br>max |Δ| %{y:.3g}<extra>" + name + "</extra>"))
        bad = np.flatnonzero(~ok)
        if bad.size:
            bad_total += bad.size
            fig.add_trace(go.Scatter(
                x=bad, y=[top] * bad.size, mode="markers", name=f"{name}: NaN/inf",
                marker={"symbol": "x", "size": 11, "color": FAIL_COLOR}, text=[str(e[i]) for i in bad],
                hovertemplate="sample %{x}<br>max |Δ| %{text}<extra>" + name + "</extra>"))
    if tolerance is not None:
        fig.add_hline(y=tolerance, line={"color": FAIL_COLOR, "dash": "dot"},
                      annotation_text=f"tolerance {tolerance:g}", annotation_position="top left")
    if highlight is not None:
        fig.add_vline(x=highlight, line={"color": "black", "width": 1, "dash": "dash"})
    fig.update_layout(barmode="group", bargap=0.1)
    title = "Max absolute error per sample" + (f" — {bad_total} NaN/inf (red ×)" if bad_total else "")
    return _layout(fig, title, "sample index", "max |original − TFLite|")


def is_image_shaped(shape: tuple) -> bool:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) with both sides at least 4 pixels."""
    shape = tuple(shape)
    if len(shape) == 3 and shape[2] in (1, 3, 4):
        shape = shape[:2]
    return len(shape) == 2 and shape[0] >= 4 and shape[1] >= 4


def input_figure(x: np.ndarray, name: str) -> go.Figure:
    """One sample's input: an image when it is image-shaped, else its values as bars."""
    x = np.asarray(x)
    if is_image_shaped(x.shape):
        img = x.astype(np.float64)
        if img.ndim == 3 and img.shape[2] in (3, 4):
            lo, hi = np.nanmin(img), np.nanmax(img)
            scaled = (img[..., :3] - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(img[..., :3])
            fig = go.Figure(go.Image(z=np.clip(scaled, 0, 255).astype(np.uint8)))
        else:
            fig = go.Figure(go.Heatmap(z=img.reshape(img.shape[:2]), colorscale="gray_r", showscale=True,
                                       hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>"))
            fig.update_yaxes(autorange="reversed", scaleanchor="x")
        fig = _layout(fig, f"Input '{name}' {tuple(x.shape)}", "column (pixel)", "row (pixel)", height=340)
        return fig
    flat = x.astype(np.float64).ravel()
    fig = go.Figure(go.Bar(x=np.arange(flat.size), y=flat, marker_color=ORIGINAL_COLOR, name=name))
    return _layout(fig, f"Input '{name}' {tuple(x.shape)}", "element index", "value", height=340)


def output_pair_figure(reference: np.ndarray, candidate: np.ndarray, name: str) -> go.Figure:
    """One sample's output, original and TFLite side by side per element."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    out = np.asarray(candidate, dtype=np.float64).ravel()
    idx = np.arange(ref.size)
    fig = go.Figure([go.Bar(x=idx, y=ref, name="original", marker_color=ORIGINAL_COLOR),
                     go.Bar(x=idx, y=out, name="TFLite", marker_color=TFLITE_COLOR)])
    fig.update_layout(barmode="group")
    return _layout(fig, f"Output '{name}': original and TFLite" + _nonfinite_note(ref, out), "element (class) index",
                   "value", height=340)


def difference_figure(reference: np.ndarray, candidate: np.ndarray, name: str) -> go.Figure:
    """One sample's TFLite − original per element."""
    d = np.asarray(candidate, dtype=np.float64).ravel() - np.asarray(reference, dtype=np.float64).ravel()
    fig = go.Figure(go.Bar(x=np.arange(d.size), y=d, marker_color=np.where(d >= 0, TFLITE_COLOR, ORIGINAL_COLOR),
                           name="difference", hovertemplate="element %{x}: %{y:.3g}<extra></extra>"))
    return _layout(fig, f"Difference TFLite − original: '{name}'" + _nonfinite_note(d), "element (class) index",
                   "difference", height=340)


def _nonfinite_note(*arrays) -> str:
    """' — k NaN/inf (no bar)' when any value cannot be drawn as a bar."""
    bad = sum(int(np.sum(~np.isfinite(np.asarray(a, dtype=np.float64)))) for a in arrays)
    return f" — {bad} NaN/inf (no bar)" if bad else ""


def confusion_figure(reference: np.ndarray, candidate: np.ndarray, name: str,
                     class_names: list[str] | None = None) -> go.Figure:
    """Top-1 class of the original (rows) against the TFLite model's (columns), as counts; labelled
    by the class names when there is one per class."""
    ref = np.asarray(reference)
    n = ref.shape[1]
    a = np.argmax(ref, axis=1)
    b = np.argmax(np.nan_to_num(np.asarray(candidate, dtype=np.float64), nan=-np.inf), axis=1)
    counts = np.zeros((n, n), dtype=int)
    np.add.at(counts, (a, b), 1)
    agree = float(np.mean(a == b)) if len(a) else float("nan")
    labels = [str(i) for i in range(n)]
    if class_names and len(class_names) == n:       # a repeated name would merge two category rows
        from collections import Counter
        seen = Counter(class_names)
        labels = [c if seen[c] == 1 else f"{c} ({i})" for i, c in enumerate(class_names)]
    fig = go.Figure(go.Heatmap(z=counts, x=labels, y=labels, colorscale="Blues", showscale=False,
                               text=counts, texttemplate="%{text}",
                               hovertemplate="original %{y} → TFLite %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, f"Top-1 agreement '{name}': {agree:.1%} of {len(a)} samples",
                   "TFLite top-1 class", "original top-1 class", height=max(320, 28 * n + 120))


def runs_per_sample_figure(per_sample: dict[str, list[float]], output: str) -> go.Figure:
    """Several runs on the same samples: each run's max |Δ| per sample for one output, overlaid.

    NaN/inf samples are drawn as red markers at the top, as in ``per_sample_error_figure``.
    """
    fig = go.Figure()
    finite_max = max((float(np.max(_finite(e))) for e in per_sample.values() if _finite(e).size), default=0.0)
    top = finite_max * 1.1 or 1.0
    for label, errs in per_sample.items():
        e = np.asarray(errs, dtype=np.float64)
        ok = np.isfinite(e)
        fig.add_trace(go.Scatter(x=np.arange(len(e)), y=np.where(ok, e, np.nan), mode="lines+markers", name=label,
                                 marker={"size": 4}, hovertemplate="sample %{x}<br>max |Δ| %{y:.3g}<extra>" + label
                                 + "</extra>"))
        bad = np.flatnonzero(~ok)
        if bad.size:
            fig.add_trace(go.Scatter(x=bad, y=[top] * bad.size, mode="markers", name=f"{label}: NaN/inf",
                                     marker={"symbol": "x", "size": 11, "color": FAIL_COLOR}))
    return _layout(fig, f"Max absolute error per sample, runs overlaid: '{output}'", "sample index",
                   "max |original − TFLite|")


def runs_scatter_figure(reference: np.ndarray, candidates: dict[str, np.ndarray], name: str,
                        max_points: int = MAX_POINTS) -> go.Figure:
    """Several runs on the same samples: original (x) against each run's TFLite output (y), overlaid.

    The same subsample of elements is drawn for every run, so the clouds compare point for point.
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    idx = None
    shown = ""
    if ref.size > max_points:
        idx = np.random.default_rng(0).choice(ref.size, max_points, replace=False)
        shown = f" ({max_points:,} of {ref.size:,} values)"
    fig = go.Figure()
    bad = 0
    for label, cand in candidates.items():
        out = np.asarray(cand, dtype=np.float64).ravel()
        if out.size != ref.size:
            continue
        bad += int(np.sum(~np.isfinite(out)))
        x, y = (ref, out) if idx is None else (ref[idx], out[idx])
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", name=label, marker={"size": 5, "opacity": 0.55},
                                 hovertemplate="original %{x:.6g}<br>TFLite %{y:.6g}<extra>" + label + "</extra>"))
    fin = _finite(ref)
    if fin.size:
        lo, hi = float(fin.min()), float(fin.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x (identical)",
                                 line={"color": "gray", "dash": "dash", "width": 1}, hoverinfo="skip"))
    if bad:
        shown += f" — {bad} NaN/inf TFLite values not drawn"
    return _layout(fig, f"Original vs TFLite, runs overlaid: {name}{shown}", "original output", "TFLite output")


def runs_bar_figure(values: dict[str, float | None], title: str, unit: str) -> go.Figure:
    """One bar per run (size or latency side by side); a missing value is labelled, not drawn as 0."""
    labels = list(values)
    ys = [None if v is None or not math.isfinite(float(v)) else float(v) for v in values.values()]
    fig = go.Figure(go.Bar(x=labels, y=ys, text=["–" if y is None else f"{y:,.4g}" for y in ys],
                           textposition="outside", cliponaxis=False, marker_color=TFLITE_COLOR))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, title, "run", unit, height=320)


# ---- Size & speed ----

def size_figure(original_bytes: int, cells: dict[str, int]) -> go.Figure:
    """File size of the original and of each converted cell, labelled with the reduction."""
    labels = ["original"] + list(cells)
    sizes = [original_bytes] + list(cells.values())
    text = [human_bytes(original_bytes)] + [
        f"{human_bytes(s)} (−{1 - s / original_bytes:.0%}, {original_bytes / s:.1f}×)"
        if s and original_bytes else human_bytes(s) for s in cells.values()]
    colors = [ORIGINAL_COLOR] + [TFLITE_COLOR] * len(cells)
    fig = go.Figure(go.Bar(x=labels, y=[s / 1024 for s in sizes], text=text, textposition="outside",
                           marker_color=colors, cliponaxis=False,
                           hovertemplate="%{x}: %{y:,.1f} KB<extra></extra>"))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, "Model file size", "model", "size (KB)")


def latency_box_figure(samples_ms: dict[str, list[float]]) -> go.Figure:
    """Batch-1 latency distribution per model (each timed run is one point)."""
    fig = go.Figure()
    for i, (label, values) in enumerate(samples_ms.items()):
        fig.add_trace(go.Box(y=list(values), name=label, boxpoints="all", jitter=0.4, pointpos=0,
                             marker={"size": 4}, boxmean=True,
                             marker_color=ORIGINAL_COLOR if i == 0 and label == "original" else None))
    fig.update_layout(showlegend=False)
    values = _finite(np.concatenate([np.asarray(v, dtype=float) for v in samples_ms.values()])) if samples_ms else []
    values = values[values > 0] if len(values) else values
    log = len(values) and values.max() / values.min() > 30    # else the fast model is a flat line
    if log:
        fig.update_yaxes(type="log")
    else:
        fig.update_yaxes(rangemode="tozero")
    return _layout(fig, "Latency per inference (batch 1)", "model", "latency (ms" + (", log scale)" if log else ")"))


def throughput_figure(throughput_sps: dict[str, float | None]) -> go.Figure:
    """Samples per second when running a batch (or back-to-back single samples)."""
    labels = [k for k, v in throughput_sps.items() if v]
    values = [throughput_sps[k] for k in labels]
    fig = go.Figure(go.Bar(x=labels, y=values, text=[f"{v:,.0f}/s" for v in values], textposition="outside",
                           cliponaxis=False,
                           marker_color=[ORIGINAL_COLOR if k == "original" else TFLITE_COLOR for k in labels]))
    log = len(values) > 1 and max(values) / min(values) > 30
    fig.update_yaxes(type="log") if log else fig.update_yaxes(rangemode="tozero")
    return _layout(fig, "Throughput", "model", "samples per second" + (" (log scale)" if log else ""))


# ---- Matrix ----

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both size and error (lower is better)."""
    front = []
    for i, (s, e) in enumerate(points):
        if not (math.isfinite(s) and math.isfinite(e)):
            continue
        dominated = any(
            (s2 <= s and e2 <= e) and (s2 < s or e2 < e)
            for j, (s2, e2) in enumerate(points) if j != i and math.isfinite(s2) and math.isfinite(e2))
        if not dominated:
            front.append(i)
    return front


def best_cell(rows: list[dict]) -> str | None:
    """The smallest passing cell (ties: lower error, then lower latency); None when none passes."""
    ok = [r for r in rows if r.get("ok") and r.get("size_bytes")]
    if not ok:
        return None
    key = lambda r: (r["size_bytes"], _num(r.get("max_abs_error")), _num(r.get("latency_ms")))  # noqa: E731
    return min(ok, key=key)["cell"]


def pareto_figure(rows: list[dict], y_label: str = "max abs error") -> go.Figure:
    """Size against max error for every computed cell; colour is latency; the Pareto front is
    joined by a line and the best passing cell is starred.

    Cells whose error has no place on a log axis are still drawn: NaN/inf at the top (red, labelled),
    exact zeros at the bottom. Cells without a latency are grey, never coloured as 0 ms.
    ``rows``: dicts with cell, size_bytes, max_abs_error, latency_ms (or None) and ok. ``y_label``
    names what ``max_abs_error`` holds when the caller plots another lower-is-better number (1 - accuracy).
    """
    rows = [r for r in rows if r.get("size_bytes")]
    fig = go.Figure()
    if not rows:
        return _layout(fig, "Size vs error (no cell computed yet)", "size (KB)", y_label)
    size_kb = [r["size_bytes"] / 1024 for r in rows]
    err = [float(r.get("max_abs_error")) if r.get("max_abs_error") is not None else math.nan for r in rows]
    plottable = [e for e in err if math.isfinite(e) and e > 0]
    hi = max(plottable) * 10 if plottable else 1.0
    lo = min(plottable) / 10 if plottable else 1e-9
    y = [e if math.isfinite(e) and e > 0 else (lo if e == 0 else hi) for e in err]
    lat = [r.get("latency_ms") for r in rows]
    has_lat = [v is not None and math.isfinite(float(v)) for v in lat]
    lat_values = [float(v) for v, h in zip(lat, has_lat) if h]
    symbol = ["circle" if r.get("ok") else "x" for r in rows]
    hover = "%{customdata}<br>%{x:,.1f} KB<br>" + y_label + " %{text}<extra></extra>"
    text = [("NaN" if math.isnan(e) else str(e)) if not math.isfinite(e) else f"{e:.3g}" for e in err]

    def group(idx, name, marker):
        if idx:
            fig.add_trace(go.Scatter(x=[size_kb[i] for i in idx], y=[y[i] for i in idx], mode="markers", name=name,
                                     customdata=[rows[i]["cell"] for i in idx], text=[text[i] for i in idx],
                                     marker={"size": 14, "symbol": [symbol[i] for i in idx],
                                             "line": {"width": 1, "color": "black"}, **marker},
                                     hovertemplate=hover))

    normal = [i for i, e in enumerate(err) if math.isfinite(e)]
    group([i for i in normal if has_lat[i]], "cells",
          {"color": [float(lat[i]) for i in normal if has_lat[i]], "colorscale": "Viridis", "showscale": True,
           "cmin": min(lat_values) if lat_values else None, "cmax": max(lat_values) if lat_values else None,
           "colorbar": {"title": {"text": "latency (ms)"}}})
    group([i for i in normal if not has_lat[i]], "latency not measured", {"color": "#B0B0B0"})
    broken = [i for i, e in enumerate(err) if not math.isfinite(e)]
    group(broken, "NaN/inf error (drawn at the top)", {"color": FAIL_COLOR})
    for i in broken:
        fig.add_annotation(x=size_kb[i], y=math.log10(hi), text=f"{rows[i]['cell']}: {text[i]}", showarrow=False,
                           yshift=16, font={"size": 11, "color": FAIL_COLOR})
    front = sorted(pareto_front(list(zip(size_kb, [1e-300 if e == 0 else e for e in err]))), key=lambda i: size_kb[i])
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[size_kb[i] for i in front], y=[y[i] for i in front], mode="lines",
                                 name="Pareto front", line={"color": "gray", "dash": "dot"}, hoverinfo="skip"))
    # Routes often give byte-identical models: label each front position once, with how many share it.
    for i in front:
        same = [r["cell"] for j, r in enumerate(rows) if size_kb[j] == size_kb[i] and err[j] == err[i]]
        if same[0] == rows[i]["cell"]:
            label = same[0] + (f" +{len(same) - 1}" if len(same) > 1 else "")
            fig.add_annotation(x=size_kb[i], y=math.log10(y[i]), text=label, showarrow=False, yshift=16,
                               font={"size": 11})
    best = best_cell(rows)
    if best:
        i = [r["cell"] for r in rows].index(best)
        fig.add_trace(go.Scatter(x=[size_kb[i]], y=[y[i]], mode="markers", name=f"best: {best}",
                                 marker={"size": 26, "symbol": "star", "color": "rgba(0,0,0,0)",
                                         "line": {"width": 2, "color": PASS_COLOR}}, hoverinfo="skip"))
    zeros = [rows[i]["cell"] for i, e in enumerate(err) if e == 0]
    title = ("Size vs error (× = out of tolerance" + (f"; exact, drawn at the bottom: {', '.join(zeros)}" if zeros else "")
             + (f"; {len(broken)} with NaN/inf" if broken else "") + ")")
    fig.update_yaxes(type="log")
    return _layout(fig, title, "TFLite size (KB)", f"{y_label} (log scale)", height=460)


# ---- Debug ----

def layer_error_figure(layers: list[dict], metric: str, label: str) -> go.Figure:
    """Error along the graph: layer order on x, the metric on y; quantized and float ops marked."""
    rows = sorted((r for r in layers if r.get(metric) is not None), key=lambda r: r["order"])
    fig = go.Figure()
    for quantized, name, colour in ((True, "quantized op", TFLITE_COLOR), (False, "float op", ORIGINAL_COLOR)):
        pick = [r for r in rows if (r["dtype"] not in ("float32", "float16", "—") or (r.get("weights") or "") in
                                    ("int8", "int16", "int4")) == quantized]
        if pick:
            vals = [float(r[metric]) for r in pick]
            fig.add_trace(go.Scatter(x=[r["order"] for r in pick], y=[v if math.isfinite(v) else None for v in vals],
                                     mode="markers", name=name, marker={"color": colour, "size": 9},
                                     text=[f"{r['op']}: {r['tensor']}" for r in pick],
                                     hovertemplate="#%{x} %{text}<br>" + label + " %{y:.3g}<extra></extra>"))
    bad = [r for r in rows if not math.isfinite(float(r[metric]))]
    for r in bad:       # NaN/inf has no height: drawn as a note at its position
        fig.add_vline(x=r["order"], line={"color": FAIL_COLOR, "dash": "dot"})
        fig.add_annotation(x=r["order"], y=1, yref="paper", text=f"{r['op']}: {r[metric]}", showarrow=False,
                           font={"color": FAIL_COLOR})
    return _layout(fig, "Error along the graph", "layer (graph order)", label)


def sweep_figure(sweep: list[dict]) -> go.Figure:
    """Size against error for each keep-float step; accuracy on a second axis when labels exist;
    the smallest step within tolerance is starred."""
    fig = go.Figure()
    if not sweep:
        return _layout(fig, "Keep-float sweep (not run)", "TFLite size (KB)", "max abs error")
    kb = [s["tflite_bytes"] / 1024 for s in sweep]
    err = [float(s["max_abs_error"]) if s["max_abs_error"] is not None else None for s in sweep]
    fig.add_trace(go.Scatter(x=kb, y=err, mode="lines+markers+text", name="max abs error",
                             text=[f"k={s['k']}" for s in sweep], textposition="top center",
                             marker={"size": 11, "symbol": ["circle" if s["ok"] else "x" for s in sweep],
                                     "color": [PASS_COLOR if s["ok"] else FAIL_COLOR for s in sweep]}))
    if any(s.get("accuracy") is not None for s in sweep):
        fig.add_trace(go.Scatter(x=kb, y=[None if s["accuracy"] is None else float(s["accuracy"]) for s in sweep],
                                 mode="lines+markers", name="accuracy (labels)", yaxis="y2",
                                 line={"dash": "dot", "color": "gray"}))
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "accuracy"})
    best = [i for i, s in enumerate(sweep) if s.get("best")]
    if best:
        i = best[0]
        fig.add_trace(go.Scatter(x=[kb[i]], y=[err[i]], mode="markers", name=f"smallest within tolerance (k={sweep[i]['k']})",
                                 marker={"size": 24, "symbol": "star", "color": "rgba(0,0,0,0)",
                                         "line": {"width": 2, "color": PASS_COLOR}}))
    return _layout(fig, "Keep-float sweep: size vs error (× = out of tolerance)", "TFLite size (KB)", "max abs error")


def board_fit_figure(board: dict) -> go.Figure:
    """RAM and flash of a board as bars: what the model needs (arena or model bytes, plus the stated
    runtime overhead) against what the board has; a bar past 100 % does not fit."""
    rows = [("RAM", board.get("ram_needed_bytes"), board["ram_bytes"], board.get("runtime_ram_bytes") or 0, "tensor arena"),
            ("Flash", board.get("flash_needed_bytes"), board["flash_bytes"], board.get("runtime_flash_bytes") or 0, "model")]
    fig = go.Figure()
    for label, color, pick in (("runtime (stated)", "#AAAAAA", lambda r: r[3]),
                               ("model's own", None, lambda r: (r[1] or 0) - r[3])):
        fig.add_bar(y=[r[0] for r in rows], x=[100 * pick(r) / r[2] for r in rows], orientation="h", name=label,
                    marker_color=color or [PASS_COLOR if (r[1] or 0) <= r[2] else FAIL_COLOR for r in rows],
                    text=[f"{pick(r):,} B {r[4] if label != 'runtime (stated)' else ''}".strip() for r in rows],
                    hovertemplate="%{y}: %{x:.1f}% of the board<extra></extra>")
    fig.add_vline(x=100, line_dash="dash", line_color=FAIL_COLOR)
    fig.update_layout(barmode="stack")
    return _layout(fig, f"Fit on {board.get('label', 'the board')}: RAM {board['ram_bytes']:,} B, flash "
                   f"{board['flash_bytes']:,} B", "% of the board", "", height=260)


def macs_figure(macs: dict) -> go.Figure:
    """Multiply-accumulates per op in execution order, coloured by op type."""
    per_op = macs.get("per_op") or []
    fig = go.Figure()
    for op in sorted({o["op"] for o in per_op}):
        mine = [o for o in per_op if o["op"] == op]
        fig.add_bar(x=[f"#{o['index']}" for o in mine], y=[o["macs"] for o in mine], name=op)
    fig.update_xaxes(categoryorder="array", categoryarray=[f"#{o['index']}" for o in per_op])
    return _layout(fig, f"MACs per op: {macs.get('total', 0):,} per inference", "op (execution order)", "MACs")
