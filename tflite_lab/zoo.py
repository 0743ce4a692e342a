"""A model zoo through the matrix: find the models and their samples, run every cell of every model
on one executor (``orchestrate.run_cells``), and summarize one row per model.

Samples are matched by file name next to each model (or in ``samples_dir``): ``NAME.samples.*``
where NAME is the model's file name without its extension, or a leading part of it followed by
``_`` (``diabetes_regressor_savedmodel.zip`` takes ``diabetes_regressor.samples.npy``); the longest
such NAME wins. Without one, random samples.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SourceError, TFLiteLabError
from .metrics import finite_or_inf as _num

MODEL_SUFFIXES = (".keras", ".h5", ".zip")


@dataclass
class ZooModel:
    name: str                    # unique in the zoo: the file name without extension (+ "-2"... on clashes)
    path: Path
    samples: Path | None
    source: dict | None = None
    prepared: dict | None = None
    error: dict | None = None    # failure_record when loading or preparing failed
    cells: dict = field(default_factory=dict)   # cell id -> public cell JSON (report_json or failed_cell_json)
    judged: dict = field(default_factory=dict)  # cell id -> judged full report (for the run history)


def _is_model(p: Path) -> bool:
    if ".samples" in p.name or p.name.startswith("."):
        return False
    if p.is_dir():
        return (p / "saved_model.pb").exists()
    return p.suffix.lower() in MODEL_SUFFIXES


def find_models(paths: list[str]) -> list[Path]:
    """Models from folders (their model files and SavedModel folders, sorted) or text files listing
    them (one path a line, relative to the list; blank lines and ``#`` comments skipped).

    Raises: SourceError for a path that does not exist, a listed model that does not, or no model at all.
    """
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise SourceError(f"{p} does not exist.")
        if p.is_dir() and not (p / "saved_model.pb").exists():
            found += sorted(c for c in p.iterdir() if _is_model(c))
        elif p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                m = (p.parent / line) if not Path(line).is_absolute() else Path(line)
                if not m.exists():
                    raise SourceError(f"{p}, line {n}: {line} does not exist.")
                found.append(m)
        else:
            found.append(p)
    if not found:
        raise SourceError(f"No models in {', '.join(paths)}: expected .keras, .h5, zipped SavedModel files or "
                          "SavedModel folders, or a .txt file listing them.")
    seen, unique = set(), []
    for m in found:
        if m.resolve() not in seen:
            seen.add(m.resolve())
            unique.append(m)
    return unique


def match_samples(model: Path, samples_dir: Path | None = None) -> Path | None:
    """The ``NAME.samples.*`` file or folder for this model (see the module docstring), or None."""
    stem = model.name[: -len(model.suffix)] if model.suffix and not model.is_dir() else model.name
    best, best_len = None, -1
    for c in sorted((samples_dir or model.parent).iterdir()):
        name, sep, _ = c.name.partition(".samples")
        if not sep or not name:
            continue
        if (stem == name or stem.startswith(name + "_")) and len(name) > best_len:
            best, best_len = c, len(name)
    return best


def model_names(paths: list[Path]) -> list[str]:
    names, count = [], Counter()
    for p in paths:
        base = p.name[: -len(p.suffix)] if p.suffix and not p.is_dir() else p.name
        count[base] += 1
        names.append(base if count[base] == 1 else f"{base}-{count[base]}")
    return names


# ---- the summary ----

def _worst(cell: dict) -> float | None:
    from .metrics import worst
    return worst(o["max_abs_error"] for o in cell.get("outputs", []))


def _latency(cell: dict) -> float | None:
    return ((cell.get("latency_ms") or {}).get("tflite") or {}).get("median")


def failure_reason(cell: dict) -> str | None:
    """Why a cell is not within tolerance, in a few words; None when it is."""
    if cell.get("ok"):
        return None
    kind = cell.get("error_kind")
    if kind == "UnsupportedCombination":
        return "refused"
    if kind == "WorkerError":
        msg = cell.get("error", "")
        return "time limit" if "longer than the limit" in msg else "memory limit" if "MB, more than" in msg else "crashed"
    if kind:
        return "conversion failed" if kind == "ConversionError" else "error"
    return "out of tolerance"


def summarize(model: ZooModel) -> dict:
    """One row: the best cell within tolerance (smallest .tflite, then lower error, then latency),
    its size reduction, worst error and latency, and the other cells counted by failure reason."""
    cells = list(model.cells.values())
    ok = [c for c in cells if c.get("ok") and c.get("tflite_bytes")]
    best = min(ok, key=lambda c: (c["tflite_bytes"], _num(_worst(c)), _num(_latency(c)))) if ok else None
    reasons = Counter(r for r in map(failure_reason, cells) if r and r != "refused")
    row = {"model": model.name, "path": str(model.path), "samples": str(model.samples) if model.samples else "random",
           "cells": len(cells), "within_tolerance": len(ok),
           "best": f"{best['route']}-{best['optimization']}" if best else None,
           "tflite_bytes": best["tflite_bytes"] if best else None,
           "size_reduction": (1 - best["size_ratio"]) if best and best.get("size_ratio") is not None else None,
           "worst_error": _worst(best) if best else None, "latency_ms": _latency(best) if best else None,
           "failures": dict(sorted(reasons.items())), "refused": sum(failure_reason(c) == "refused" for c in cells),
           "error": model.error["message"] if model.error else None}
    return row


COLUMNS = ("model", "best", "size_reduction", "worst_error", "latency_ms", "within_tolerance", "cells", "failures")


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "size_reduction":
        return f"{v:.1%}"
    if key == "failures":
        return ", ".join(f"{n} {r}" for r, n in v.items()) or "none"
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def table_rows(rows: list[dict]) -> list[list[str]]:
    out = []
    for r in rows:
        cells = [_fmt(k, r[k]) for k in COLUMNS]
        if r.get("error"):
            cells[1] = "-"
            cells[-1] = r["error"]
        out.append(cells)
    return out


def text_table(rows: list[dict]) -> str:
    header = ["model", "best cell", "smaller", "worst err", "tflite ms", "ok", "cells", "failures"]
    body = table_rows(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) if i < len(header) - 1 else 0 for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    header = ["model", "best cell within tolerance", "size reduction", "worst max abs error", "tflite latency (ms)",
              "cells within tolerance", "cells", "failures by reason"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in b) + " |" for b in table_rows(rows)]
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS + ("error",))
    for r in rows:
        w.writerow([("" if r[k] is None else json.dumps(r[k]) if isinstance(r[k], dict) else r[k]) for k in COLUMNS]
                   + [r.get("error") or ""])
    return buf.getvalue()


def write_tables(rows: list[dict], base: Path) -> list[Path]:
    """``base``.csv and ``base``.md (the HTML report comes with the review issue)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = base.with_suffix(".csv"), base.with_suffix(".md")
    csv_path.write_text(csv_table(rows))
    md_path.write_text(markdown_table(rows))
    return [csv_path, md_path]


def check_report_path(report: str | None) -> None:
    if report and Path(report).suffix.lower() not in (".csv", ".md", ".html"):
        raise TFLiteLabError(f"--report {report}: give a .csv, .md or .html file name.")
