"""Content-addressed results on disk: the same model bytes with the same settings are never redone.

Layout under ``config.cache_dir()``:
  models/<sha256>/          the model as uploaded (+ its one-time SavedModel export)
  samples/<key>.npz         sample inputs actually used
  reports/<key>.json        prepared references and cell reports
  tflite/<key>.tflite       converted models, with <key>.json (calls, warnings, log)
Every key includes a fingerprint of the package's source (``code_fingerprint``), the TensorFlow and
LiteRT versions; every stored record carries the UTC time it was made (``created_at``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from .config import cache_dir

PACKAGE_DIR = Path(__file__).resolve().parent


def code_fingerprint(package_dir: str | Path = PACKAGE_DIR) -> str:
    """sha256 over the package's source files (names and bytes): any change to the code that
    makes results (a recipe, a route, a metric) gives new keys, so old results are never served."""
    h = hashlib.sha256()
    for f in sorted(Path(package_dir).rglob("*.py")):
        h.update(f.relative_to(package_dir).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


CODE_FINGERPRINT = code_fingerprint()
VERSION_SALT = (f"tflite_lab code-{CODE_FINGERPRINT} tf-{version('tensorflow')} "
                f"litert-{version('ai-edge-litert')}")


def now_utc() -> str:
    """When a result was made, as stored with it (ISO 8601, UTC, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_npz(path: str | Path) -> dict:
    """The arrays of a stored .npz (never pickles)."""
    import numpy as np
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def key_of(**parts) -> str:
    blob = json.dumps({**parts, "_": VERSION_SALT}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else cache_dir()

    def path(self, kind: str, key: str, suffix: str) -> Path:
        p = self.root / kind / f"{key}{suffix}"
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def get_json(self, kind: str, key: str) -> dict | None:
        p = self.path(kind, key, ".json")
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def put_json(self, kind: str, key: str, obj) -> None:
        self.put_bytes(kind, key, ".json", json.dumps(obj).encode())

    def put_bytes(self, kind: str, key: str, suffix: str, data: bytes) -> Path:
        p = self.path(kind, key, suffix)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, p)   # atomic: concurrent readers see all or nothing
        return p
