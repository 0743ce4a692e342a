"""Helpers the unit tests import (conftest.py holds only fixtures: its module name is not unique)."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"


def run_cli(*args, timeout=600, cwd=None, env=None):
    """``python -m tflite_lab ...`` as a user runs it; returns the CompletedProcess."""
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "tflite_lab", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=e)


def zip_folder(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder))
    return dest


def build_models(script: str, folder: Path) -> Path:
    """Run a model-building script (``{d}``: the folder) in a fresh interpreter, so this process
    keeps TensorFlow unimported until a test needs it; returns the folder."""
    import os
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", script.format(d=folder)], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return folder


def fake_run(note: str = "", author=None, **kw) -> dict:
    """A run record as ``history.build_run`` makes one, without a conversion (for history and page tests);
    ``author`` a ``people.Person`` or None (recorded before sign-in)."""
    return {"kind": "convert", "origin": "dashboard", "model": {"filename": "m.keras", "sha256": "ab" * 32},
            "route": "saved_model", "recipe": "none", "verdict": "pass", "cell": "saved_model-none",
            "samples": {"description": "random", "count": 4, "sha256": None},
            "versions": {"tensorflow": None}, "host_cpu": "test CPU", "summary": {"max_abs_error": 1e-6},
            "note": note, "author": author.to_json() if author else None,
            "reports": [{"cell": "saved_model-none", "metrics": []}], **kw}
