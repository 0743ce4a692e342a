"""A self-contained HTML report of one run, or of several side by side: one file that opens offline.

plotly.js is inlined from the installed plotly package; nothing is fetched (no CDN, no fonts, no
MathJax). The charts are the Compare charts of ``charts.py`` with their data cut for size: scatter
plots keep 5,000 values per output, histograms are counted here (exact counts, sent as bars).
Every text a user wrote (note, names) is HTML-escaped. Runs are history records
(``history.History.get`` or ``history.build_run``).
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import time
from pathlib import Path

import numpy as np

from . import charts
from .people import author_label

MAX_POINTS = 5_000          # values per chart; above it data is subsampled or pre-binned
MAX_CONFUSION_CLASSES = 70  # a 70 x 70 heatmap is 4,900 cells


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _num(x, spec: str = ".3g") -> str:
    if x is None:
        return "–"
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            return _e(x)
    if isinstance(x, bool):
        return str(x)
    x = float(x)
    return format(x, spec) if math.isfinite(x) else str(x)         # NaN and inf shown as such


def _load(path: str | None) -> dict[str, np.ndarray] | None:
    if not path or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _sha_file(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Figures:
    """Collects figures as divs; plotly.js itself is inlined once for the whole file."""

    def __init__(self):
        self.count = 0

    def div(self, fig) -> str:
        import plotly.io as pio
        # WebGL scatter (Scattergl) needs a GPU context some offline viewers lack; with <= 5,000
        # points SVG is just as quick.
        if any(tr.type == "scattergl" for tr in fig.data):
            import plotly.graph_objects as go
            traces = [go.Scatter(**{k: v for k, v in tr.to_plotly_json().items() if k != "type"})
                      if tr.type == "scattergl" else tr for tr in fig.data]
            fig = go.Figure(data=traces, layout=fig.layout)
        self.count += 1
        return ('<div class="chart">' + pio.to_html(fig, include_plotlyjs=False, full_html=False,
                                                     div_id=f"chart{self.count}", config={"displaylogo": False})
                + "</div>")


def _table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


VERDICT_TEXT = {"pass": "PASS", "fail": "FAIL", "ran, no reference": "RAN, NO REFERENCE", "error": "ERROR"}


def _verdict(v: str | None) -> str:
    cls = {"pass": "pass", "fail": "fail", "error": "fail", "does not run": "fail", "does not fit": "fail"}.get(v or "", "none")
    return f'<span class="verdict {cls}">{_e(VERDICT_TEXT.get(v, v or "?"))}</span>'


def _check_text(c: dict) -> str:
    label = {"max_abs_error": "max abs ≤", "min_top1": "top-1 ≥", "min_psnr_db": "PSNR ≥", "finite": "no NaN/inf"}
    bound = "" if c["metric"] == "finite" else " " + _num(c.get("bound"))
    return f"{label.get(c['metric'], c['metric'])}{bound}: {'ok' if c['ok'] else 'FAIL'}"


def metrics_table(report: dict) -> str:
    """Per output: every metric and every tolerance applied, with pass/FAIL."""
    if not report.get("metrics"):
        rows = [[_e(o["name"]), _e(o.get("shape")), _num(o.get("min")), _num(o.get("max")), _num(o.get("mean")),
                 _e(o.get("nonfinite"))] for o in report.get("output_stats", [])]
        return _table(["output", "shape", "min", "max", "mean", "NaN/inf values"], rows, "metrics")
    rows = []
    for m in report["metrics"]:
        failed = any(not c["ok"] for c in m.get("checks", []))
        checks = "; ".join(_e(_check_text(c)) for c in m.get("checks", [])) or "none"
        rows.append([_e(m["name"]), _e(m.get("task")), f'<b class="{"fail" if failed else "pass"}">'
                     f'{"FAIL" if failed else "pass"}</b>', _num(m["max_abs_error"], ".3e"),
                     _num(m["mean_abs_error"], ".3e"), _num(m["rmse"], ".3e"), _num(m["cosine"], ".6f"),
                     _num(m["psnr_db"], ".1f"), _num(m.get("top1_agreement"), ".4f"),
                     _num(m.get("top5_agreement"), ".4f"), checks])
    return _table(["output", "task", "status", "max abs error", "mean abs error", "RMSE", "cosine", "PSNR (dB)",
                   "top-1", "top-5", "tolerances applied"], rows, "metrics")


def _latency(report: dict) -> dict:
    return report.get("latency") or {}


def size_latency_table(report: dict) -> str:
    lat = _latency(report)
    o, t = lat.get("original") or {}, lat.get("tflite") or {}
    rows = [["original", f"{report.get('original_bytes') or 0:,}", _num(o.get("median_ms"), ".4g"),
             _num(o.get("p90_ms"), ".4g"), _e(o.get("threads", "–") if o else "–"), _e(o.get("runs", "–") if o else "–")],
            ["TFLite", f"{report.get('tflite_bytes') or 0:,}", _num(t.get("median_ms"), ".4g"),
             _num(t.get("p90_ms"), ".4g"), _e(t.get("threads") if t.get("threads") is not None else "default"),
             _e(t.get("runs", "–"))]]
    return _table(["model", "bytes", "latency median (ms)", "p90 (ms)", "threads", "timed runs"], rows)


def _compare_charts(report: dict, figs: _Figures) -> tuple[list[str], str]:
    """The Compare charts for one cell (from its store artifacts), and a note when they are gone."""
    reference, predicted = _load(report.get("reference_path")), _load(report.get("predictions_path"))
    if reference is None or predicted is None:
        why = "no original to compare" if not report.get("reference_path") else "its store files were removed"
        return [], f"Charts unavailable: {why}."
    divs = []
    for name in reference:
        if name in predicted:
            divs.append(figs.div(charts.scatter_figure(reference[name], predicted[name], name, max_points=MAX_POINTS)))
    common = {k: reference[k] for k in reference if k in predicted}
    divs.append(figs.div(charts.error_histogram_figure(common, predicted, max_points=MAX_POINTS)))
    per_sample = {m["name"]: m.get("per_sample_max_abs") or [] for m in report.get("metrics", [])}
    bounds = {c["bound"] for m in report.get("metrics", []) for c in m.get("checks", []) if c["metric"] == "max_abs_error"}
    if any(per_sample.values()):
        divs.append(figs.div(charts.per_sample_error_figure(
            {k: [float(x) for x in v[:MAX_POINTS]] for k, v in per_sample.items()},
            float(bounds.pop()) if len(bounds) == 1 else None)))
    for m in report.get("metrics", []):
        ref = reference.get(m["name"])
        if (m.get("task") == "classification" and m.get("top1_agreement") is not None and ref is not None
                and ref.ndim == 2 and ref.shape[1] <= MAX_CONFUSION_CLASSES):
            divs.append(figs.div(charts.confusion_figure(ref, predicted[m["name"]], m["name"])))
    lat = _latency(report)
    samples = {k: (lat.get(k) or {}).get("samples_ms") for k in ("original", "tflite")}
    samples = {("original" if k == "original" else "TFLite"): v for k, v in samples.items() if v}
    if samples:
        divs.append(figs.div(charts.latency_box_figure(samples)))
    return divs, ""


def _pareto_rows(reports: list[dict]) -> list[dict]:
    from .history import cell_name, summarize
    rows = []
    for r in reports:
        s = summarize(r)
        rows.append({"cell": cell_name(r), "size_bytes": r.get("tflite_bytes"), "ok": r.get("ok"),
                     "max_abs_error": None if s["max_abs_error"] is None else float(s["max_abs_error"]),
                     "latency_ms": s["latency_ms"]})
    return rows


def matrix_section(run: dict, figs: _Figures) -> str:
    reports = run.get("reports", [])
    rows = _pareto_rows(reports)
    body = []
    for r, rep in zip(rows, reports):
        body.append([_e(r["cell"]), _verdict(rep.get("verdict")), f"{r['size_bytes'] or 0:,}",
                     _num((rep.get("size_ratio")), ".1%"), _num(r["max_abs_error"], ".3e"),
                     _num(_top1(rep), ".3f"), _num(r["latency_ms"], ".4g"), _e("; ".join(rep.get("failures", [])))])
    for cell, f in (run.get("failed_cells") or {}).items():
        state = "refused" if f.get("kind") == "UnsupportedCombination" else "error"
        body.append([_e(cell), f'<span class="verdict none">{state}</span>', "–", "–", "–", "–", "–", _e(f["message"])])
    best = charts.best_cell(rows)
    out = [f"<h3>Matrix: {len(reports)} cells computed</h3>",
           f'<p>Best: <b>{_e(best)}</b>, the smallest model within tolerance.</p>' if best else
           "<p>No cell is within tolerance.</p>",
           _table(["cell", "verdict", "bytes", "size vs original", "max abs error", "top-1", "latency (ms)", "note"],
                  body, "matrix")]
    if rows:
        out.append(figs.div(charts.pareto_figure(rows)))
        out.append(figs.div(charts.size_figure(run.get("original_bytes") or 0,
                                               {r["cell"]: r["size_bytes"] for r in rows if r["size_bytes"]})))
    return "\n".join(out)


def _top1(rep: dict):
    from .metrics import headline_top1
    return headline_top1(rep.get("metrics", []))


def _generic_table(rows: list[dict], cls: str) -> str:
    cols = list(dict.fromkeys(k for row in rows for k in row))

    def cell(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return _num(v, ".4g")
        return _e(", ".join(map(str, v)) if isinstance(v, list) else v)
    return _table(cols, [[cell(row.get(c)) for c in cols] for row in rows], cls)


def layers_section(layers: list[dict]) -> str:
    """The per-layer table of a debugged run (columns as the debug run recorded them)."""
    if not layers:
        return ""
    return f"<h3>Per-layer errors ({len(layers)} tensors)</h3>" + _generic_table(layers, "layers")


def _head_report(run: dict) -> dict | None:
    reports = run.get("reports") or []
    cell = run.get("cell")
    return next((r for r in reports if r.get("cell") == cell), reports[0] if reports else None)


def targets_section(head: dict) -> str:
    """Each deployment target the cell ran on (targets.micro): verdict, arena/flash, board, outputs, vs LiteRT."""
    out = []
    for name, t in (head.get("targets") or {}).items():
        board = t.get("board") or {}
        out.append(f"<h3>On {_e(name)} {_verdict(t.get('verdict'))}</h3><p>arena {_num(t.get('arena_bytes'), ',.0f')} "
                   f"bytes (recorded {_num(t.get('arena_recorded_bytes'), ',.0f')}), flash {_num(t.get('flash_bytes'), ',.0f')} "
                   f"bytes, {_num((t.get('macs') or {}).get('total'), ',.0f')} MACs"
                   + (f"; {'fits' if board.get('fits') else 'does not fit'} {_e(board.get('label'))}" if board else "")
                   + "</p>")
        if t.get("error"):
            out.append(f'<p class="fail">{_e(t["error"])}</p>')
        if t.get("outputs"):
            out.append(_generic_table([{k: o.get(k) for k in ("name", "max_abs_error", "mean_abs_error", "rmse",
                                                               "psnr_db", "top1_agreement")} for o in t["outputs"]],
                                      "target"))
        if t.get("vs_litert"):
            out.append("<p class='meta'>vs LiteRT (same .tflite, same samples)</p>"
                       + _generic_table(t["vs_litert"], "target"))
    return "\n".join(out)


def devices_section(run: dict, head: dict | None) -> str:
    """The devices this run's cell ran on ('Run on this device'), next to the server's LiteRT."""
    from .history import device_label
    devices = run.get("devices") or []
    if not devices:
        return ""
    rows = []
    for d in devices:
        dev = d.get("device") or {}
        lat = dev.get("latency_ms") or {}
        rows.append([_e(device_label(dev)), _e(dev.get("accelerator")), _num(lat.get("median")), _num(lat.get("p90")),
                     _verdict(d.get("verdict")),
                     _e("; ".join(f"{o.get('name')} {_num(o.get('max_abs_error'))}" for o in dev.get("outputs") or [])),
                     _e("; ".join(f"{v.get('name')} {_num(v.get('max_abs_diff'))}" for v in dev.get("vs_litert") or [])),
                     f"<code>{_e(d.get('id'))}</code>"])
    server = ((head or {}).get("latency") or {}).get("tflite") or {}
    rows.append(["server / LiteRT", _e(f"CPU, {server['threads']} threads" if server.get("threads") else "CPU"),
                 _num(server.get("median_ms")), _num(server.get("p90_ms")), _verdict(run.get("verdict")), "", "",
                 f"<code>{_e(run.get('id'))}</code>"])
    return ("<h3>On devices (LiteRT.js in the visitor's browser)</h3>"
            + _table(["device", "accelerator", "median ms", "p90 ms", "verdict", "max abs error vs original",
                      "max |browser − server LiteRT|", "run"], rows, "devices"))


def reviews_section(reviews: list[dict]) -> str:
    """The run's reviews, oldest first, right under its verdict (names and texts escaped)."""
    if not reviews:
        return '<p class="meta reviews">No review yet.</p>'
    items = "".join(
        f'<li><b class="review">{_e(r["verdict"])}</b> by {_e(author_label(r.get("author")))} · '
        f'{_e(time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])))}'
        + (f": {_e(r['text'])}" if r.get("text") else "") + "</li>" for r in reviews)
    return f'<ul class="reviews">{items}</ul>'


