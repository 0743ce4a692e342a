"""LiteRT.js as files a page can load: the npm packages (``web/``, pinned by its lock file) laid out
for a static server, with only the two wasm builds a page picks without COOP/COEP headers.

Layout of ``assets_dir()`` (served by the dashboard's component, the browser target's loopback
server and copied into the web bundle)::

    lib/core/index.js         @litertjs/core's ES module
    lib/wasm-utils/index.js   the bare import it makes, resolved by the pages' import map
    wasm/litert_wasm_internal.{js,wasm}          relaxed SIMD (Chromium, Firefox)
    wasm/litert_wasm_compat_internal.{js,wasm}   without relaxed SIMD (Safari)
    runner.js                 runs a cell folder (manifest.json) sample by sample, times it
    index.html                the dashboard's "Run on this device" component (device.html)
    cells/<key>/              cell folders the dashboard serves to visitors' browsers (``serve_cell``)

The threaded build needs SharedArrayBuffer (cross-origin isolation) and JSPI is experimental:
LiteRT.js loads them only when asked, so they are not served.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import UnsupportedCombination

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
TEMPLATES = Path(__file__).with_name("templates") / "web"
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_compat_internal")
IMPORT_MAP = {"imports": {"@litertjs/core": "./lib/core/index.js", "@litertjs/wasm-utils": "./lib/wasm-utils/index.js"}}
# The files a static page needs, relative to assets_dir() (what the web bundle copies).
FILES = ("lib/core/index.js", "lib/wasm-utils/index.js", "runner.js",
         *(f"wasm/{b}.{ext}" for b in WASM_BUILDS for ext in ("js", "wasm")))


def node_modules() -> Path:
    return Path(os.environ.get("TFLITE_LAB_NODE_MODULES") or WEB / "node_modules")


def litertjs_version() -> str | None:
    try:
        return json.loads((node_modules() / "@litertjs" / "core" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def missing_message() -> str:
    return ("LiteRT.js is not installed (web/node_modules/@litertjs/core): run `npm ci` in web/ "
            "(scripts/run.sh and scripts/test.sh do).")


def _sources() -> dict[str, Path]:
    nm = node_modules() / "@litertjs"
    src = {"lib/core/index.js": nm / "core" / "dist" / "index.js",
           "lib/wasm-utils/index.js": nm / "wasm-utils" / "dist" / "index.js",
           "runner.js": TEMPLATES / "runner.js"}
    for b in WASM_BUILDS:
        for ext in ("js", "wasm"):
            src[f"wasm/{b}.{ext}"] = nm / "core" / "wasm" / f"{b}.{ext}"
    return src


def available() -> bool:
    return all(p.is_file() for p in _sources().values())


def assets_dir(cache_root: str | Path | None = None) -> Path:
    """The served layout, made once per LiteRT.js version and runner (hard links where possible).

    Raises UnsupportedCombination (one line) when the npm packages are not installed.
    """
    src = _sources()
    if not all(p.is_file() for p in src.values()):
        raise UnsupportedCombination(missing_message())
    from ..store import Store
    runner = src["runner.js"].read_bytes()
    device = (TEMPLATES / "device.html").read_text().replace("__IMPORTMAP__", import_map_tag())
    key = hashlib.sha256((litertjs_version() or "?").encode() + runner + device.encode()
                         + json.dumps(IMPORT_MAP).encode()).hexdigest()[:16]
    out = Store(cache_root).root / "litertjs" / key
    if (out / ".complete").is_file():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, p in src.items():
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, dst)
        except OSError:
            shutil.copyfile(p, dst)
    (tmp / "index.html").write_text(device)
    (tmp / ".complete").write_text(litertjs_version() or "")
    try:
        os.replace(tmp, out)
    except OSError:                      # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def import_map_tag(prefix: str = "./") -> str:
    imports = {k: prefix + v.removeprefix("./") for k, v in IMPORT_MAP["imports"].items()}
    return f'<script type="importmap">{json.dumps({"imports": imports})}</script>'


SERVED_CELL_FILES = ("manifest.json", "model.tflite", "inputs.json")


def serve_cell(cell: Path, cache_root: str | Path | None = None) -> str:
    """Put a cell folder where the component serves it (hard links: the server resolves symlinks
    and refuses what leaves its root); returns its path relative to the component's page."""
    root = assets_dir(cache_root)
    dst = root / "cells" / Path(cell).name
    if not (dst / "inputs.json").is_file():
        tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in SERVED_CELL_FILES:
            try:
                os.link(Path(cell) / name, tmp / name)
            except FileExistsError:
                pass
            except OSError:
                shutil.copyfile(Path(cell) / name, tmp / name)
        try:
            os.replace(tmp, dst)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return f"cells/{dst.name}/"
