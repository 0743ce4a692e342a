"""Command line: ``python -m tflite_lab convert|matrix|inspect`` (the contract is in the README).

Exit codes: 0 within tolerance, 1 a tolerance failed, 2 bad input, 3 the conversion failed.
This process never imports TensorFlow: the work runs in worker processes (worker.py), which also
keeps stdout clean for ``--json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .config import Limits
from .errors import ConversionError, SourceError, TFLiteLabError, UnsupportedCombination, WorkerError
from .orchestrate import AEQ_CAN_HELP, aeq_can_help
from .routes import refusal
from .types import Optimization, Route, SourceFormat, Tolerances

EXIT_OK, EXIT_TOLERANCE, EXIT_BAD_INPUT, EXIT_CONVERSION = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: scripts parse stderr
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=".keras, .h5, SavedModel folder or .zip, or .tflite")
    p.add_argument("--samples", help=".npy, .npz (keyed by input name), .csv, an image, a folder or zip of images")
    p.add_argument("--num-samples", type=int, default=None, help="random samples to draw (default 64), or cap on file samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--low", type=float, default=None,
                   help="random samples: lower bound (default: from the model where it declares a range, e.g. an "
                        "Embedding's vocabulary; else 0)")
    p.add_argument("--high", type=float, default=None,
                   help="random samples: upper bound (default: from the model where it declares a range; else 1)")
    p.add_argument("--length", action="append", default=[], metavar="NAME=N",
                   help="random samples: length N of input NAME's dynamic dims (N alone: every input); default "
                        "the model's maximum where it has one, else 32")
    p.add_argument("--out", help="write model.tflite, samples.npz and report.json here")
    p.add_argument("--json", action="store_true", help="print only the JSON report on stdout")
    p.add_argument("--max-abs-error", type=float, help="tolerance on max abs error (any recipe)")
    p.add_argument("--min-top1", type=float, help="tolerance on top-1 agreement (set here: every (samples, classes) output)")
    p.add_argument("--min-psnr", type=float, help="tolerance on PSNR in dB (set here: every output)")
    p.add_argument("--labels", help="labels, one per sample (.npy or .csv): reports task accuracy (or MAE)")
    p.add_argument("--labels-key", default="labels",
                   help="the .npz key or CSV column of --samples that holds labels (default: labels)")
    p.add_argument("--min-accuracy-delta", type=float,
                   help="tolerance on tflite accuracy - original accuracy on the labels, e.g. -0.01 "
                        "(for MAE: relative growth, -0.05 = at most 5%% worse)")
    p.add_argument("--task", action="append", default=[], metavar="OUTPUT=TASK",
                   help="judge OUTPUT as 'classification' (top-1) or 'regression' (PSNR) instead of the task "
                        "detected from its values; repeatable")
    p.add_argument("--int8-io", action="store_true", help="int8: integer model inputs/outputs (default float)")
    p.add_argument("--threads", type=int, default=None, help="threads for both TensorFlow (intra/inter-op) and LiteRT when timing; default: every core")
    p.add_argument("--no-latency", action="store_true", help="skip the latency benchmark")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per worker job")
    p.add_argument("--memory-limit", type=float, default=None, help="MB per worker")
    p.add_argument("--debug", action="store_true", help="show tracebacks and details")
    p.add_argument("--no-history", action="store_true", help="do not record this run in the run history")
    p.add_argument("--note", default="", help="a note kept with the run in the history")
    p.add_argument("--report", metavar="FILE", help="also write a self-contained HTML report of the run to FILE")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tflite_lab", description="Convert Keras/TensorFlow models to TFLite and prove the conversion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("convert", help="convert one route x optimization and compare")
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
    d = sub.add_parser("debug", help="per-layer quantization error, suggested float layers and the keep-float sweep")
    _common(d)
    d.add_argument("--optimize", choices=[o.value for o in Optimization if o is not Optimization.NONE],
                   default=Optimization.INT8.value)
    d.add_argument("--quantizer", choices=["tf", "aeq"], default="tf")
    d.add_argument("--sweep-steps", type=int, default=5, help="at most this many sweep steps (k = 0, 1, 2, 4, 8 ...)")
    d.add_argument("--sweep-all", action="store_true", help="run every sweep step, not only until the tolerance holds")
    m = sub.add_parser("matrix", help="every route x optimization cell")
    _common(m)
    m.add_argument("--routes", nargs="+", choices=[r.value for r in Route], default=[r.value for r in Route])
    m.add_argument("--optimizations", nargs="+", choices=[o.value for o in Optimization],
                   default=[o.value for o in Optimization])
    m.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    m.add_argument("--quantizers", nargs="+", choices=["tf", "aeq"], default=["tf"],
                   help="aeq adds one ai-edge-quantizer cell per optimization (aeq-int8, ...) next to TF's cells")
    _target_args(m)
    _executor_args(m)
    z = sub.add_parser("zoo", help="the matrix over many models: one summary row per model")
    z.add_argument("models", nargs="+", metavar="PATH", help="a folder of models, a model, or a .txt file listing them")
    z.add_argument("--routes", nargs="+", choices=[r.value for r in Route], default=[r.value for r in Route])
    z.add_argument("--optimizations", nargs="+", choices=[o.value for o in Optimization],
                   default=[o.value for o in Optimization])
    z.add_argument("--samples-dir", help="where NAME.samples.* are (default: next to each model)")
    z.add_argument("--num-samples", type=int, default=None, help="random samples to draw (default 64), or cap on file samples")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--out", help="write DIR/<model>/<route>-<optimization>/ per cell, and zoo.json/.csv/.md")
    z.add_argument("--json", action="store_true", help="print only the JSON summary on stdout")
    z.add_argument("--report", help="the summary table as FILE.csv and FILE.md (an .html name: both, next to it)")
    z.add_argument("--max-abs-error", type=float, help="tolerance on max abs error (any recipe)")
    z.add_argument("--min-top1", type=float, help="tolerance on top-1 agreement")
    z.add_argument("--min-psnr", type=float, help="tolerance on PSNR in dB")
    z.add_argument("--min-accuracy-delta", type=float,
                   help="tolerance on tflite accuracy - original accuracy on the labels, e.g. -0.01 "
                        "(for MAE: relative growth, -0.05 = at most 5%% worse)")
    z.add_argument("--threads", type=int, default=None, help="threads for both TensorFlow (intra/inter-op) and LiteRT when timing; default: every core")
    z.add_argument("--no-latency", action="store_true", help="skip the latency benchmark")
    z.add_argument("--time-limit", type=float, default=None, help="seconds per worker job")
    z.add_argument("--memory-limit", type=float, default=None, help="MB per worker")
    z.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="local workers, or CPUs of the local Ray instance")
    z.add_argument("--progress", action="store_true", help="progress lines on stderr even when it is not a terminal")
    z.add_argument("--debug", action="store_true", help="show tracebacks and details")
    z.add_argument("--no-history", action="store_true", help="do not record the models' runs in the run history")
    z.add_argument("--note", default="", help="a note kept with each model's run in the history")
    _executor_args(z)
    i = sub.add_parser("inspect", help="signature, operators, tensors and deployment findings")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--analyzer", action="store_true", help="also print TensorFlow's Analyzer report (.tflite)")
    i.add_argument("--debug", action="store_true")
    h = sub.add_parser("history", help="runs recorded in the run history (list, show, delete)")
    _history_filters(h)
    hs = h.add_subparsers(dest="action", parser_class=_Parser)
    show = hs.add_parser("show", help="one run in full")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    delete = hs.add_parser("delete", help="delete a run and the store files no other run uses")
    delete.add_argument("run_id")
    for p in (h, show, delete):
        p.add_argument("--debug", action="store_true")
    r = sub.add_parser("report", help="a self-contained HTML report of one run, or several side by side")
    r.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    r.add_argument("--out", required=True, help="the .html file to write")
    r.add_argument("--debug", action="store_true")
    return parser


def _history_filters(h: argparse.ArgumentParser) -> None:
    from .history import VERDICTS
    h.add_argument("--model", help="only runs of this model file name")
    h.add_argument("--verdict", choices=[v for v in VERDICTS if v in ("pass", "fail")] + ["error"])
    h.add_argument("--recipe", help="only runs whose (headline) recipe is this optimization")
    h.add_argument("--search", help="only runs whose note or reviewer tag contains this text")
    h.add_argument("--limit", type=int, default=20, help="newest N runs (default 20)")
    h.add_argument("--json", action="store_true")


def _executor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where jobs run (default TFLITE_LAB_EXECUTOR, else local)")
    p.add_argument("--ray-address", default=None,
                   help="HOST:PORT of a Ray cluster to join (default RAY_ADDRESS; without: a local Ray instance)")


def _progress(enabled: bool, label: str = "", force: bool = False):
    """Progress lines for a person at a terminal (``force``: wherever stderr goes); scripts get a
    clean stderr (just the error line)."""
    enabled = force or (enabled and sys.stderr.isatty())
    t0 = time.monotonic()
    last = [None]
    def report(step, _elapsed=None):
        if enabled and step != last[0]:          # a long step is re-sent every TICK_S: one line each
            last[0] = step
            print(f"[{time.monotonic() - t0:6.1f}s] {label}{step}", file=sys.stderr, flush=True)
    return report


def _limits(args) -> Limits:
    from dataclasses import replace
    lim = Limits.from_env()
    if getattr(args, "time_limit", None):
        lim = replace(lim, job_time_s=args.time_limit)
    if getattr(args, "memory_limit", None):
        lim = replace(lim, job_memory_mb=args.memory_limit)
    return lim


def _specs(args):
    from .pipeline import BenchSpec, SampleSpec
    if args.samples and not Path(args.samples).exists():
        raise TFLiteLabError(f"Samples path {args.samples} does not exist.")
    if args.labels and not Path(args.labels).is_file():
        raise TFLiteLabError(f"Labels file {args.labels} does not exist.")
    from .samples import parse_lengths
    samples = SampleSpec(path=str(Path(args.samples).resolve()) if args.samples else None,
                         count=args.num_samples, seed=args.seed, low=args.low, high=args.high,
                         lengths=parse_lengths(args.length),
                         labels=str(Path(args.labels).resolve()) if args.labels else None,
                         labels_key=args.labels_key)
    if args.num_samples is not None and args.num_samples < 1:
        raise TFLiteLabError(f"--num-samples must be at least 1, got {args.num_samples}.")
    return samples, _bench(args)


def _bench(args):
    from .pipeline import BenchSpec
    if args.threads is not None:
        if args.threads < 1:
            raise TFLiteLabError(f"--threads must be at least 1, got {args.threads}.")
        # Workers started from here configure TensorFlow with it before it runs anything.
        os.environ["TFLITE_LAB_THREADS"] = str(args.threads)
    return BenchSpec(enabled=not args.no_latency, threads=args.threads)


def _tasks(args) -> dict[str, str]:
    from .types import Task
    tasks = {}
    for item in args.task or []:
        name, sep, task = item.rpartition("=")
        if not sep or not name or task not in {t.value for t in Task}:
            raise TFLiteLabError(f"--task takes OUTPUT=classification or OUTPUT=regression, got '{item}'.")
        tasks[name] = task
    return tasks


def _check_tasks(args, prepared: dict) -> None:
    """--task names must be outputs of the model: an unknown name is refused, never ignored."""
    names = [t["name"] for t in prepared["signature"]["outputs"]]
    unknown = sorted(set(_tasks(args)) - set(names))
    if unknown:
        raise TFLiteLabError(f"--task names output(s) {', '.join(unknown)}, but the model's outputs are "
                             f"{', '.join(names)}.")


def _tolerances(args, optimization) -> Tolerances:
    opt = Optimization.NONE if optimization == "provided" else Optimization(optimization)
    return Tolerances.for_optimization(opt).override(
        max_abs_error=args.max_abs_error, min_top1=args.min_top1, min_psnr_db=args.min_psnr,
        min_accuracy_delta=args.min_accuracy_delta, tasks=_tasks(args))


def _write_out(out: Path, report: dict, public: dict) -> None:
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report["tflite_path"], out / "model.tflite")
    shutil.copyfile(report["samples_path"], out / "samples.npz")
    (out / "report.json").write_text(json.dumps(public, indent=2))
    labels = report.get("labels_path")
    if labels:
        shutil.copyfile(labels, out / "labels.npy")
    if report.get("converter_log"):
        (out / "converter.log").write_text(report["converter_log"])
    bundle = ((report.get("targets") or {}).get("micro") or {}).get("bundle_dir")
    if bundle and Path(bundle).is_dir():          # the micro target's C++ bundle
        shutil.copytree(bundle, out / "micro", dirs_exist_ok=True)


def _fmt(x, spec=".3g"):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return format(x, spec) if math.isfinite(x) else str(x)


VERDICTS = {"pass": "PASS", "fail": "FAIL", "ran, no reference": "RAN, NO REFERENCE (nothing compared)",
            "error": "ERROR"}


def _table(public: dict) -> str:
    label = public.get("cell") or (f"{public['route']}-{public['optimization']}" if public["route"] else "given .tflite")
    from .pipeline import samples_phrase, verdict_text
    lines = [f"{label}: {verdict_text(public, VERDICTS)}  "
             f"{public['original_bytes']:,} -> {public['tflite_bytes']:,} bytes ({_fmt(public['size_ratio'], '.1%')} of original)"
             + ("" if samples_phrase(public) else f"  {public['num_samples']} samples")]
    if public.get("cached"):
        lines.append(f"cached: converted {public.get('cached_at') or 'in an earlier run'} (from the store; its "
                     "conversion time is from that run)")
    lat = public["latency_ms"]
    if lat.get("tflite"):
        orig = lat.get("original") or {}
        lines.append(f"latency (batch 1, median/p90 ms): original {_fmt(orig.get('median'))}/{_fmt(orig.get('p90'))}, "
                     f"tflite {_fmt(lat['tflite']['median'])}/{_fmt(lat['tflite']['p90'])}")
        cond = public.get("latency_conditions")
        if cond:
            from .activity import timing_note
            busy = timing_note(cond)          # another session's job ran while timing: said first
            if busy:
                lines.append(f"  warning: {busy}")
            lines.append(f"  timed {'' if busy else 'alone '}after the conversions: {cond['threads']} threads each (TF intra/inter-op "
                         f"{cond['tf_intra_op_threads']}/{cond['tf_inter_op_threads']}, LiteRT {cond['litert_num_threads']}), "
                         f"{cond['cpu_count']} CPUs, {cond['warmup']} warm-up + up to {cond['runs']} runs; original as a "
                         "TF concrete function on batch 1")
    if not public["outputs"]:
        lines.append(f"{'output':<16}{'shape':<16}{'min':>11}{'max':>11}{'mean':>11}{'NaN/inf':>9}")
        for o in public.get("output_stats", []):
            shape = "(" + ", ".join(map(str, o["shape"])) + ")"
            lines.append(f"{o['name'][:15]:<16}{shape[:15]:<16}{_fmt(o['min']):>11}{_fmt(o['max']):>11}"
                         f"{_fmt(o['mean']):>11}{o['nonfinite']:>9}")
    else:
        lines.append(f"{'output':<16}{'task':<8}{'max_abs':>11}{'mean_abs':>11}{'rmse':>11}{'cosine':>10}"
                     f"{'psnr_db':>9}{'top1':>7}  checks")
        for o in public["outputs"]:
            checks = ", ".join(f"{_CHECK[c['metric']]}{_fmt(c['bound'])} {'ok' if c['ok'] else 'FAIL'}"
                               for c in o.get("checks", [])) or "none"
            lines.append(f"{o['name'][:15]:<16}{o.get('task', '')[:7]:<8}{_fmt(o['max_abs_error']):>11}"
                         f"{_fmt(o['mean_abs_error']):>11}{_fmt(o['rmse']):>11}{_fmt(o['cosine'], '.6f'):>10}"
                         f"{_fmt(o['psnr_db'], '.1f'):>9}{_fmt(o['top1_agreement'], '.3f'):>7}  {checks}")
    if public.get("accuracy"):
        lines.append(accuracy_line(public["accuracy"]))
    lines += _target_lines(public)
    if public.get("float_ops"):
        cost = public.get("float_cost_bytes")
        lines.append(f"float ops ({len(public['float_ops'])}"
                     + (f", +{cost:,} bytes over all-quantized" if cost is not None else "") + "): "
                     + ", ".join(f"{o['op']} {o['tensor']}" for o in public["float_ops"]))
    for f in public.get("failures", []):
        lines.append(f"  fail: {f}")
    for n in public.get("matching", []):
        lines.append(f"  matched: {n}")
    for w in public.get("warnings", []):
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def accuracy_line(acc: dict) -> str:
    """One line: the task metric on the labels for the original and the .tflite, and the check."""
    chk = acc.get("check")
    tail = f"  delta>={_fmt(chk['bound'])} {'ok' if chk['ok'] else 'FAIL'}" if chk else ""
    return (f"{acc['metric']} on {acc['num_labels']} labels ({acc['output']}): original {_fmt(acc['original'], '.4g')}, "
            f"tflite {_fmt(acc['tflite'], '.4g')}, delta {_fmt(acc['delta'], '+.4g')}{tail}")


_CHECK = {"max_abs_error": "max_abs<=", "min_top1": "top1>=", "min_psnr_db": "psnr>=", "finite": "finite "}


def _open_history(args):
    """The run history, opened before any work: a database it cannot read stops the run up front."""
    if args.no_history:
        return None
    from .history import History
    return History()


def _recorded(args, history, kind: str, reports: list[dict], prepared: dict, **kw) -> tuple[str | None, dict]:
    """Record the run (unless --no-history), say its id on a terminal, write --report; (run_id, run)."""
    from .history import build_run
    run = build_run(kind, reports, prepared, origin="cli", note=args.note, **kw)
    run_id = history.record(run) if history is not None else None
    if run_id:
        run["id"] = run_id
        if sys.stderr.isatty():
            print(f"run {run_id} recorded (python -m tflite_lab history show {run_id})", file=sys.stderr)
    if args.report:
        from .report_html import write_report
        path, size = write_report([run], args.report)
        if sys.stderr.isatty():
            print(f"report written to {path} ({size / 1e6:.1f} MB)", file=sys.stderr)
    return run_id, run


def cmd_convert(args) -> int:
    from .worker import WorkerPool
    limits = _limits(args)
    history = _open_history(args)
    # The worker imports TensorFlow (~3 s) while this process checks the input.
    with WorkerPool(1, limits, prestart=1) as pool:
        return _convert(args, limits, pool, history)


def _target_args(p: argparse.ArgumentParser) -> None:
    from .targets import target_names
    p.add_argument("--target", action="append", default=[], choices=target_names(),
                   help="also run the .tflite where it will run and judge it there (micro: TensorFlow Lite Micro's "
                        "kernels); repeatable")
    p.add_argument("--board", help="--target micro: the board it must fit (RAM and flash from its datasheet)")
    p.add_argument("--ram-kb", type=float, help="--target micro: a custom board's RAM in KB (with --flash-kb)")
    p.add_argument("--flash-kb", type=float, help="--target micro: a custom board's flash in KB (with --ram-kb)")


def _targets(args) -> dict | None:
    """``{name: options}`` from --target/--board/--ram-kb/--flash-kb, refused before any work."""
    from .targets import check_targets
    board = {k: v for k, v in (("board", args.board), ("ram_kb", args.ram_kb), ("flash_kb", args.flash_kb))
             if v is not None}
    if board and "micro" not in args.target:
        raise UnsupportedCombination("--board, --ram-kb and --flash-kb go with --target micro.")
    requested = {name: (board if name == "micro" else {}) for name in dict.fromkeys(args.target)}
    check_targets(requested)
    return requested or None


def _target_lines(public: dict) -> list[str]:
    """One block per deployment target: verdict, why it does not run, arena/flash, vs LiteRT."""
    lines = []
    for name, t in (public.get("targets") or {}).items():
        head = f"target {name}: {str(t.get('verdict') or '-').upper()}"
        if t.get("arena_bytes") is not None:
            head += f"  arena {t['arena_bytes']:,} bytes (recorded {_fmt(t.get('arena_recorded_bytes'), ',')})"
        if t.get("flash_bytes") is not None:
            head += f", flash {t['flash_bytes']:,} bytes"
        lines.append(head)
        if t.get("error"):
            lines.append(f"  {t['error']}")
        board = t.get("board") or {}
        if board.get("fits"):
            lines.append(f"  fits {board.get('label')}")
        for o in t.get("outputs") or []:
            lines.append(f"  {o['name'][:15]:<16}max_abs {_fmt(o.get('max_abs_error'))}  "
                         f"psnr_db {_fmt(o.get('psnr_db'), '.1f')}  top1 {_fmt(o.get('top1_agreement'), '.3f')}")
        for v in t.get("vs_litert") or []:
            lsb = f", {_fmt(v.get('max_lsb'), 'g')} LSB" if v.get("max_lsb") is not None else ""
            lines.append(f"  vs LiteRT {v.get('name', '')[:15]}: max |diff| {_fmt(v.get('max_abs_diff'))}{lsb}, "
                         f"bit-exact {_fmt(v.get('bit_exact_fraction'), '.1%')}")
        first = t.get("first_difference")
        if first:
            lines.append(f"  first op where TFLM and LiteRT differ by more than one step: #{first['index']} "
                         f"{first['op']}" + (f" ({first['layer']})" if first.get("layer") else "")
                         + f", {_fmt(first['max_diff'], 'g')} {first['unit']}")
    return lines


def _target_cell(rep: dict, name: str) -> str:
    """A matrix column: the target's verdict, with the arena where it ran."""
    t = (rep.get("targets") or {}).get(name)
    if not t:
        return "-"
    arena = f" {t['arena_bytes'] / 1024:,.1f} KB arena" if t.get("arena_bytes") else ""
    return f"{str(t.get('verdict') or '-').upper()}{arena}"


