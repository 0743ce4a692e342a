"""The targets' shared interface (``TargetInput``, ``TargetReport``, verdicts, ``run_isolated``,
``judge_targets``): what every target module imports, so that ``targets`` (the registry) imports
the targets and never the other way round. See the package's doc.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


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
