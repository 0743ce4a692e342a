"""What every command shares: the exit codes, the options more than one command takes (declared once,
in ``OPTIONS``), the specs, tolerances and targets built from them, the finish of a matrix cell, the run
history record, the --out files and the text tables.

Command modules import this one and nothing of each other or of ``cli``. Like the whole CLI process it
never imports TensorFlow: the heavy imports stay inside the functions that need them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ..config import Limits
from ..errors import ConversionError, TFLiteLabError, UnsupportedCombination
from ..orchestrate import AEQ_CAN_HELP
from ..types import Optimization, Route, Tolerances

EXIT_OK, EXIT_TOLERANCE, EXIT_BAD_INPUT, EXIT_CONVERSION = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: scripts parse stderr
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _class_names_file(path: str) -> dict:
    from ..tryit import load_class_names
    try:
        data = open(path, "rb").read(8 * 1024 * 1024)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return {"file": os.path.basename(path), "names": load_class_names(data, os.path.basename(path))}
    except TFLiteLabError as e:
        raise argparse.ArgumentTypeError(e.user_message) from None


# The options more than one command takes, each declared once: flag -> add_argument keywords. A command
# adds the ones it takes with _options, in the order its --help lists them, and may say one in its own
# words (zoo's --out writes a folder per model, not one cell's files).
OPTIONS: dict[str, dict] = {
    "model": dict(help=".keras, .h5, SavedModel folder or .zip, or .tflite"),
    "--samples": dict(help=".npy, .npz (keyed by input name), .csv, an image, a folder or zip of images"),
    "--num-samples": dict(type=int, default=None, help="random samples to draw (default 64), or cap on file samples"),
    "--seed": dict(type=int, default=0),
    "--low": dict(type=float, default=None,
                  help="random samples: lower bound (default: from the model where it declares a range, e.g. an "
                       "Embedding's vocabulary; else 0)"),
    "--high": dict(type=float, default=None,
                   help="random samples: upper bound (default: from the model where it declares a range; else 1)"),
    "--length": dict(action="append", default=[], metavar="NAME=N",
                     help="random samples: length N of input NAME's dynamic dims (N alone: every input); default "
                          "the model's maximum where it has one, else 32"),
    "--out": dict(help="write model.tflite, samples.npz and report.json here"),
    "--json": dict(action="store_true", help="print only the JSON report on stdout"),
    "--max-abs-error": dict(type=float, help="tolerance on max abs error (any recipe)"),
    "--min-top1": dict(type=float, help="tolerance on top-1 agreement (set here: every (samples, classes) output)"),
    "--min-psnr": dict(type=float, help="tolerance on PSNR in dB (set here: every output)"),
    "--labels": dict(help="labels, one per sample (.npy or .csv): reports task accuracy (or MAE)"),
    "--labels-key": dict(default="labels",
                         help="the .npz key or CSV column of --samples that holds labels (default: labels)"),
    "--min-accuracy-delta": dict(type=float,
                                 help="tolerance on tflite accuracy - original accuracy on the labels, e.g. -0.01 "
                                      "(for MAE: relative growth, -0.05 = at most 5%% worse)"),
    "--task": dict(action="append", default=[], metavar="OUTPUT=TASK",
                   help="judge OUTPUT as 'classification' (top-1) or 'regression' (PSNR) instead of the task "
                        "detected from its values; repeatable"),
    "--class-names": dict(type=_class_names_file, metavar="FILE",
                          help="a text file with one class name per line (the model's output order): kept with the "
                               "run, it labels predictions and the confusion view in the dashboard"),
    "--int8-io": dict(action="store_true", help="int8: integer model inputs/outputs (default float)"),
    "--threads": dict(type=int, default=None,
                      help="threads for both TensorFlow (intra/inter-op) and LiteRT when timing; default: every core"),
    "--no-latency": dict(action="store_true", help="skip the latency benchmark"),
    "--time-limit": dict(type=float, default=None, help="seconds per worker job"),
    "--memory-limit": dict(type=float, default=None, help="MB per worker"),
    "--debug": dict(action="store_true", help="show tracebacks and details"),
    "--no-history": dict(action="store_true", help="do not record this run in the run history"),
    "--note": dict(default="", help="a note kept with the run in the history"),
    "--author": dict(default=None, help="who made the run, kept in the history ('Name <email>', an email or a "
                                        "name); default TFLITE_LAB_AUTHOR, else the OS user"),
    "--report": dict(metavar="FILE", help="also write a self-contained HTML report of the run to FILE"),
    # matrix and zoo: the cells to run, and how many at a time
    "--routes": dict(nargs="+", choices=[r.value for r in Route], default=[r.value for r in Route]),
    "--optimizations": dict(nargs="+", choices=[o.value for o in Optimization], default=[o.value for o in Optimization]),
    "--workers": dict(type=int, default=min(2, os.cpu_count() or 1)),
}

# convert, debug and matrix: one model, its samples, the tolerances, the run history
COMMON = ("model", "--samples", "--num-samples", "--seed", "--low", "--high", "--length", "--out", "--json",
          "--max-abs-error", "--min-top1", "--min-psnr", "--labels", "--labels-key", "--min-accuracy-delta", "--task",
          "--class-names", "--int8-io", "--threads", "--no-latency", "--time-limit", "--memory-limit", "--debug",
          "--no-history", "--note", "--author", "--report")


def _options(p: argparse.ArgumentParser, names, own: dict[str, dict] | None = None) -> None:
    """Add the OPTIONS ``names`` to ``p`` in that order; ``own[name]`` replaces keywords (a help text the
    command words its own way)."""
    for name in names:
        kw = {**OPTIONS[name], **(own or {}).get(name, {})}
        if isinstance(kw.get("default"), list):    # a list of its own per parser, as when each command declared it
            kw["default"] = list(kw["default"])
        p.add_argument(name, **kw)


def _common(p: argparse.ArgumentParser) -> None:
    """The options of the commands that run one model: convert, debug, matrix (``COMMON``)."""
    _options(p, COMMON)


def _target_args(p: argparse.ArgumentParser) -> None:
    from ..targets import target_names
    p.add_argument("--target", action="append", default=[], choices=target_names(),
                   help="also run the .tflite where it will run and judge it there (micro: TensorFlow Lite Micro's "
                        "kernels; browser: LiteRT.js in headless Chromium); repeatable")
    p.add_argument("--board", help="--target micro: the board it must fit (RAM and flash from its datasheet)")
    p.add_argument("--ram-kb", type=float, help="--target micro: a custom board's RAM in KB (with --flash-kb)")
    p.add_argument("--flash-kb", type=float, help="--target micro: a custom board's flash in KB (with --ram-kb)")


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
    from ..pipeline import BenchSpec, SampleSpec
    if args.samples and not Path(args.samples).exists():
        raise TFLiteLabError(f"Samples path {args.samples} does not exist.")
    if args.labels and not Path(args.labels).is_file():
        raise TFLiteLabError(f"Labels file {args.labels} does not exist.")
    from ..samples import parse_lengths
    samples = SampleSpec(path=str(Path(args.samples).resolve()) if args.samples else None,
                         count=args.num_samples, seed=args.seed, low=args.low, high=args.high,
                         lengths=parse_lengths(args.length),
                         labels=str(Path(args.labels).resolve()) if args.labels else None,
                         labels_key=args.labels_key)
    if args.num_samples is not None and args.num_samples < 1:
        raise TFLiteLabError(f"--num-samples must be at least 1, got {args.num_samples}.")
    return samples, _bench(args)


def _bench(args):
    from ..pipeline import BenchSpec
    if args.threads is not None:
        if args.threads < 1:
            raise TFLiteLabError(f"--threads must be at least 1, got {args.threads}.")
        # Workers started from here configure TensorFlow with it before it runs anything.
        os.environ["TFLITE_LAB_THREADS"] = str(args.threads)
    return BenchSpec(enabled=not args.no_latency, threads=args.threads)


def _tasks(args) -> dict[str, str]:
    from ..types import Task
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


def _targets(args) -> dict | None:
    """``{name: options}`` from --target/--board/--ram-kb/--flash-kb, refused before any work."""
    from ..targets import check_targets
    board = {k: v for k, v in (("board", args.board), ("ram_kb", args.ram_kb), ("flash_kb", args.flash_kb))
             if v is not None}
    if board and "micro" not in args.target:
        raise UnsupportedCombination("--board, --ram-kb and --flash-kb go with --target micro.")
    requested = {name: (board if name == "micro" else {}) for name in dict.fromkeys(args.target)}
    check_targets(requested)
    return requested or None


def _executor(args, workers: int, limits, prestart: int = 0):
    from ..executors import make_executor
    return make_executor(getattr(args, "executor", None), size=workers, limits=limits, prestart=prestart,
                         ray_address=getattr(args, "ray_address", None))


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
    from ..targets import BUNDLE_FOLDERS
    from ..targets.mobile_bundle import write_mobile_bundles
    try:                                   # android/ and ios/: code from the model's real signature
        write_mobile_bundles(Path(report["tflite_path"]).read_bytes(), out)
    except Exception as e:   # noqa: BLE001 - the report stands without them
        print(f"note: no Android/iOS bundle: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}",
              file=sys.stderr)
    for name, t in (report.get("targets") or {}).items():      # C++ for micro, the web page for browser
        bundle = (t or {}).get("bundle_dir")
        if bundle and Path(bundle).is_dir():
            shutil.copytree(bundle, out / BUNDLE_FOLDERS.get(name, name), dirs_exist_ok=True)


def _write_cell(out: Path | None, key_dir: str, rep: dict | None, error: TFLiteLabError | None) -> None:
    """``--out``: the cell's files under DIR/<route>-<recipe>/ (just converter.log for a failure with one)."""
    from ..pipeline import report_json
    if not out:
        return
    if rep is not None:
        _write_out(out / key_dir, rep, report_json(rep))
    elif error is not None and error.detail:
        d = out / key_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "converter.log").write_text(error.detail)