def _convert(args, limits, pool, history=None) -> int:
    from .pipeline import judge_report, report_json, source_json
    from .sources import source_from_path
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
    report = judge_report(report, _tolerances(args, report["optimization"]))
    run_id, _ = _recorded(args, history, "convert", [report], prepared)
    public = {**report_json(report), "run_id": run_id}
    if args.out:
        _write_out(Path(args.out), report, public)
    print(json.dumps(public, indent=2) if args.json else _table(public))
    return EXIT_OK if public["ok"] else EXIT_TOLERANCE


def _executor(args, workers: int, limits, prestart: int = 0):
    from .executor import make_executor
    return make_executor(getattr(args, "executor", None), size=workers, limits=limits, prestart=prestart,
                         ray_address=getattr(args, "ray_address", None))


def _write_cell(out: Path | None, key_dir: str, rep: dict | None, error: TFLiteLabError | None) -> None:
    """``--out``: the cell's files under DIR/<route>-<recipe>/ (just converter.log for a failure with one)."""
    from .pipeline import report_json
    if not out:
        return
    if rep is not None:
        _write_out(out / key_dir, rep, report_json(rep))
    elif error is not None and error.detail:
        d = out / key_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "converter.log").write_text(error.detail)




def aeq_answer(args, run, prepared, bench, optimization: str) -> str:
    """Whether ai-edge-quantizer does what TensorFlow's converter could not, as one sentence."""
    from .pipeline import judge_report
    try:
        rep = judge_report(run("selective", prepared=prepared, optimization=optimization, quantizer="aeq",
                               int8_io=args.int8_io, bench=bench), _tolerances(args, optimization))
    except TFLiteLabError as e2:
        return f"ai-edge-quantizer fails too ({e2.user_message})"
    verdict = "within tolerance" if rep["ok"] else "converts, but out of tolerance (" + "; ".join(rep["failures"]) + ")"
    return (f"ai-edge-quantizer succeeds: aeq-{optimization} {verdict}, {rep['tflite_bytes']:,} bytes "
            f"(--quantizer aeq)")


