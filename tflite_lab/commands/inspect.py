"""``inspect``: a model's signature, operators, tensors and deployment findings."""
from __future__ import annotations

import argparse
import json

from ..errors import SourceError
from .base import EXIT_OK


def add_arguments(i: argparse.ArgumentParser) -> None:
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--analyzer", action="store_true", help="also print TensorFlow's Analyzer report (.tflite)")
    i.add_argument("--debug", action="store_true")


def cmd_inspect(args) -> int:
    from ..pipeline import source_json
    from ..sources import source_from_path
    from ..worker import WorkerPool
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
        from ..inspect import Inspection, op_table_text
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
