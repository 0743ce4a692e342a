"""The one error family of TFLite Lab.

Every error a user can cause carries a one-line ``user_message`` (what happened, with the actual
values, then what to do) and an optional ``detail`` (the long story: a converter log, a traceback
from a worker) for the operator. The CLI maps each class to an exit code; pages show the message.
"""
from __future__ import annotations

import re


# Names that keep their capital inside a sentence although they look like ordinary words.
PROPER_NAMES = frozenset({"Keras", "Ray", "Python", "NumPy", "Flex", "Select", "Streamlit", "Linux", "Chromium",
                          "LiteRT", "TensorFlow", "TFLite", "TFLM", "SavedModel", "I"})


def mid_sentence(text, *, drop_period: bool = False) -> str:
    """``text`` (a message, a name) as it reads inside another sentence: "LiteRT cannot prepare the
    converted .tflite", "Latency not measured: the benchmark failed". Its first letter is lower-cased
    unless its first word is a proper name or an acronym or identifier (LiteRT, TFLM, Conv2D,
    MobileNetV2.keras, 'x'). ``drop_period``: without its final period (inside parentheses).
    """
    s = " ".join(str(text).split())
    if drop_period and s.endswith(".") and not s.endswith(".."):
        s = s[:-1]
    m = re.match(r"[A-Za-z][\w'./-]*", s)
    if not m:
        return s
    word = m.group(0).rstrip(".")
    plain = word.replace("'", "")
    if (word in PROPER_NAMES or not plain.isalpha() or not word[0].isupper()
            or any(c.isupper() for c in word[1:])):
        return s
    return s[0].lower() + s[1:]


def wrapped(prefix: str, message, suffix: str = "") -> str:
    """``prefix`` + a whole message made part of the sentence (see ``mid_sentence``) + ``suffix``;
    a message inside parentheses loses its final period (``suffix`` starting with ")")."""
    return f"{prefix}{mid_sentence(message, drop_period=suffix.startswith(')'))}{suffix}"


class TFLiteLabError(Exception):
    """Base of all errors meant for a user. ``exit_code`` follows the CLI contract."""

    exit_code = 2

    def __init__(self, user_message: str, *, detail: str = ""):
        # One line, always: multi-line messages break the CLI contract and the page layout.
        self.user_message = " ".join(str(user_message).split())
        self.detail = detail
        super().__init__(self.user_message)

    def to_dict(self) -> dict:
        return {"kind": type(self).__name__, "message": self.user_message, "detail": self.detail}

    @staticmethod
    def from_dict(d: dict) -> "TFLiteLabError":
        cls = ERROR_CLASSES.get(d.get("kind", ""), TFLiteLabError)
        return cls(d.get("message", ""), detail=d.get("detail", ""))


class SourceError(TFLiteLabError):
    """The model file is unreadable, of the wrong format, unsafe, or too large."""


class SignatureError(TFLiteLabError):
    """The model's inputs/outputs cannot be derived or are out of bounds."""


class SampleError(TFLiteLabError):
    """Sample inputs are unreadable or do not match the signature."""


class UnsupportedCombination(TFLiteLabError):
    """A route or recipe cannot apply to this source; refused before any work."""


class ConversionError(TFLiteLabError):
    """The converter itself failed, or produced a model LiteRT cannot run."""

    exit_code = 3


class WorkerError(TFLiteLabError):
    """A worker process crashed, hung past its time limit or ran out of memory."""

    exit_code = 3


class Cancelled(TFLiteLabError):
    """The user cancelled a running job; its worker was stopped and nothing it made is kept."""

    exit_code = 130


class HistoryError(TFLiteLabError):
    """The run history database cannot be read or written (it is never silently recreated)."""


ERROR_CLASSES = {c.__name__: c for c in (TFLiteLabError, SourceError, SignatureError, SampleError,
                                           UnsupportedCombination, ConversionError, WorkerError, Cancelled,
                                           HistoryError)}