def _with_aeq_answer(e: ConversionError, args, pool, prepared, bench) -> ConversionError:
    if args.optimize not in ("int8", "int16x8") or not any(h in e.user_message for h in AEQ_CAN_HELP):
        return e
    answer = aeq_answer(args, lambda job, **kw: pool.run(job, **kw), prepared, bench, args.optimize)
    return ConversionError(f"{e.user_message} {answer}.", detail=e.detail)


def cmd_matrix(args) -> int:
    from . import metrics, orchestrate
    from .pipeline import failed_cell_json, judge_report, report_json, source_json
    from .sources import source_from_path
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
            if key in done:
                rep = judge_report(done[key], _tolerances(args, c.optimization))
                judged[key] = rep
                _write_cell(out, key, rep, None)
                results[key] = report_json(rep)
            else:
                err = TFLiteLabError.from_dict(failed[key])
                _write_cell(out, key, None, err)
                results[key] = failed_cell_json(c.route, c.optimization, err)

        judged: dict[str, dict] = {}
        orchestrate.run_cells(executor, jobs, bench, done, failed, render, finish)
        aeq = {}
        if "aeq" in args.quantizers:        # recipe x quantizer: aeq quantizes the float .tflite
            for o in [o for o in args.optimizations if o != "none"]:
                key = f"aeq-{o}"
                try:
                    rep = judge_report(executor.run("selective", progress=_progress(not args.json, f"{key}: "),
                                                    prepared=prepared, optimization=o, quantizer="aeq",
                                                    int8_io=args.int8_io, bench=bench), _tolerances(args, o))
                    judged[key] = rep
                    _write_cell(out, key, rep, None)
                    aeq[o] = report_json(rep)
                except TFLiteLabError as e:
                    _write_cell(out, key, None, e)
                    aeq[o] = {**failed_cell_json("aeq", o, e), "cell": key, "quantizer": "aeq"}
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
    errors = {f"{r['route']}-{r['optimization']}": {"message": r["error"], "kind": r["error_kind"]}
              for r in ordered if r.get("error")}
    cell_keys = [orchestrate.cell_id(r, o) for r in args.routes for o in args.optimizations] + [f"aeq-{o}" for o in aeq]
    run_id, _ = _recorded(args, history, "matrix", [judged[k] for k in cell_keys if k in judged], prepared,
                          failed=errors)
    ordered = [{**r, "run_id": run_id} for r in ordered]
    if args.json:
        print(json.dumps(ordered, indent=2))
    else:
        from .activity import timing_note as timing
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


