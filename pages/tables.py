"""What the pages show as tables and text: metrics and matrix frames, formats, reproduction code."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from pages.state import failures, judged, original, reports, samples
from tflite_lab import metrics
from tflite_lab.orchestrate import cell_id
from tflite_lab.types import Optimization, SourceFormat


def shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def signature_frame(signature: dict) -> pd.DataFrame:
    rows = [{"": kind[:-1], "name": t["name"], "shape": shape_text(t["shape"]), "dtype": t["dtype"]}
            for kind in ("inputs", "outputs") for t in signature[kind]]
    return pd.DataFrame(rows)


CHECK_LABELS = {"max_abs_error": "max abs error ≤", "min_top1": "top-1 ≥", "min_psnr_db": "PSNR ≥ (dB)",
                "finite": "no NaN/inf"}


def check_text(c: dict) -> str:
    bound = "" if c["metric"] == "finite" else f" {_formatter('.3g')(_f(c['bound']))}"
    return f"{CHECK_LABELS[c['metric']]}{bound}: {'ok' if c['ok'] else 'FAIL'} ({c['why']})"


def metrics_frame(report: dict) -> pd.DataFrame:
    """One row per output: its task, status, metrics, and every tolerance applied (with where it comes from)."""
    rows = []
    for m in report["metrics"]:
        why = [f.split(": ", 1)[1] for f in report.get("failures", []) if f.startswith(m["name"] + ":")]
        checks = [check_text(c) for c in m.get("checks", [])] + list(m.get("not_applied", []))
        rows.append({"output": m["name"], "task": m.get("task", ""), "status": "FAIL" if why else "pass",
                     "max abs error": _f(m["max_abs_error"]), "mean abs error": _f(m["mean_abs_error"]),
                     "RMSE": _f(m["rmse"]), "cosine": _f(m["cosine"]), "PSNR (dB)": _f(m["psnr_db"]),
                     "top-1 agreement": _f(m["top1_agreement"]), "top-5 agreement": _f(m["top5_agreement"]),
                     "tolerances applied": "; ".join(checks), "why": "; ".join(why)})
    return pd.DataFrame(rows, dtype=object)


def output_stats_frame(report: dict) -> pd.DataFrame:
    """A .tflite run without its original: what each output looks like, NaN/inf counted."""
    rows = [{"output": o["name"], "shape": shape_text(o["shape"]), "min": _f(o["min"]), "max": _f(o["max"]),
             "mean": _f(o["mean"]), "NaN/inf values": o["nonfinite"],
             "status": "FAIL" if o["nonfinite"] else "ran"} for o in report.get("output_stats", [])]
    return pd.DataFrame(rows, dtype=object)


VERDICT_TEXT = {"pass": "PASS", "fail": "FAIL", "ran, no reference": "Ran, no reference"}


def verdict(report: dict) -> str:
    """The headline: PASS/FAIL against tolerances, or 'Ran, no reference' when nothing was compared."""
    return VERDICT_TEXT.get(report.get("verdict"), "PASS" if report["ok"] else "FAIL")


def verdict_metric(col, report: dict, **kw) -> None:
    """The verdict with what it was judged on beneath it: "on 64 random samples"."""
    from tflite_lab.pipeline import samples_phrase
    col.metric("Verdict", verdict(report), samples_phrase(report) or None, delta_color="off", delta_arrow="off", **kw)


def sample_inputs_frame(inputs: dict) -> pd.DataFrame:
    """Random samples, per input: the values drawn (and from what in the model) and the length."""
    return pd.DataFrame([{"input": k, "values": d["values"], "length": d.get("length")} for k, d in inputs.items()],
                        dtype=object)


def sample_caveats(report: dict) -> None:
    """Why random values cannot exercise this model (token ids of an unknown vocabulary, noise images
    for a classifier), shown beside the verdict."""
    import streamlit as st
    for caveat in (report.get("samples") or {}).get("caveats") or []:
        st.warning(caveat, icon=":material/warning:")


def number(x, spec: str = ".3g") -> str:
    """A headline number: NaN and inf shown as such, None as a dash."""
    return _formatter(spec)(x)


STATUS_COLORS = {"pass": "#0B8A5F", "ran": "#0B8A5F", "FAIL": "#D62728", "error": "#E67E22", "refused": "#8A8A8A", "running": "#1F77B4"}


def _formatter(spec: str):
    def fmt(x):
        if x is None:
            return "–"
        x = float(x)
        return format(x, spec) if np.isfinite(x) else str(x)     # NaN and inf are shown, not hidden
    return fmt


FORMATS = {"max abs error": ".2e", "mean abs error": ".2e", "RMSE": ".2e", "cosine": ".6f", "PSNR (dB)": ".1f",
           "top-1 agreement": ".1%", "top-5 agreement": ".1%", "size (KB)": ",.1f", "size vs original": ".1%",
           "top-1": ".1%", "latency (ms)": ".4f", "min": ".4g", "max": ".4g", "mean": ".4g"}


def styled(frame: pd.DataFrame):
    """Numbers formatted by column (NaN/inf kept visible), the status coloured."""
    def color(v):
        c = STATUS_COLORS.get(str(v).split(":")[0])
        return f"color: {c}; font-weight: 600" if c else ""
    formats = {k: _formatter(v) for k, v in FORMATS.items() if k in frame.columns}
    return frame.style.map(color, subset=["status"]).format(formats)


def _f(x) -> float | None:
    return None if x is None else float(x)     # JSON's "nan"/"inf" strings back to floats


def worst_error(report: dict) -> float | None:
    """The largest max abs error over the outputs; NaN if any output's is NaN (never dropped)."""
    return metrics.worst(m["max_abs_error"] for m in report["metrics"])


