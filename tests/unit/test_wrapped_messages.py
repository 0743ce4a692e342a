"""A message wrapped into another sentence reads as one sentence: no capital mid-sentence unless
the word is a name (LiteRT, TFLM, Conv2D), no double period inside parentheses."""
import pytest

from tflite_lab.errors import mid_sentence, wrapped


@pytest.mark.parametrize("text, expected", [
    ("The converted .tflite", "the converted .tflite"),
    ("Cannot read the file.", "cannot read the file."),
    ("LiteRT failed", "LiteRT failed"),
    ("TFLM has no hybrid kernels", "TFLM has no hybrid kernels"),
    ("Conv2D is missing", "Conv2D is missing"),
    ("MobileNetV2.keras is corrupt", "MobileNetV2.keras is corrupt"),
    ("I/O error", "I/O error"),
    ("'x' has shape (1, 2)", "'x' has shape (1, 2)"),
])
def test_mid_sentence(text, expected):
    assert mid_sentence(text) == expected


def test_wrapped_in_parentheses_drops_the_inner_period():
    assert wrapped("The file is corrupt (", "Bad magic number.", ").") == "The file is corrupt (bad magic number)."
    assert wrapped("Latency not measured: ", "The benchmark failed.") == "Latency not measured: the benchmark failed."