def cmd_debug(args) -> int:
    from .pipeline import source_json
    from .sources import source_from_path
    from .worker import WorkerPool
    limits = _limits(args)
    history = _open_history(args)
    with WorkerPool(1, limits, prestart=1) as pool:
        src = source_from_path(args.model, limits=limits)
        if src.format is SourceFormat.TFLITE:
            raise UnsupportedCombination(f"{src.filename} is already a .tflite; debug starts from the original model.")
        samples, bench = _specs(args)
        _tasks(args)
        if args.sweep_steps < 1:
            raise TFLiteLabError(f"--sweep-steps must be at least 1, got {args.sweep_steps}.")
        progress = _progress(not args.json)
        prepared = pool.run("prepare", progress=progress, source=source_json(src), spec=samples,
                            bench=type(bench)(enabled=False))
        _check_tasks(args, prepared)
        try:
            result = pool.run("debug", progress=progress, prepared=prepared, optimization=args.optimize,
                              quantizer=args.quantizer, int8_io=args.int8_io,
                              tolerances=_tolerances(args, args.optimize).to_json(), sweep_steps=args.sweep_steps,
                              sweep_all=args.sweep_all, sample_spec=__import__("dataclasses").asdict(samples))
        except ConversionError as e:      # as for convert: where TF fails, say whether aeq succeeds
            if args.quantizer != "tf":
                raise
            raise _with_aeq_answer(e, args, pool, prepared, type(bench)(enabled=False)) from None
    public = debug_json(result)
    run_id, _ = _recorded(args, history, "debug", [result["model"]], prepared,
                          extra={k: public[k] for k in ("layers", "suggested_float", "sweep", "best_step", "notes")})
    public["run_id"] = run_id
    if args.out:
        write_debug_out(Path(args.out), result, public)
    print(json.dumps(public, indent=2) if args.json else debug_table(result))
    return EXIT_OK if result["model"]["ok"] else EXIT_TOLERANCE


