"""``matrix``: every route x optimization cell of one model (and aeq's cells), judged, recorded as one run;
the table, or the JSON list of cells."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import TFLiteLabError, UnsupportedCombination
from ..orchestrate import aeq_can_help
from ..types import SourceFormat
from .base import (EXIT_CONVERSION, EXIT_OK, EXIT_TOLERANCE, _announce, _check_tasks, _common, _executor,
                   _executor_args, _finish_cell, _fmt, _limits, _open_history, _options, _progress, _record_matrix,
                   _specs, _target_args, _targets, _tasks, aeq_answer)


def add_arguments(m: argparse.ArgumentParser) -> None:
    _common(m)
    _options(m, ("--routes", "--optimizations", "--workers"))
    m.add_argument("--quantizers", nargs="+", choices=["tf", "aeq"], default=["tf"],
                   help="aeq adds one ai-edge-quantizer cell per optimization (aeq-int8, ...) next to TF's cells")
    _target_args(m)
    _executor_args(m)


def cmd_matrix(args) -> int:
    from .. import metrics, orchestrate
    from ..store import Store
    from ..pipeline import failed_cell_json, source_json
    from ..sources import source_from_path
    limits = _limits(args)
    history = _open_history(args)
    src = source_from_path(args.model, limits=limits)
    if src.format is SourceFormat.TFLITE:
        raise UnsupportedCombination(f"{src.filename} is already a .tflite; the matrix converts originals.")
    samples, bench = _specs(args)
    _tasks(args)
    targets = _targets(args)
    runnable, refused = orchestrate.plan_cells(src.format, args.routes, args.optimizations)
    progress = _progress(not args.json)
    workers = max(1, min(args.workers, len(runnable) or 1))
    done, failed, results = {}, {}, {}
    out = Path(args.out) if args.out else None
    with _executor(args, workers, limits, prestart=workers) as executor:
        prepared = orchestrate.prepare(executor, source_json(src), samples, bench, progress)
        _check_tasks(args, prepared)
        jobs = [orchestrate.CellJob(c.id, orchestrate.Cell(c.route, c.optimization, args.int8_io), prepared, targets)
                for c in runnable]
        cells = {j.key: j.cell for j in jobs}
        seen: dict[str, str] = {}
        lines = {}

        def render(states):      # one progress line per cell and stage, as each cell moves on
            for key, (step, _) in states.items():
                if step != "queued" and seen.get(key) != step:
                    seen[key] = step
                    lines.setdefault(key, _progress(not args.json, f"{key}: "))(step)

        def finish(key):
            c = cells[key]
            outcome = done[key] if key in done else TFLiteLabError.from_dict(failed[key])
            results[key] = _finish_cell(args, key, c.route, c.optimization, outcome, out=out, judged=judged)

        judged: dict[str, dict] = {}
        orchestrate.run_cells(executor, jobs, bench, done, failed, render, finish,
                              store=Store())
        aeq = {}
        if "aeq" in args.quantizers:        # recipe x quantizer: aeq quantizes the float .tflite
            for o in [o for o in args.optimizations if o != "none"]:
                key = f"aeq-{o}"
                try:
                    rep = executor.run("selective", progress=_progress(not args.json, f"{key}: "), prepared=prepared,
                                       optimization=o, quantizer="aeq", int8_io=args.int8_io, bench=bench)
                    aeq[o] = _finish_cell(args, key, "aeq", o, rep, out=out, judged=judged)
                except TFLiteLabError as e:
                    aeq[o] = {**_finish_cell(args, key, "aeq", o, e, out=out, judged=judged), "cell": key,
                              "quantizer": "aeq"}
        # Where TF's calibration fails in a way aeq can fix, say whether it does even when no aeq cells
        # were asked for: one probe per recipe, shown on the failing cells, not added as cells.
        probes = {}
        for o in {c.optimization for k, c in cells.items() if k in failed and aeq_can_help(failed[k], c.optimization)}:
            if o not in aeq:
                probes[o] = aeq_answer(args, executor.run, prepared, type(bench)(enabled=False), o)
    ordered = []
    for r in args.routes:
        for o in args.optimizations:
            key = orchestrate.cell_id(r, o)
            rep = results[key] if key in results else failed_cell_json(r, o, UnsupportedCombination(refused[key]))
            if o in aeq and rep.get("error") and rep.get("error_kind") != "UnsupportedCombination":
                a = aeq[o]       # where TF fails, say whether ai-edge-quantizer succeeds
                rep = {**rep, "aeq": ("ai-edge-quantizer succeeds: " + ("within tolerance" if a["ok"] else "out of tolerance")
                                      if not a.get("error") else f"ai-edge-quantizer fails too: {a['error']}")}
            elif o in probes and key in failed and aeq_can_help(failed[key], o):
                rep = {**rep, "aeq": probes[o]}
            ordered.append(rep)
    ordered += [aeq[o] for o in args.optimizations if o in aeq]
    cell_keys = [orchestrate.cell_id(r, o) for r in args.routes for o in args.optimizations] + [f"aeq-{o}" for o in aeq]
    run = _record_matrix(args, history, zip(cell_keys, ordered), judged, prepared)
    _announce(args, run)
    ordered = [{**r, "run_id": run["id"]} for r in ordered]
    if args.json:
        print(json.dumps(ordered, indent=2))
    else:
        from ..activity import timing_note as timing
        names = list(targets or {})
        print(f"{'cell':<28}{'status':<8}{'bytes':>10}{'max_abs':>11}{'top1':>7}{'acc/mae':>9}{'tflite ms':>11}"
              + "".join(f"  {n:<20}" for n in names) + "  note")
        for rep in ordered:
            name = rep.get("cell") or f"{rep['route']}-{rep['optimization']}"
            m = rep["outputs"]
            worst = metrics.worst(o["max_abs_error"] for o in m)          # NaN anywhere stays NaN
            top1 = metrics.headline_top1(m)
            lat = (rep["latency_ms"].get("tflite") or {}).get("median")
            status = "PASS" if rep["ok"] else ("FAIL" if not rep.get("error") else "REFUSED" if rep.get("error_kind") == "UnsupportedCombination" else "ERROR")
            note = rep.get("error") or "; ".join(rep.get("failures", []))
            note += f" [{rep['aeq']}]" if rep.get("aeq") else ""
            if lat is not None and timing(rep.get("latency_conditions")):
                note += f" [latency {timing(rep.get('latency_conditions'))}]"
            print(f"{name:<28}{status:<8}{_fmt(rep['tflite_bytes'], ',') if rep['tflite_bytes'] else '-':>10}"
                  f"{_fmt(worst):>11}{_fmt(top1, '.3f'):>7}{_fmt((rep.get('accuracy') or {}).get('tflite'), '.4g'):>9}"
                  f"{_fmt(lat, '.3f'):>11}" + "".join(f"  {_target_cell(rep, n):<20}" for n in names) + f"  {note}")
    ran = [r for r in ordered if "error" not in r or r.get("error_kind") != "UnsupportedCombination"]
    if ran and all(r.get("error") for r in ran):
        return EXIT_CONVERSION
    return EXIT_OK if all(r["ok"] for r in ran) else EXIT_TOLERANCE


def _target_cell(rep: dict, name: str) -> str:
    """A matrix column: the target's verdict, with the arena or the latency where it ran."""
    t = (rep.get("targets") or {}).get(name)
    if not t:
        return "-"
    extra = f" {t['arena_bytes'] / 1024:,.1f} KB arena" if t.get("arena_bytes") else ""
    if (t.get("latency_ms") or {}).get("median") is not None:
        extra = f" {t['latency_ms']['median']:.3g} ms"
    return f"{str(t.get('verdict') or '-').upper()}{extra}"