def _finish_cell(args, key: str, route: str, optimization: str, outcome: dict | TFLiteLabError, *,
                 out: Path | None, judged: dict[str, dict]) -> dict:
    """A matrix cell that ran (matrix's and each of zoo's): its report judged with this request's
    tolerances and kept in ``judged[key]``, or its error; its files under ``out``/<key>/; its public JSON.

    Args:
        outcome: the cell job's report, or the error it failed with.
        out: --out (zoo: the model's folder in it), or None.
    """
    from ..pipeline import failed_cell_json, judge_report, report_json
    if isinstance(outcome, TFLiteLabError):
        _write_cell(out, key, None, outcome)
        return failed_cell_json(route, optimization, outcome)
    rep = judge_report(outcome, _tolerances(args, optimization))
    judged[key] = rep
    _write_cell(out, key, rep, None)
    return report_json(rep)


def _open_history(args):
    """The run history, opened before any work: a database it cannot read stops the run up front."""
    if args.no_history:
        return None
    from ..history import History
    return History()


def _record_run(args, history, kind: str, reports: list[dict], prepared: dict, **kw) -> dict:
    """The run (``history.build_run``, with --class-names where given), recorded unless --no-history;
    ``run["id"]`` is its id, None when not recorded."""
    from ..history import build_run
    given = getattr(args, "class_names", None)
    if given:                 # the dashboard labels this run's predictions with them
        kw["extra"] = {**(kw.get("extra") or {}), "class_names": given}
    from ..people import cli_person
    run = build_run(kind, reports, prepared, origin="cli", note=args.note,
                    author=cli_person(getattr(args, "author", None)), **kw)
    run["id"] = history.record(run) if history is not None else None
    return run


