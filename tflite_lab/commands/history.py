"""``history``: the runs recorded in the run history (list with filters, show one, delete one to the trash,
list, restore from or empty the trash).

The CLI acts with the database owner's rights (whoever can write the file is its admin); ``--author``
says who, for the trash's "deleted by"."""
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
    delete = hs.add_parser("delete", help="move a run to the trash (its files stay until the trash is emptied)")
    delete.add_argument("run_id")
    trash = hs.add_parser("trash", help="the runs in the trash; --empty deletes them and the store files no "
                                        "other run uses")
    trash.add_argument("--empty", action="store_true")
    trash.add_argument("--json", action="store_true")
    restore = hs.add_parser("restore", help="bring a run back from the trash")
    restore.add_argument("run_id")
    for p in (h, show, delete, trash, restore):
        p.add_argument("--debug", action="store_true")
    for p in (delete, trash, restore):
        p.add_argument("--author", default=None, help="who does it (default TFLITE_LAB_AUTHOR, else the OS user)")


def _history_filters(h: argparse.ArgumentParser) -> None:
    from ..history import VERDICTS
    h.add_argument("--model", help="only runs of this model file name")
    h.add_argument("--verdict", choices=[v for v in VERDICTS if v in ("pass", "fail")] + ["error"])
    h.add_argument("--recipe", help="only runs whose (headline) recipe is this optimization")
    h.add_argument("--search", help="only runs whose note, reviews or author contain this text")
    h.add_argument("--author", dest="by", help="only runs by this author (email or name; '(before sign-in)': "
                                               "runs recorded without one)")
    h.add_argument("--review", choices=["awaiting review", "approved", "changes requested"],
                   help="only runs in this review state")
    h.add_argument("--limit", type=int, default=20, help="newest N runs (default 20)")
    h.add_argument("--json", action="store_true")


def cmd_history(args) -> int:
    from ..history import History, RunFilter
    from ..people import owner
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
            print(f"author: {_person(run.get('author'))}")
            if run.get("note"):
                print(f"note: {run['note']}")
            for rv in run.get("reviews") or []:
                print(f"review: {rv['verdict']} by {_person(rv['author'])} {_when(rv['created_at'])}"
                      + (f": {rv['text']}" if rv["text"] else ""))
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
            if not h.delete(args.run_id, actor=owner(args.author)):
                raise TFLiteLabError(f"No run '{args.run_id}' in the run history {h.path}.")
            print(f"moved run {args.run_id} to the trash (history restore {args.run_id} brings it back; "
                  "history trash --empty deletes it and its files)")
            return EXIT_OK
        if args.action == "restore":
            if not h.restore(args.run_id, actor=owner(args.author)):
                raise TFLiteLabError(f"No run '{args.run_id}' in the trash of {h.path}.")
            print(f"restored run {args.run_id}")
            return EXIT_OK
        if args.action == "trash":
            if args.empty:
                ids, removed = h.empty_trash(actor=owner(args.author))
                print(f"deleted {len(ids)} run(s) from the trash; removed {len(removed)} store file(s) no other "
                      "run uses")
                return EXIT_OK
            rows = h.runs(RunFilter(trash=True), limit=10_000)
            if args.json:
                print(json.dumps({"total": len(rows), "runs": rows}, indent=2))
                return EXIT_OK
            for r in rows:
                print(f"{r['id']:<10}{_when(r['created_at']):<18}{r['model_name'][:23]:<24}"
                      f"deleted {_when(r['deleted_at'])} by {r['deleted_by']}")
            print(f"{len(rows)} run(s) in the trash ({h.path})")
            return EXIT_OK
        if args.limit < 1:
            raise TFLiteLabError(f"--limit must be at least 1, got {args.limit}.")
        flt = RunFilter(model=args.model, verdict=args.verdict, recipe=args.recipe, search=args.search,
                        author=args.by, review=args.review)
        rows = h.runs(flt, limit=args.limit)
        if args.json:
            print(json.dumps({"total": h.count(flt), "runs": rows}, indent=2))
            return EXIT_OK
        print(f"{'run':<10}{'time':<18}{'kind':<9}{'model':<24}{'cell':<26}{'verdict':<8}{'bytes':>10}"
              f"{'max_abs':>11}  {'author':<20}  note")
        for r in rows:
            cell = f"{r['route'] or ''}-{r['recipe'] or ''}" if r["route"] or r["recipe"] else "-"
            print(f"{r['id']:<10}{_when(r['created_at']):<18}{r['kind']:<9}{r['model_name'][:23]:<24}{cell[:25]:<26}"
                  f"{r['verdict'][:7]:<8}{_fmt(r['tflite_bytes'], ',') if r['tflite_bytes'] else '-':>10}"
                  f"{_fmt(_num(r['summary'].get('max_abs_error'))):>11}  {_person(r['author'])[:20]:<20}"
                  f"  {r['note'][:40]}")
        print(f"{len(rows)} of {h.count(flt)} runs ({h.path})")
    return EXIT_OK


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _person(author: dict | None) -> str:
    if not author:
        return "(before sign-in)"
    return author.get("name") or author.get("email") or author.get("subject") or "?"


def _num(x):
    return None if x is None else float(x)