def run_section(run: dict, figs: _Figures) -> str:
    """Everything about one run: verdict, metrics, charts, size/latency, matrix, layers, script, provenance."""
    head = _head_report(run)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(run.get("created_at") or time.time()))
    title = f"{run['model']['filename']} — {run.get('cell') or run['kind']}"
    out = [f'<section class="run"><h2>{_e(title)} {_verdict(run.get("verdict"))}</h2>',
           f'<p class="meta">run <code>{_e(run.get("id") or "not recorded")}</code> · {_e(run["kind"])} '
           f'({_e(run.get("origin"))}) · by <span class="author">{_e(author_label(run.get("author")))}</span> · '
           f'{_e(when)}</p>']
    out.append(reviews_section(run.get("reviews") or []))
    if run.get("note"):
        out.append(f'<p class="note"><b>Note:</b> {_e(run.get("note"))}</p>')
    if head is None:
        for cell, f in (run.get("failed_cells") or {}).items():
            out.append(f'<p class="fail">{_e(cell)}: {_e(f["message"])}</p>')
    else:
        failures = head.get("failures") or []
        out.append(f"<h3>Per-output metrics against tolerances{' — ' + _e(run.get('cell')) if run['kind'] == 'matrix' else ''}</h3>")
        out.append(metrics_table(head))
        acc = head.get("accuracy")
        if acc:
            out.append(f"<h3>Accuracy against the labels</h3>" + _table(
                ["output", "metric", "original", "TFLite", "change", "check"],
                [[_e(acc.get("output")), _e(acc.get("metric")), _num(acc.get("original"), ".4g"),
                  _num(acc.get("tflite"), ".4g"), _num(acc.get("delta"), "+.4g"),
                  _e(("ok" if acc["check"]["ok"] else "FAIL") if acc.get("check") else "not checked")]]))
        out += [f'<p class="fail">Out of tolerance: {_e(f)}</p>' for f in failures]
        tol = head.get("tolerances") or {}
        out.append(f'<p class="meta">Tolerances: max abs error ≤ {_num(tol.get("max_abs_error"))}'
                   f'{" × output scale" if tol.get("scale_max_abs") else ""}, top-1 ≥ {_num(tol.get("min_top1"))}, '
                   f'PSNR ≥ {_num(tol.get("min_psnr_db"))} dB'
                   + (f'; set by the user: {_e(", ".join(tol.get("user_set") or []))}' if tol.get("user_set") else "")
                   + "</p>")
        out.append("<h3>Size and latency</h3>" + size_latency_table(head))
        out.append(targets_section(head))
        out.append(devices_section(run, head))
        divs, note = _compare_charts(head, figs)
        out.append("<h3>Compare charts</h3>" + (f'<p class="meta">{_e(note)}</p>' if note else "")
                   + '<div class="charts">' + "".join(divs) + "</div>")
        for w in head.get("warnings") or []:
            out.append(f'<p class="warn">warning: {_e(w)}</p>')
    if run["kind"] == "matrix":
        out.append(matrix_section(run, figs))
    extra = run.get("extra") or {}
    out.append(layers_section(extra.get("layers") or []))
    if extra.get("suggested_float"):
        out.append(f"<p>Suggested float layers: <code>{_e(', '.join(map(str, extra['suggested_float'])))}</code></p>")
    if extra.get("sweep"):
        out.append("<h3>Keep-float sweep</h3>" + _generic_table(extra["sweep"], "sweep")
                   + (f"<p class='meta'>Chosen: step {_e(extra.get('best_step'))}</p>"
                      if extra.get("best_step") is not None else ""))
    out += [f"<p class='meta'>{_e(n)}</p>" for n in extra.get("notes") or []]
    rep = (head or {}).get("reproduce") or {}
    if rep.get("code"):
        out.append(f"<h3>Reproduction script</h3><pre><code>{_e(rep['code'])}</code></pre>")
    elif head and head.get("calls"):
        out.append(f"<h3>Converter calls</h3><pre><code>{_e(chr(10).join(head['calls']))}</code></pre>")
    out.append("<h3>Versions and hashes</h3>" + provenance_table(run, head))
    out.append("</section>")
    return "\n".join(out)


