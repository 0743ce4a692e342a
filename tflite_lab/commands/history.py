"""``history``: the runs recorded in the run history (list with filters, show one, delete one)."""
from __future__ import annotations

import argparse
import json
import time

from ..errors import TFLiteLabError
from .base import EXIT_OK, VERDICTS, _fmt, _Parser, _table


def add_arguments(h: argparse.ArgumentParser) -> None:
    _history_filters(h)
    hs = h.add_subparsers(dest="action", parser_class=_Parser)
    show = hs.add_parser("show", help="one run in full")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    delete = hs.add_parser("delete", help="delete a run and the store files no other run uses")
    delete.add_argument("run_id")
    for p in (h, show, delete):
        p.add_argument("--debug", action="store_true")


def _history_filters(h: argparse.ArgumentParser) -> None:
    from ..history import VERDICTS
    h.add_argument("--model", help="only runs of this model file name")
    h.add_argument("--verdict", choices=[v for v in VERDICTS if v in ("pass", "fail")] + ["error"])
    h.add_argument("--recipe", help="only runs whose (headline) recipe is this optimization")
    h.add_argument("--search", help="only runs whose note or reviewer tag contains this text")
    h.add_argument("--limit", type=int, default=20, help="newest N runs (default 20)")
    h.add_argument("--json", action="store_true")


def cmd_history(args) -> int:
    from ..history import History, RunFilter
    with History() as h:
        if args.action == "show":
            run = h.get(args.run_id)
            if run is None:
                raise TFLiteLabError(f"No run '{args.run_id}' in the run history {h.path}.")
            if args.json:
                print(json.dumps(run, indent=2))
                return EXIT_OK
            print(f"run {run['id']}  {_when(run['created_at'])}  {run['kind']} ({run['origin']})  "
                  f"{VERDICTS.get(run['verdict'], run['verdict'])}")
            print(f"model: {run['model']['filename']} sha256 {run['model']['sha256']}")
            print(f"samples: {run['samples']['description']} ({run['samples']['count']}) sha256 {run['samples']['sha256']}")
            print("versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()) + f"; CPU: {run['host_cpu']}")
            if run.get("note") or run.get("reviewer"):
                print(f"note: {run.get('note', '')}" + (f"  [reviewer: {run['reviewer']}]" if run.get("reviewer") else ""))
            from ..pipeline import report_json
            for rep in run["reports"]:
                print(_table(report_json(rep)))
            for cell, f in (run.get("failed_cells") or {}).items():
                print(f"{cell}: {f['kind']}: {f['message']}")
            for kind, paths in sorted(run["artifacts"].items()):
                for p in paths:
                    print(f"  {kind}: {p}")
            return EXIT_OK
        if args.action == "delete":
            removed = h.delete(args.run_id)
            if removed is None:
                raise TFLiteLabError(f"No run '{args.run_id}' in the run history {h.path}.")
            print(f"deleted run {args.run_id}; removed {len(removed)} store file(s) no other run uses")
            return EXIT_OK
        if args.limit < 1:
            raise TFLiteLabError(f"--limit must be at least 1, got {args.limit}.")
        flt = RunFilter(model=args.model, verdict=args.verdict, recipe=args.recipe, search=args.search)
        rows = h.runs(flt, limit=args.limit)
        if args.json:
            print(json.dumps({"total": h.count(flt), "runs": rows}, indent=2))
            return EXIT_OK
        print(f"{'run':<10}{'time':<18}{'kind':<9}{'model':<24}{'cell':<26}{'verdict':<8}{'bytes':>10}"
              f"{'max_abs':>11}  note")
        for r in rows:
            cell = f"{r['route'] or ''}-{r['recipe'] or ''}" if r["route"] or r["recipe"] else "-"
            print(f"{r['id']:<10}{_when(r['created_at']):<18}{r['kind']:<9}{r['model_name'][:23]:<24}{cell[:25]:<26}"
                  f"{r['verdict'][:7]:<8}{_fmt(r['tflite_bytes'], ',') if r['tflite_bytes'] else '-':>10}"
                  f"{_fmt(_num(r['summary'].get('max_abs_error'))):>11}  {r['note'][:40]}")
        print(f"{len(rows)} of {h.count(flt)} runs ({h.path})")
    return EXIT_OK


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _num(x):
    return None if x is None else float(x)