def _record_matrix(args, history, cells, judged: dict[str, dict], prepared: dict) -> dict:
    """One model's matrix as a run (``_record_run``), for matrix and for each model of zoo.

    Args:
        cells: (cell id, public cell JSON) pairs in the order asked for, refused and failed cells included.
        judged: cell id -> judged report (``_finish_cell`` fills it), for the cells that ran.
    """
    cells = list(cells)
    failed = {key: {"message": c["error"], "kind": c["error_kind"]} for key, c in cells if c.get("error")}
    return _record_run(args, history, "matrix", [judged[key] for key, _ in cells if key in judged], prepared,
                       failed=failed)


def _announce(args, run: dict) -> None:
    """Say the run's id on a terminal; write --report (the HTML report of this run)."""
    run_id = run["id"]
    if run_id and sys.stderr.isatty():
        print(f"run {run_id} recorded (python -m tflite_lab history show {run_id})", file=sys.stderr)
    if args.report:
        from ..report_html import write_report
        path, size = write_report([run], args.report)
        if sys.stderr.isatty():
            print(f"report written to {path} ({size / 1e6:.1f} MB)", file=sys.stderr)


def _recorded(args, history, kind: str, reports: list[dict], prepared: dict, **kw) -> tuple[str | None, dict]:
    """Record the run (unless --no-history), say its id on a terminal, write --report; (run_id, run)."""
    run = _record_run(args, history, kind, reports, prepared, **kw)
    _announce(args, run)
    return run["id"], run


def aeq_answer(args, run, prepared, bench, optimization: str) -> str:
    """Whether ai-edge-quantizer does what TensorFlow's converter could not, as one sentence."""
    from ..pipeline import judge_report
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
    from ..pipeline import samples_phrase, verdict_text
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
            from ..activity import timing_note
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


def _target_lines(public: dict) -> list[str]:
    """One block per deployment target: verdict, why it does not run, arena/flash, vs LiteRT."""
    from ..history import device_label
    lines = []
    for name, t in (public.get("targets") or {}).items():
        head = f"target {name}: {str(t.get('verdict') or '-').upper()}"
        if t.get("arena_bytes") is not None:
            head += f"  arena {t['arena_bytes']:,} bytes (recorded {_fmt(t.get('arena_recorded_bytes'), ',')})"
        if t.get("flash_bytes") is not None:
            head += f", flash {t['flash_bytes']:,} bytes"
        lat = t.get("latency_ms") or {}
        if lat.get("median") is not None:
            head += (f"  {_fmt(lat['median'], '.3g')} ms median, p90 {_fmt(lat.get('p90'), '.3g')} ms "
                     f"({lat.get('runs')} warm batch-1 runs, LiteRT.js {t.get('accelerator')}, {device_label(t)})")
        lines.append(head)
        if t.get("made_batch_1"):
            lines.append("  ran a batch-1 copy of the model (LiteRT.js refuses a dynamic batch)")
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
