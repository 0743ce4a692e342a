"""``debug``: per-layer quantization error, the suggested float layers and the keep-float sweep (the work
runs in the worker's Debug job); its table, its JSON and its --out files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConversionError, TFLiteLabError, UnsupportedCombination
from ..types import Optimization, SourceFormat
from .base import (EXIT_OK, EXIT_TOLERANCE, _check_tasks, _common, _fmt, _limits, _open_history, _progress,
                   _recorded, _specs, _table, _tasks, _tolerances, _with_aeq_answer, _write_out)


def add_arguments(d: argparse.ArgumentParser) -> None:
    _common(d)
    d.add_argument("--optimize", choices=[o.value for o in Optimization if o is not Optimization.NONE],
                   default=Optimization.INT8.value)
    d.add_argument("--quantizer", choices=["tf", "aeq"], default="tf")
    d.add_argument("--sweep-steps", type=int, default=5, help="at most this many sweep steps (k = 0, 1, 2, 4, 8 ...)")
    d.add_argument("--sweep-all", action="store_true", help="run every sweep step, not only until the tolerance holds")


def cmd_debug(args) -> int:
    from ..pipeline import source_json
    from ..sources import source_from_path
    from ..worker import WorkerPool
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
    from ..pipeline import report_json
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