def debug_json(result: dict) -> dict:
    """The `debug --json` contract (README): layers, suggested_float, sweep, and the chosen model's report."""
    from .pipeline import report_json
    return {**{k: v for k, v in result.items() if k not in ("model", "graph")},
            "model": report_json(result["model"])}


LAYER_COLUMNS = ("rank", "tensor", "op", "dtype", "weights", "scale", "zero_point", "rmse", "max_abs_error",
                 "mean_error", "rmse_per_scale", "mse", "snr_db", "snr_drop_db", "noise_added", "cosine")


def write_debug_out(out: Path, result: dict, public: dict) -> None:
    import csv
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "layers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in LAYER_COLUMNS if any(c in r for r in result["layers"])],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(result["layers"])
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["k", "float_layers", "tflite_bytes", "max_abs_error", "top1_agreement", "accuracy", "ok", "best"])
        for s in result["sweep"]:
            w.writerow([s["k"], ";".join(s["float_layers"]), s["tflite_bytes"], s["max_abs_error"],
                        s["top1_agreement"], s["accuracy"], s["ok"], bool(s.get("best"))])
    if result.get("remedies"):
        with open(out / "remedies.csv", "w", newline="") as f:
            w = csv.writer(f)
            cols = ["remedy", "cell", "changed", "tflite_bytes", "max_abs_error", "top1_agreement", "psnr_db",
                    "accuracy", "ok", "error"]
            w.writerow(cols)
            w.writerows([[r.get(c) for c in cols] for r in result["remedies"]])
    (out / "overlay.json").write_text(json.dumps(result["overlay"], indent=2))
    shutil.copyfile(result["float_tflite_path"], out / "float.tflite")
    shutil.copyfile(result["quant_tflite_path"], out / "quantized.tflite")     # the all-quantized model debugged
    _write_out(out, result["model"], public["model"])
    (out / "debug.json").write_text(json.dumps(public, indent=2))
    code = (result["model"].get("reproduce") or {}).get("code")
    if code:        # layer statistics and the chosen model, outside TFLite Lab
        (out / "reproduce.py").write_text(code + "\n")


