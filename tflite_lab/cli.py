"""Command line: ``python -m tflite_lab convert|matrix|inspect`` (the contract is in the README).

Exit codes: 0 within tolerance, 1 a tolerance failed, 2 bad input, 3 the conversion failed.
This process never imports TensorFlow: the work runs in worker processes (worker.py), which also
keeps stdout clean for ``--json``.

This module is the entry point: the parser assembled from the commands (``commands/``, one module each,
over the options they share in ``commands/base``), the dispatch, and the one place errors become a line
on stderr and an exit code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .commands import convert, debug, history, inspect, matrix, report, zoo
from .commands.base import EXIT_BAD_INPUT, EXIT_CONVERSION, EXIT_OK, EXIT_TOLERANCE, _Parser  # noqa: F401 - the CLI's contract
from .errors import ConversionError, TFLiteLabError, WorkerError

# name: (help, its options, the command), in the order --help lists them
COMMANDS = {
    "convert": ("convert one route x optimization and compare", convert.add_arguments, convert.cmd_convert),
    "debug": ("per-layer quantization error, suggested float layers and the keep-float sweep", debug.add_arguments,
              debug.cmd_debug),
    "matrix": ("every route x optimization cell", matrix.add_arguments, matrix.cmd_matrix),
    "zoo": ("the matrix over many models: one summary row per model", zoo.add_arguments, zoo.cmd_zoo),
    "inspect": ("signature, operators, tensors and deployment findings", inspect.add_arguments, inspect.cmd_inspect),
    "history": ("runs recorded in the run history (list, show, delete, trash, restore)", history.add_arguments,
                history.cmd_history),
    "report": ("a self-contained HTML report of one run, or several side by side", report.add_arguments,
               report.cmd_report),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m tflite_lab", description="Convert Keras/TensorFlow models to TFLite and prove the conversion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
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