def provenance_table(run: dict, head: dict | None) -> str:
    v = run.get("versions") or {}
    s = run.get("samples") or {}
    rows = [["model", f"{_e(run['model']['filename'])} ({_e(run['model'].get('format'))}, "
                      f"{run['model'].get('size_bytes') or 0:,} bytes)", f"<code>{_e(run['model']['sha256'])}</code>"],
            ["samples", f"{_e(s.get('description'))} ({_e(s.get('count'))} samples)", f"<code>{_e(s.get('sha256'))}</code>"]]
    if head and head.get("route") is not None:
        sha = head.get("tflite_sha256") or _sha_file(head.get("tflite_path"))
        rows.append([".tflite", f"{head.get('tflite_bytes') or 0:,} bytes", f"<code>{_e(sha or 'file removed')}</code>"])
    rows += [[name, _e(v.get(key)), ""] for name, key in (("TensorFlow", "tensorflow"), ("Keras", "keras"),
                                                          ("LiteRT", "litert"), ("tflite_lab", "tflite_lab"),
                                                          ("Python", "python"))]
    rows.append(["host CPU", _e(run.get("host_cpu")), ""])
    return _table(["", "", "sha256"], rows, "prov")


def _same_samples(runs: list[dict]) -> bool:
    shas = {(r.get("samples") or {}).get("sha256") for r in runs}
    return len(shas) == 1 and None not in shas