def min_top1(report: dict) -> float | None:
    return metrics.headline_top1(report["metrics"])


def reproduction(report: dict, prepared: dict) -> tuple[str, str]:
    """(a standalone script reproducing this cell, its language): built by the core."""
    rep = report.get("reproduce")
    if rep:
        return rep["code"], rep["language"]
    return "\n".join(report.get("calls") or ["# a given .tflite: nothing was converted"]), "python"


def cli_line(report: dict) -> str:
    """The same cell through this project's CLI."""
    m, s = original(), samples().spec
    parts = ["python -m tflite_lab convert", m.filename if m else "MODEL",
             f"--route {report['route']}", f"--optimize {report['optimization']}"]
    if report.get("int8_io"):
        parts.append("--int8-io")
    parts.append(f"--samples {Path(s.path).name}" if s.path else
                 f"--num-samples {s.count or 64} --seed {s.seed}"
                 + "".join(f" --{k} {v:g}" for k, v in (("low", s.low), ("high", s.high)) if v is not None)
                 + "".join(f" --length {f'{n}=' if n else ''}{v}" for n, v in s.lengths))
    return " ".join(parts) + " --out result/"


def matrix_frame(fmt: SourceFormat, states: dict | None = None) -> pd.DataFrame:
    """Every route x optimization: size, error, top-1, latency and status (with the reason)."""
    from tflite_lab.routes import refusal
    from tflite_lab.types import Route
    rows = []
    for route in Route:
        for opt in Optimization:
            cid = cell_id(route.value, opt.value)
            row = {"cell": cid, "route": route.value, "optimization": opt.value, "status": "not run",
                   "size (KB)": None, "size vs original": None, "max abs error": None, "top-1": None,
                   "accuracy": None, "latency (ms)": None, "note": "", **dict.fromkeys(MICRO_COLUMNS)}
            reason = refusal(route, opt, fmt)
            if reason:
                row.update(status="refused", note=reason)
            elif cid in reports():
                r = judged(cid)
                tfl = (r["latency"] or {}).get("tflite") or {}
                note = "; ".join(r["failures"] + ([f"from the store, converted {r.get('cached_at') or 'earlier'}"]
                                                  if r.get("cached") else []))
                row.update(status="pass" if r["ok"] else "FAIL", note=note,
                           **{"size (KB)": r["tflite_bytes"] / 1024, "size vs original": r["size_ratio"],
                              "max abs error": worst_error(r), "top-1": min_top1(r),
                              "accuracy": _f((r.get("accuracy") or {}).get("tflite")),
                              "latency (ms)": tfl.get("median_ms")}, **micro_columns(r))
            elif cid in failures():
                row.update(status="error", note=failures()[cid]["message"] + _aeq_note(opt.value))
            if states and cid in states:
                step, started = states[cid]
                if step == "queued":
                    row["status"] = "queued"
                elif step not in ("done", "failed"):
                    row["status"] = f"running: {step}" + (f" ({time.monotonic() - started:.0f} s)" if started else "")
            rows.append(row)
    grid = {r["cell"] for r in rows}
    for cid, rep in reports().items():          # selective and ai-edge-quantizer cells: rows of their own
        if cid in grid or cid == "provided":
            continue
        r = judged(cid)
        tfl = (r["latency"] or {}).get("tflite") or {}
        floats = ", ".join(o["op"] for o in r.get("float_ops") or [])
        rows.append({"cell": cid, "route": "ai-edge-quantizer" if r.get("quantizer") == "aeq" else r["route"],
                     "optimization": cid.split("-", 1)[-1],
                     "status": "pass" if r["ok"] else "FAIL", "size (KB)": r["tflite_bytes"] / 1024,
                     "size vs original": r["size_ratio"], "max abs error": worst_error(r), "top-1": min_top1(r),
                     "accuracy": _f((r.get("accuracy") or {}).get("tflite")), "latency (ms)": tfl.get("median_ms"),
                     "note": "; ".join(r["failures"]) or (f"float ops: {floats}" if floats else ""),
                     **dict.fromkeys(MICRO_COLUMNS), **micro_columns(r)})
    for cid, f in failures().items():
        if cid.startswith("aeq-") and cid not in grid:
            rows.append({"cell": cid, "route": "ai-edge-quantizer", "optimization": cid[4:], "status": "error",
                         "note": f["message"]})
    return pd.DataFrame(rows, dtype=object)


