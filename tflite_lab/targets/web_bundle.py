"""The web bundle: a folder any static server can serve, offline, that runs the cell's batch-1 model
in LiteRT.js on whatever device opens it and checks it against server LiteRT's outputs.

Only ``.js``, ``.wasm``, ``.html``, ``.json`` and ``.tflite`` files (a plain static server types
them right; ``.mjs`` it does not). When the run is judged, ``document.body.dataset.verdict`` is
``pass`` or ``fail`` and ``#result`` holds the numbers as JSON (never before).
"""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from .web_assets import FILES, TEMPLATES, import_map_tag

CELL_FILES = ("manifest.json", "model.tflite", "inputs.json", "expected.json")
SHIPPED = (".js", ".wasm", ".html", ".json", ".tflite")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_web_bundle(cell: Path, assets: Path, out: Path, title: str = "TFLite Lab model") -> Path:
    """``out`` holds index.html, runner.js, lib/, wasm/ (two builds) and the cell's files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for rel in FILES:
        _link(Path(assets) / rel, out / rel)
    for name in CELL_FILES:
        _link(Path(cell) / name, out / name)
    page = (TEMPLATES / "index.html").read_text()
    page = page.replace("__IMPORTMAP__", import_map_tag()).replace("__TITLE__", html.escape(title))
    (out / "index.html").write_text(page)
    assert all(p.suffix in SHIPPED for p in out.rglob("*") if p.is_file())
    return out