def debug_table(result: dict) -> str:
    cell = f"aeq-{result['optimization']}" if result["quantizer"] == "aeq" else f"{result['route']}-{result['optimization']}"
    lines = [f"debug {cell}, {result['num_samples']} samples, "
             f"ranked by {'RMSE/scale (layer-isolated)' if result['basis'] == 'isolated' else 'noise added (accumulated)'}"]
    for n in result["notes"]:
        lines.append(f"  note: {n}")
    lines.append(f"{'#':>3}  {'op':<18}{'dtype':<8}{'rmse/scale':>11}{'max_abs':>10}{'snr_db':>9}{'noise+':>9}  tensor")
    for r in result["layers"][:20]:
        lines.append(f"{r.get('rank') or '-':>3}  {r['op'][:17]:<18}{r['dtype'][:7]:<8}{_fmt(r.get('rmse_per_scale')):>11}"
                     f"{_fmt(r.get('max_abs_error')):>10}{_fmt(r.get('snr_db'), '.1f'):>9}{_fmt(r.get('noise_added'), '.2g'):>9}"
                     f"  {r['tensor']}")
    if len(result["layers"]) > 20:
        lines.append(f"  ... {len(result['layers']) - 20} more layers (--json or --out for all)")
    lines.append("suggested float: " + (", ".join(result["suggested_float"]) or "none (no layer stands out)"))
    lines.append(f"{'sweep k':<9}{'bytes':>10}{'max_abs':>11}{'top1':>7}{'accuracy':>10}  status")
    for s in result["sweep"]:
        lines.append(f"{s['k']:<9}{s['tflite_bytes']:>10,}{_fmt(s['max_abs_error']):>11}{_fmt(s['top1_agreement'], '.3f'):>7}"
                     f"{_fmt(s['accuracy'], '.4g'):>10}  {'PASS' if s['ok'] else 'FAIL'}"
                     + ("  <- smallest within tolerance" if s.get("best") else ""))
    if result.get("remedies"):
        lines.append("remedies (smallest within tolerance first):")
        lines.append(f"  {'status':<8}{'cell':<32}{'bytes':>10}{'max_abs':>11}{'top1':>7}{'psnr_db':>9}{'accuracy':>10}  changed")
        for r in result["remedies"]:
            status = "PASS" if r["ok"] else ("-" if r["tflite_bytes"] is None else "FAIL")
            lines.append(f"  {status:<8}{(r['cell'] or r['remedy'])[:31]:<32}{_fmt(r['tflite_bytes'], ','):>10}"
                         f"{_fmt(r['max_abs_error']):>11}{_fmt(r['top1_agreement'], '.3f'):>7}{_fmt(r['psnr_db'], '.1f'):>9}"
                         f"{_fmt(r['accuracy'], '.4g'):>10}  {r.get('error') or r['changed']}"
                         + ("  <- chosen" if r.get("chosen") else ""))
    lines.append(_table(__import__("tflite_lab.pipeline", fromlist=["report_json"]).report_json(result["model"])))
    lines.append(f"Model Explorer (local only): {result['model_explorer_command']}  (files from --out)")
    return "\n".join(lines)


