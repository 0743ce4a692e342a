"""Deployment targets: where a cell's ``.tflite`` really runs (a microcontroller, a browser, ...).

A target is a pipeline stage. It takes the cell's ``.tflite`` and the prepared samples (and the
original's outputs, when there is an original) and returns a frozen ``TargetReport``: does it run,
why not, its outputs compared with the original by the same ``metrics`` code, and its own figures.

The interface (stable; a new target plugs in by adding one ``Target`` to ``TARGETS``):

- ``TargetInput``: what every target gets (paths, not arrays, so it crosses process boundaries).
- ``Target(name, label, run, options)``: ``run(TargetInput) -> TargetReport``. ``run`` is called in
  the worker process that converted the cell; code that can crash the process on untrusted bytes
  (C++ interpreters) should isolate itself (``run_isolated`` runs a function in a fresh Python
  child; a crash there becomes ``TargetReport.crashed``). ``options`` names the keyword options the
  target accepts (``TargetInput.options``), e.g. ``("board", "ram_kb", "flash_kb")``.
- ``TargetReport.outputs`` are raw metrics (``metrics.compare_outputs(...)`` as JSON, one dict per
  output); the target does not judge them. ``judge_targets`` (called from
  ``pipeline.judge_report``) applies the cell's tolerances and sets each target's ``verdict``:
  ``pass``, ``fail``, ``does not run``, ``does not fit`` (a target sets the last two itself) or
  ``ran, no reference``. A requested target that is not ``pass`` makes the report's ``ok`` false.
- In a report: ``report["targets"][name] = TargetReport.to_json()``: ``runs``, ``error``,
  ``verdict``, ``outputs``, then the target's own figures (``figures``) at the same level, and
  ``bundle_dir`` (files the target generated for the user, e.g. the C++ bundle; ``--out DIR``
  copies it to ``DIR/<name>/``).

Nothing here imports TensorFlow or streamlit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Verdicts a target can have (the first two are set by the target itself).
DOES_NOT_RUN = "does not run"
DOES_NOT_FIT = "does not fit"
NO_REFERENCE = "ran, no reference"


@dataclass(frozen=True)
class TargetInput:
    """What a target is given: the cell's model, the samples, the original's outputs (or None).

    ``input_names``/``output_names`` map the flatbuffer's tensors to the signature's names as the
    desktop run did (``runtime.TFLiteModel.match``): ``in_map`` signature input name -> LiteRT
    input detail name, ``out_map`` LiteRT output detail name -> signature output name.
    """

    tflite_path: str
    samples_path: str                    # .npz keyed by signature input name, [n, ...] each
    reference_path: str | None           # .npz keyed by signature output name; None: no original
    signature: dict                      # Signature.to_dict()
    in_map: dict = field(default_factory=dict)
    out_map: dict = field(default_factory=dict)
    store_root: str | None = None        # where generated files go (Store(store_root))
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TargetReport:
    """One target's result for one cell."""

    target: str
    runs: bool
    error: str | None = None             # one line: what the target refused and what to do
    verdict: str | None = None           # None until judged; DOES_NOT_RUN / DOES_NOT_FIT set by the target
    outputs: tuple = ()                  # raw per-output metric dicts (OutputMetrics.to_json + per_sample_max_abs)
    figures: dict = field(default_factory=dict)     # the target's own numbers (JSON-able)
    bundle_dir: str | None = None

    def to_json(self) -> dict:
        return {"target": self.target, "runs": self.runs, "error": self.error, "verdict": self.verdict,
                "outputs": list(self.outputs), **self.figures, "bundle_dir": self.bundle_dir}

    @staticmethod
    def crashed(target: str, message: str) -> "TargetReport":
        return TargetReport(target, False, message, DOES_NOT_RUN)


@dataclass(frozen=True)
class Target:
    name: str                            # what users type: --target NAME
    label: str                           # what pages show
    run: Callable[[TargetInput], TargetReport]
    options: tuple[str, ...] = ()


def _micro(inp: TargetInput) -> TargetReport:
    from .micro import run_micro
    return run_micro(inp)


TARGETS: dict[str, Target] = {
    "micro": Target("micro", "Microcontroller (TFLite Micro)", _micro, ("board", "ram_kb", "flash_kb")),
}


def target_names() -> list[str]:
    return list(TARGETS)


