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

from dataclasses import dataclass
from typing import Callable

from .base import (DOES_NOT_FIT, DOES_NOT_RUN, NO_REFERENCE, IsolatedCrash, TargetInput,  # noqa: F401  (the interface)
                   TargetReport, judge_targets, public_targets, run_isolated)


@dataclass(frozen=True)
class Target:
    name: str                            # what users type: --target NAME
    label: str                           # what pages show
    run: Callable[[TargetInput], TargetReport]
    options: tuple[str, ...] = ()


def _micro(inp: TargetInput) -> TargetReport:
    from .micro import run_micro
    return run_micro(inp)


def _browser(inp: TargetInput) -> TargetReport:
    from .browser import run_browser
    return run_browser(inp)


TARGETS: dict[str, Target] = {
    "micro": Target("micro", "Microcontroller (TFLite Micro)", _micro, ("board", "ram_kb", "flash_kb")),
    "browser": Target("browser", "Browser (LiteRT.js)", _browser, ("accelerator",)),
}


# Where ``--out DIR`` puts each target's bundle (``DIR/<folder>/``).
BUNDLE_FOLDERS = {"micro": "micro", "browser": "web"}


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