def cmd_zoo(args) -> int:
    from concurrent.futures import ThreadPoolExecutor
    from . import orchestrate, zoo
    from .pipeline import SampleSpec, failed_cell_json, judge_report, report_json, source_json
    from .sources import source_from_path
    from .store import Store
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
                stored = orchestrate.stored_cell(store, m.prepared, c, bench)
                if stored is not None:          # already in the store: not recomputed
                    done[key] = stored
                else:
                    jobs.append(orchestrate.CellJob(key, c, m.prepared))
        count = orchestrate.Progress(len(owner))

        def finish(key):
            m, c = owner[key]
            if key in done:
                if not done[key].get("cached_cell"):
                    orchestrate.store_cell(store, m.prepared, c, bench, done[key])
                rep = judge_report(done[key], _tolerances(args, c.optimization))
                m.judged[c.id] = rep
                _write_cell(out / m.name if out else None, c.id, rep, None)
                m.cells[c.id] = report_json(rep)
            else:
                err = TFLiteLabError.from_dict(failed[key])
                _write_cell(out / m.name if out else None, c.id, None, err)
                m.cells[c.id] = failed_cell_json(c.route, c.optimization, err)
            count.finished(key in done)
            say(f"{count.line()}  {key} {'done' if key in done else 'failed: ' + failed[key]['message']}")

        for key in [k for k in owner if k in done]:
            finish(key)
        orchestrate.run_cells(executor, jobs, bench, done, failed, on_finish=finish)
        where = executor.describe()
    for m in models:                    # cells in the order asked for
        order = [orchestrate.cell_id(r, o) for r in args.routes for o in args.optimizations]
        m.cells = {cid: m.cells[cid] for cid in order if cid in m.cells}
    rows = [zoo.summarize(m) for m in models]
    runs = []                           # one matrix run per model, in the same run history as local runs
    from .history import build_run
    for row, m in zip(rows, models):
        if m.prepared is None:
            continue
        errors = {cid: {"message": c["error"], "kind": c["error_kind"]} for cid, c in m.cells.items() if c.get("error")}
        run = build_run("matrix", [m.judged[cid] for cid in m.cells if cid in m.judged], m.prepared, origin="cli",
                        failed=errors, note=args.note)
        row["run_id"] = history.record(run) if history is not None else None
        run["id"] = row["run_id"]
        runs.append(run)
    result = {"executor": where, "models": [{**row, "cells": list(m.cells.values())} for row, m in zip(rows, models)]}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "zoo.json").write_text(json.dumps(result, indent=2))
        zoo.write_tables(rows, out / "zoo")
    if args.report and Path(args.report).suffix.lower() == ".html":
        from .report_html import write_report
        write_report(runs, args.report)             # every model's matrix run, side by side
        zoo.write_tables(rows, Path(args.report))   # and the summary table next to it
    elif args.report:
        zoo.write_tables(rows, Path(args.report))
    print(json.dumps(result, indent=2) if args.json else zoo.text_table(rows))
    return EXIT_OK if all(r["within_tolerance"] for r in rows) else EXIT_TOLERANCE


