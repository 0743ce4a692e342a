"""``report``: a self-contained HTML report of one recorded run, or several side by side."""
from __future__ import annotations

import argparse

from ..errors import TFLiteLabError
from .base import EXIT_OK


def add_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    r.add_argument("--out", required=True, help="the .html file to write")
    r.add_argument("--debug", action="store_true")


def cmd_report(args) -> int:
    from ..history import History
    from ..report_html import write_report
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