def check_targets(requested: dict[str, dict]) -> None:
    """Refuse unknown targets or options before any work (UnsupportedCombination)."""
    from ..errors import UnsupportedCombination
    for name, opts in requested.items():
        if name not in TARGETS:
            raise UnsupportedCombination(f"Unknown target '{name}'; targets are {', '.join(TARGETS)}.")
        bad = sorted(set(opts or {}) - set(TARGETS[name].options))
        if bad:
            raise UnsupportedCombination(f"Target '{name}' takes no option(s) {', '.join(bad)}.")
    if "micro" in requested:
        from .boards import check_board_options
        check_board_options(requested["micro"] or {})


def run_targets(requested: dict[str, dict], base: TargetInput) -> dict[str, dict]:
    """Each requested target on the cell (``{name: options}``), as ``{name: TargetReport.to_json()}``.

    An unexpected exception in a target is that target's ``does not run``, never the cell's failure:
    the cell converted and was judged on the desktop already.
    """
    out = {}
    for name, opts in requested.items():
        inp = TargetInput(**{**base.__dict__, "options": dict(opts or {})})
        try:
            rep = TARGETS[name].run(inp)
        except Exception as e:      # noqa: BLE001 - a target's bug must not lose the cell
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            rep = TargetReport.crashed(name, f"{TARGETS[name].label} failed: {first}")
        out[name] = rep.to_json()
    return out


def run_isolated(module: str, function: str, payload: dict, *, timeout_s: float | None = None) -> dict:
    """``module.function(payload) -> dict`` in a fresh Python child process (JSON in, JSON out).

    For C++ runtimes on untrusted bytes: a segfault or abort there kills the child only.
    Raises ``IsolatedCrash`` with one line (the signal, and the child's last stderr line).
    """
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ, PYTHONPATH=root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))
    with tempfile.TemporaryDirectory(prefix="target-") as tmp:
        pin, pout = Path(tmp) / "in.json", Path(tmp) / "out.json"
        pin.write_text(json.dumps(payload))
        code = (f"import json,sys; from {module} import {function} as f; "
                f"r = f(json.load(open(sys.argv[1]))); json.dump(r, open(sys.argv[2], 'w'))")
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(pin), str(pout)], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise IsolatedCrash(f"did not finish within {timeout_s:g} s") from None
        if proc.returncode != 0 or not pout.exists():
            tail = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            if proc.returncode < 0:
                import signal
                sig = -proc.returncode
                what = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
                msg = f"crashed ({what})"
            else:
                msg = f"exited with code {proc.returncode}"
            raise IsolatedCrash(msg + (f": {tail[-1][:300]}" if tail else ""), detail="\n".join(tail[-50:]))
        return json.loads(pout.read_text())


class IsolatedCrash(Exception):
    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def judge_targets(report: dict, tolerances, optimization) -> tuple[dict, list[str]]:
    """``report["targets"]`` with each target's ``verdict`` and judged outputs, and the failures.

    Outputs are judged by ``metrics.judge`` with the cell's tolerances, exactly as the desktop's.
    """
    from ..metrics import judge
    from ..types import OutputMetrics
    targets, failures = {}, []
    for name, t in (report.get("targets") or {}).items():
        t = dict(t)
        label = name
        if t.get("verdict") in (DOES_NOT_RUN,):
            failures.append(f"{label}: does not run ({t.get('error')})")
        elif t["outputs"] and report.get("reference_path") is not None:
            metrics = [OutputMetrics.from_json(m) for m in t["outputs"]]
            v = judge(metrics, optimization, tolerances)
            t["outputs"] = [{**m, "task": v.tasks[m["name"]][0], "task_reason": v.tasks[m["name"]][1],
                             "checks": [c.to_json() for c in v.checks if c.output == m["name"]],
                             "not_applied": v.notes.get(m["name"], [])} for m in t["outputs"]]
            if t.get("verdict") == DOES_NOT_FIT:
                failures.append(f"{label}: does not fit ({t.get('error')})")
            elif v.ok:
                t["verdict"] = "pass"
            else:
                t["verdict"] = "fail"
                failures += [f"{label}: {f}" for f in v.failures]
        elif t.get("verdict") == DOES_NOT_FIT:
            failures.append(f"{label}: does not fit ({t.get('error')})")
        else:
            bad = [o for o in t.get("output_stats", []) if o.get("nonfinite")]
            t["verdict"] = "fail" if bad else NO_REFERENCE
            failures += [f"{label}: {o['name']}: {o['nonfinite']} of the outputs are NaN or inf" for o in bad]
        targets[name] = t
    return targets, failures


def public_targets(targets: dict | None) -> dict:
    """The report JSON's ``targets`` (per-sample lists dropped, as in the report's own outputs)."""
    return {name: {**t, "outputs": [{k: v for k, v in o.items() if k != "per_sample_max_abs"} for o in t.get("outputs", [])]}
            for name, t in (targets or {}).items()}