def cmd_inspect(args) -> int:
    from .pipeline import source_json
    from .sources import source_from_path
    from .worker import WorkerPool
    src = source_from_path(args.model)
    with WorkerPool(1) as pool:
        d = pool.run("describe", source=source_json(src), refused_ok=True)
    insp = d.get("inspection")
    refused = (insp or {}).get("refused")       # the op table is shown, then the one-line refusal (exit 2)
    if args.json:
        print(json.dumps({"format": src.format.value, "size_bytes": src.size_bytes, "sha256": src.sha256,
                          "signature": d["signature"], "info": d["info"], "inspection": d["inspection"]}, indent=2))
        if refused:
            raise SourceError(refused)
        return EXIT_OK
    print(f"{src.filename}: {src.format.value}, {src.size_bytes:,} bytes"
          + (f", {d['info']['params']:,} parameters" if d["info"].get("params") is not None else ""))
    for kind in ("inputs", "outputs"):
        for t in (d["signature"] or {}).get(kind) or (insp or {}).get(kind, []):
            shape = "(" + ", ".join("?" if s is None or s == -1 else str(s)
                                    for s in t.get("shape_signature") or t["shape"]) + ")"
            print(f"  {kind[:-1]:<7} {t['name']:<24} {shape:<20} {t['dtype']}")
    if insp:
        from .inspect import Inspection, op_table_text
        print("  operators: " + ", ".join(f"{k} x{v}" for k, v in insp["operators"].items()))
        if insp.get("custom_ops") or insp.get("flex_ops") or refused:
            table = op_table_text(Inspection(0, {}, op_table=insp["op_table"]))
            print("\n".join("    " + line for line in table.splitlines()))
        for f in insp["findings"]:
            print(f"  warning: {f}")
        for f in insp.get("notes", []):
            print(f"  note: {f}")
        if args.analyzer:
            print(insp.get("analysis", ""))
    if refused:
        raise SourceError(refused)
    return EXIT_OK


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def cmd_history(args) -> int:
    from .history import History, RunFilter
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
            from .pipeline import report_json
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


def _num(x):
    return None if x is None else float(x)


def cmd_report(args) -> int:
    from .history import History
    from .report_html import write_report
    with History() as h:
        runs = []
        for rid in args.run_ids:
            run = h.get(rid)
            if run is None:
                raise TFLiteLabError(f"No run '{rid}' in the run history {h.path}.")
            runs.append(run)
    path, size = write_report(runs, args.out)
    print(f"wrote {path} ({size / 1e6:.1f} MB, {len(runs)} run{'s' if len(runs) > 1 else ''})")
    return EXIT_OK


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"convert": cmd_convert, "matrix": cmd_matrix, "zoo": cmd_zoo, "inspect": cmd_inspect,
                "history": cmd_history, "report": cmd_report, "debug": cmd_debug}[args.command](args)
    except TFLiteLabError as e:
        print(f"error: {e.user_message}", file=sys.stderr)
        out = getattr(args, "out", None)
        if isinstance(e, (ConversionError, WorkerError)) and out and e.detail:
            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, "converter.log").write_text(e.detail)
        if args.debug and e.detail:
            print(e.detail, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
