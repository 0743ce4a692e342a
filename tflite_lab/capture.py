"""Capture what TensorFlow's C++ side and Keras print, at the file-descriptor level.

The converter writes "fully_quantize: 0, ..." straight to fd 1 and Keras' export prints to
sys.stdout; both would corrupt ``--json`` output and belong in the converter log instead.
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager


class Captured:
    text = ""


@contextmanager
def capture_output():
    cap = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", "replace")