def run_label(run: dict) -> str:
    return f"{run.get('id') or '?'}: {run['model']['filename']} {run.get('cell') or run['kind']}"


def side_by_side(runs: list[dict]) -> tuple[list[str], list[tuple[str, list, str | None]]]:
    """Headline numbers of several runs: (labels, [(metric, value per run, format)]); the pages and
    the report both show these, with the delta of each run to the first."""
    from .history import summarize
    heads = [_head_report(r) for r in runs]

    def values(fn):
        return [fn(h) if h else None for h in heads]

    def num(x):
        return None if x is None else float(x)
    return [run_label(r) for r in runs], [
        ("verdict", [VERDICT_TEXT.get(r.get("verdict"), r.get("verdict")) for r in runs], None),
        ("author", [author_label(r.get("author")) for r in runs], None),
        ("reviews", [review_summary(r.get("reviews") or []) for r in runs], None),
        ("samples sha256", [((r.get("samples") or {}).get("sha256") or "")[:12] for r in runs], None),
        ("TFLite bytes", values(lambda h: h.get("tflite_bytes")), ",.0f"),
        ("worst max abs error", values(lambda h: num(summarize(h)["max_abs_error"])), ".3e"),
        ("lowest top-1", values(lambda h: num(summarize(h)["min_top1"])), ".4f"),
        ("latency median (ms)", values(lambda h: num(summarize(h)["latency_ms"])), ".4g"),
        ("latency threads", values(lambda h: summarize(h)["threads"] or "default"), None),
    ]