def _aeq_note(optimization: str) -> str:
    """Where TensorFlow's converter failed: whether ai-edge-quantizer's cell of the recipe succeeded."""
    cid = f"aeq-{optimization}"
    if cid in reports():
        return f" — ai-edge-quantizer succeeds ({cid}: {'pass' if judged(cid)['ok'] else 'out of tolerance'})."
    if cid in failures():
        return f" — ai-edge-quantizer fails too ({failures()[cid]['message']})."
    return ""


MICRO_COLUMNS = ["micro", "arena (KB)", "fits board"]


def micro_columns(r: dict) -> dict:
    """The Matrix page's Microcontroller columns of a judged cell (empty when it was not run there)."""
    t = (r.get("targets") or {}).get("micro")
    if not t:
        return {}
    board = t.get("board") or {}
    return {"micro": t.get("verdict"), "arena (KB)": t["arena_bytes"] / 1024 if t.get("arena_bytes") else None,
            "fits board": board.get("fits") if board else None}


def pareto_rows(target: str | None = None) -> list[dict]:
    """Every computed cell; with ``target``, only those run there (their ``ok`` includes its verdict)."""
    rows = []
    for cid in reports():
        r = judged(cid)
        if target and target not in (r.get("targets") or {}):
            continue
        tfl = (r["latency"] or {}).get("tflite") or {}
        acc = r.get("accuracy") or {}
        rows.append({"cell": cid, "size_bytes": r["tflite_bytes"], "max_abs_error": worst_error(r),
                     "accuracy": _f(acc.get("tflite")), "accuracy_metric": acc.get("metric"),
                     "latency_ms": tfl.get("median_ms"), "ok": r["ok"]})
    return rows
