"""``zoo``: the matrix over many models, one summary row per model (zoo.py finds the models and makes the
rows); each model's cells finish and are recorded as in ``matrix``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import TFLiteLabError, UnsupportedCombination
from .base import (EXIT_OK, EXIT_TOLERANCE, _bench, _executor, _executor_args, _finish_cell, _limits, _open_history,
                   _options, _progress, _record_matrix)

# zoo's own words for options it shares with the one-model commands: a folder and a run per model, a summary
_OWN = {
    "--out": {"help": "write DIR/<model>/<route>-<optimization>/ per cell, and zoo.json/.csv/.md"},
    "--json": {"help": "print only the JSON summary on stdout"},
    "--report": {"help": "the summary table as FILE.csv and FILE.md (an .html name: both, next to it)", "metavar": None},
    "--min-top1": {"help": "tolerance on top-1 agreement"},
    "--min-psnr": {"help": "tolerance on PSNR in dB"},
    "--workers": {"help": "local workers, or CPUs of the local Ray instance"},
    "--no-history": {"help": "do not record the models' runs in the run history"},
    "--note": {"help": "a note kept with each model's run in the history"},
}


def add_arguments(z: argparse.ArgumentParser) -> None:
    z.add_argument("models", nargs="+", metavar="PATH", help="a folder of models, a model, or a .txt file listing them")
    _options(z, ("--routes", "--optimizations"))
    z.add_argument("--samples-dir", help="where NAME.samples.* are (default: next to each model)")
    _options(z, ("--num-samples", "--seed", "--out", "--json", "--report", "--max-abs-error", "--min-top1", "--min-psnr",
                 "--min-accuracy-delta", "--threads", "--no-latency", "--time-limit", "--memory-limit", "--workers"), _OWN)
    z.add_argument("--progress", action="store_true", help="progress lines on stderr even when it is not a terminal")
    _options(z, ("--debug", "--no-history", "--note", "--author"), _OWN)
    _executor_args(z)


def cmd_zoo(args) -> int:
    from concurrent.futures import ThreadPoolExecutor
    from .. import orchestrate, zoo
    from ..pipeline import SampleSpec, failed_cell_json, source_json
    from ..sources import source_from_path
    from ..store import Store
    args.task = []
    limits = _limits(args)
    zoo.check_report_path(args.report)
    history = _open_history(args)
    if args.num_samples is not None and args.num_samples < 1:
        raise TFLiteLabError(f"--num-samples must be at least 1, got {args.num_samples}.")
    samples_dir = Path(args.samples_dir) if args.samples_dir else None
    if samples_dir and not samples_dir.is_dir():
        raise TFLiteLabError(f"--samples-dir {samples_dir} is not a folder.")
    paths = zoo.find_models(args.models)
    models = [zoo.ZooModel(n, p, zoo.match_samples(p, samples_dir)) for n, p in zip(zoo.model_names(paths), paths)]
    bench = _bench(args)
    say = _progress(not args.json, force=args.progress)
    for m in models:                    # read in this process: an unreadable file is that model's row
        try:
            m.source = source_json(source_from_path(m.path, limits=limits))
        except TFLiteLabError as e:
            m.error = orchestrate.failure_record(e)
    out = Path(args.out) if args.out else None
    store = Store()
    done, failed = {}, {}
    with _executor(args, max(1, args.workers), limits) as executor:
        say(f"{len(models)} models on {executor.describe()}")

        def prepare(m):
            spec = SampleSpec(path=str(m.samples.resolve()) if m.samples else None, count=args.num_samples, seed=args.seed)
            try:
                m.prepared = orchestrate.prepare(executor, m.source, spec, bench)
            except TFLiteLabError as e:
                m.error = orchestrate.failure_record(e)
            say(f"prepared {m.name}" + (f": {m.error['message']}" if m.error else ""))

        with ThreadPoolExecutor(executor.size) as pool:
            list(pool.map(prepare, [m for m in models if m.error is None]))
        jobs, owner = [], {}
        for m in models:
            if m.prepared is None:
                continue
            runnable, refused = orchestrate.plan_cells(m.source["format"], args.routes, args.optimizations)
            for cid, reason in refused.items():
                r, o = cid.split("-", 1)
                m.cells[cid] = failed_cell_json(r, o, UnsupportedCombination(reason))
            for c in runnable:
                key = f"{m.name}/{c.id}"
                owner[key] = (m, c)
                jobs.append(orchestrate.CellJob(key, c, m.prepared))
        count = orchestrate.Progress(len(owner))

        def finish(key):
            m, c = owner[key]
            outcome = done[key] if key in done else TFLiteLabError.from_dict(failed[key])
            m.cells[c.id] = _finish_cell(args, c.id, c.route, c.optimization, outcome,
                                         out=out / m.name if out else None, judged=m.judged)
            count.finished(key in done)
            say(f"{count.line()}  {key} {'done' if key in done else 'failed: ' + failed[key]['message']}")

        orchestrate.run_cells(executor, jobs, bench, done, failed, on_finish=finish, store=store)
        where, where_info = executor.describe(), {**executor.info(), "jobs": executor.job_stats()}
    for m in models:                    # cells in the order asked for
        order = [orchestrate.cell_id(r, o) for r in args.routes for o in args.optimizations]
        m.cells = {cid: m.cells[cid] for cid in order if cid in m.cells}
    rows = [zoo.summarize(m) for m in models]
    runs = []                           # one matrix run per model, in the same run history as local runs
    for row, m in zip(rows, models):
        if m.prepared is None:
            continue
        run = _record_matrix(args, history, m.cells.items(), m.judged, m.prepared)
        row["run_id"] = run["id"]
        runs.append(run)
    result = {"executor": where, "executor_info": where_info, "models": [{**row, "cells": list(m.cells.values())} for row, m in zip(rows, models)]}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "zoo.json").write_text(json.dumps(result, indent=2))
        zoo.write_tables(rows, out / "zoo")
    if args.report and Path(args.report).suffix.lower() == ".html":
        from ..report_html import write_report
        write_report(runs, args.report)             # every model's matrix run, side by side
        zoo.write_tables(rows, Path(args.report))   # and the summary table next to it
    elif args.report:
        zoo.write_tables(rows, Path(args.report))
    print(json.dumps(result, indent=2) if args.json else zoo.text_table(rows))
    return EXIT_OK if all(r["within_tolerance"] for r in rows) else EXIT_TOLERANCE