def review_summary(reviews: list[dict]) -> str:
    """'approved by Bob; comment by Ana' (oldest first), or 'awaiting review'."""
    return "; ".join(f"{r['verdict']} by {author_label(r.get('author'))}" for r in reviews) or "awaiting review"


def delta(value, base) -> float | None:
    """value - base, or None when either is missing (NaN stays NaN)."""
    if value is None or base is None or isinstance(value, str) or isinstance(base, str):
        return None
    return float(value) - float(base)


def overlaid_per_sample(runs: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{output: {run label: per-sample max |Δ|}} when the runs share samples, else {}."""
    if not _same_samples(runs):
        return {}
    heads = [_head_report(r) for r in runs]
    outputs = [m["name"] for m in (heads[0] or {}).get("metrics", [])]
    out = {}
    for name in outputs:
        series = {run_label(r): [float(x) for x in next((m.get("per_sample_max_abs") or [] for m in h.get("metrics", [])
                                                         if m["name"] == name), [])][:MAX_POINTS]
                  for r, h in zip(runs, heads) if h}
        if any(series.values()):
            out[name] = series
    return out


def overlaid_outputs(runs: list[dict]) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """{output: (reference, {run label: TFLite output})} when the runs share samples and their files
    are still in the store, else {}."""
    if not _same_samples(runs):
        return {}
    heads = [_head_report(r) for r in runs]
    reference = next((_load(h.get("reference_path")) for h in heads if h and h.get("reference_path")), None)
    if reference is None:
        return {}
    preds = {run_label(r): _load(h.get("predictions_path")) for r, h in zip(runs, heads) if h}
    return {name: (ref, {lab: p[name] for lab, p in preds.items() if p is not None and name in p})
            for name, ref in reference.items()}


def comparison_section(runs: list[dict], figs: _Figures) -> str:
    """Several runs: headline numbers in columns with the delta to the first run; charts overlaid
    when the runs share samples."""
    labels, lines = side_by_side(runs)
    rows = []
    for name, vals, spec in lines:
        cells = []
        for i, v in enumerate(vals):
            if spec is None:
                cells.append(_e(v))
                continue
            text = _num(v, spec)
            d = delta(v, vals[0]) if i else None
            if d is not None:
                text += f' <span class="delta">({"+" if d >= 0 else ""}{_num(d, spec)})</span>'
            cells.append(text)
        rows.append([_e(name)] + cells)
    out = ["<section><h2>Side by side</h2><p class='meta'>Deltas are against the first run.</p>",
           _table(["", *labels], rows, "side")]
    for name, (ref, cands) in overlaid_outputs(runs).items():
        out.append(figs.div(charts.runs_scatter_figure(ref, cands, name, max_points=MAX_POINTS)))
    overlays = overlaid_per_sample(runs)
    for name, series in overlays.items():
        out.append(figs.div(charts.runs_per_sample_figure(series, name)))
    if not _same_samples(runs):
        out.append("<p class='meta'>The runs used different samples, so their charts are not overlaid.</p>")
    by = {name: vals for name, vals, _ in lines}
    out.append(figs.div(charts.runs_bar_figure(dict(zip(labels, by["TFLite bytes"])), "TFLite size", "bytes")))
    out.append(figs.div(charts.runs_bar_figure(dict(zip(labels, by["latency median (ms)"])), "Latency (median)", "ms")))
    out.append("</section>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1500px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}.verdict{padding:2px 10px;border-radius:4px;color:#fff;
font-size:.8em}.verdict.pass{background:#0B8A5F}.verdict.fail{background:#D62728}.verdict.none{background:#888}
b.pass{color:#0B8A5F}b.fail,.fail{color:#D62728}.warn{color:#8a6d00}.meta{color:#666;font-size:13px}
.delta{color:#666}.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:8px}
pre{background:#f7f7f7;padding:12px;overflow:auto;font-size:12px}.runs{display:grid;gap:24px}
.tag{background:#eef;padding:1px 6px;border-radius:3px}section.run{border-top:2px solid #ccc;padding-top:8px}
"""


def render_report(runs: list[dict]) -> str:
    """The HTML text of the report (one run, or several side by side)."""
    import plotly.offline
    if not runs:
        raise ValueError("a report needs at least one run")
    figs = _Figures()
    sections = []
    if len(runs) > 1:
        sections.append(comparison_section(runs, figs))
    cols = min(len(runs), 2)
    sections.append(f'<div class="runs" style="grid-template-columns:repeat({cols},minmax(0,1fr))">'
                    + "".join(run_section(r, figs) for r in runs) + "</div>")
    title = "TFLite Lab report — " + ", ".join(r.get("id") or r["model"]["filename"] for r in runs)
    made = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{CSS}</style><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
            f"<h1>{_e(title)}</h1><p class='meta'>Written {made} by tflite_lab; self-contained (opens offline). "
            f"{figs.count} charts.</p>" + "\n".join(sections)
            + f"<script type='application/json' id='runs'>{_e(json.dumps([_ids(r) for r in runs]))}</script>"
            + "</body></html>")


def _ids(run: dict) -> dict:
    return {"id": run.get("id"), "model_sha256": run["model"]["sha256"], "verdict": run.get("verdict")}


def write_report(runs: list[dict], out: str | Path) -> tuple[str, int]:
    """Write the report; returns (path, size in bytes)."""
    from .errors import TFLiteLabError
    text = render_report(runs).encode()
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    except OSError as e:
        from .errors import wrapped
        raise TFLiteLabError(wrapped(f"Cannot write the report to {path}: ", e.strerror or e, ".")) from None
    return str(path), len(text)
