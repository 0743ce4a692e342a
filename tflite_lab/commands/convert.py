"""``convert``: one route x optimization (or a given .tflite against its original), judged, recorded;
answered from the store when this very request ran before."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConversionError, SourceError, UnsupportedCombination, WorkerError
from ..routes import refusal
from ..types import Optimization, Route, SourceFormat
from .base import (EXIT_OK, EXIT_TOLERANCE, _check_tasks, _common, _limits, _open_history, _progress, _recorded,
                   _specs, _table, _target_args, _targets, _tasks, _tolerances, _with_aeq_answer, _write_out)


def add_arguments(c: argparse.ArgumentParser) -> None:
    _common(c)
    c.add_argument("--route", choices=[r.value for r in Route], default=Route.SAVED_MODEL.value)
    c.add_argument("--optimize", choices=[o.value for o in Optimization], default=Optimization.NONE.value)
    c.add_argument("--reference", help="for a .tflite MODEL: the original model to compare it against")
    c.add_argument("--keep-float", action="append", default=[], metavar="TENSOR",
                   help="keep the op writing this output tensor in float (names as `debug` lists them); repeatable")
    c.add_argument("--keep-float-ops", nargs="+", default=[], metavar="OP",
                   help="keep every op of these types in float, e.g. FULLY_CONNECTED")
    c.add_argument("--quantizer", choices=["tf", "aeq"], default="tf",
                   help="tf: TensorFlow's converter; aeq: ai-edge-quantizer on the float .tflite")
    _target_args(c)


def cmd_convert(args) -> int:
    from ..worker import WorkerPool
    limits = _limits(args)
    history = _open_history(args)
    stored = _stored_convert(args, limits)
    if stored is not None:                   # every answer is in the store: no worker, no TensorFlow
        return _finish_convert(args, *stored, history)
    # The worker imports TensorFlow (~3 s) while this process checks the input.
    with WorkerPool(1, limits, prestart=1) as pool:
        return _convert(args, limits, pool, history)


def _plain_cell(args) -> bool:
    """A route x recipe cell of the original, nothing more (what the cell-report store holds)."""
    return not (args.keep_float or args.keep_float_ops or args.quantizer != "tf" or args.target or args.reference)


def _stored_convert(args, limits):
    """(prepared, cell report) of an earlier run of this very request — same model bytes, samples,
    cell, latency settings and code — while its files are in the store; else None."""
    if not _plain_cell(args):
        return None
    from ..orchestrate import Cell, stored_cell
    from ..pipeline import source_json, stored_prepared
    from ..sources import source_from_path
    from ..store import Store
    src = source_from_path(args.model, limits=limits)
    if src.format is SourceFormat.TFLITE or refusal(args.route, args.optimize, src.format):
        return None
    samples, bench = _specs(args)
    _tasks(args)
    prepared = stored_prepared(source_json(src), samples, bench)
    if prepared is None:
        return None
    report = stored_cell(Store(), prepared, Cell(args.route, args.optimize, bool(args.int8_io and args.optimize == "int8")),
                         bench)
    if report is None:
        return None
    _check_tasks(args, prepared)
    _progress(not args.json)("from the store")
    return prepared, report


def _convert(args, limits, pool, history=None) -> int:
    from ..pipeline import source_json
    from ..sources import source_from_path
    src = source_from_path(args.model, limits=limits)
    samples, bench = _specs(args)
    _tasks(args)
    targets = _targets(args)
    if targets and (args.keep_float or args.keep_float_ops or args.quantizer != "tf"):
        raise UnsupportedCombination("--target runs on plain cells and given .tflite files for now, not with "
                                     "--keep-float/--keep-float-ops/--quantizer aeq.")
    reference = None
    if src.format is SourceFormat.TFLITE:
        # Without --reference a .tflite is run and benchmarked against nothing but itself.
        reference = source_from_path(args.reference, limits=limits) if args.reference else src
        if args.reference and reference.format is SourceFormat.TFLITE:
            raise SourceError("--reference must be the original model (.keras, .h5 or SavedModel), not a .tflite.")
    else:
        reason = refusal(args.route, args.optimize, src.format)
        if reason:
            raise UnsupportedCombination(reason)
    progress = _progress(not args.json)
    # The keras route never reads the SavedModel export: do not make one it will not use.
    prepared = pool.run("prepare", progress=progress, source=source_json(reference or src),
                        spec=samples, bench=bench, export=args.route != "keras" or reference is not None)
    _check_tasks(args, prepared)
    try:
        if reference is not None:
            report = pool.run("provided", progress=progress, prepared=prepared, tflite_source=source_json(src),
                              bench=bench, targets=targets)
        elif args.keep_float or args.keep_float_ops or args.quantizer != "tf":
            if args.quantizer == "tf" and args.route != "saved_model":
                raise UnsupportedCombination("Keeping layers in float goes through TensorFlow's QuantizationDebugger "
                                             "on the SavedModel export; use --route saved_model.")
            report = pool.run("selective", progress=progress, prepared=prepared, keep_float=args.keep_float,
                              keep_float_ops=args.keep_float_ops, optimization=args.optimize,
                              quantizer=args.quantizer, int8_io=args.int8_io, bench=bench)
        else:
            report = pool.run("cell", progress=progress, prepared=prepared, route=args.route,
                              optimization=args.optimize, int8_io=args.int8_io, bench=bench, targets=targets)
    except (ConversionError, WorkerError) as e:
        if reference is None and args.quantizer == "tf" and isinstance(e, ConversionError):
            e = _with_aeq_answer(e, args, pool, prepared, bench)
        # A failed conversion is a run too: the history says what was tried and why it failed.
        cell = f"{args.route}-{args.optimize}" if reference is None else "provided"
        _recorded(args, history, "convert", [], prepared,
                  failed={cell: {"message": e.user_message, "kind": type(e).__name__}})
        raise e from None
    if _plain_cell(args):            # the next identical convert (or matrix cell) is answered from the store
        from ..orchestrate import Cell, store_cell
        from ..store import Store
        store_cell(Store(), prepared, Cell(args.route, args.optimize, bool(report.get("int8_io"))), bench, report)
    return _finish_convert(args, prepared, report, history)


def _finish_convert(args, prepared: dict, report: dict, history) -> int:
    """Judge with this request's tolerances, record, write --out, print; the exit code."""
    from ..pipeline import judge_report, report_json
    report = judge_report(report, _tolerances(args, report["optimization"]))
    run_id, _ = _recorded(args, history, "convert", [report], prepared)
    public = {**report_json(report), "run_id": run_id}
    if args.out:
        _write_out(Path(args.out), report, public)
    print(json.dumps(public, indent=2) if args.json else _table(public))
    return EXIT_OK if public["ok"] else EXIT_TOLERANCE
