"""Try it: one input (a sample, a photo) through the original, the server's .tflite and LiteRT.js in
Chromium; class names from a file. Every output is recomputed here from the model files themselves."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from lab_helpers import ROOT, run_cli

pytestmark = pytest.mark.slow
SAMPLES = ROOT / "sample_models"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits CNN converted by the CLI (keras route, float): its report and prepared samples."""
    from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    src = source_json(source_from_path(SAMPLES / "digits_cnn.keras"))
    off = BenchSpec(enabled=False)
    prepared = prepare(src, SampleSpec(path=str(SAMPLES / "digits_cnn.samples.npz"), count=16), off)
    return src, prepared, run_cell(prepared, "keras", "none", bench=off)


def _png(w: int, h: int, color=(200, 30, 30)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def test_class_names_one_per_line_and_every_bad_file_says_why():
    from tflite_lab.errors import SourceError
    from tflite_lab.tryit import load_class_names, prediction
    assert load_class_names(b"\xef\xbb\xbfcat\r\ndog \nbird\n\n") == ["cat", "dog", "bird"]      # BOM, CRLF, trailing blanks
    for bad, why in ((b"", "empty"), (b"a\n\nb", "empty line (2)"), (b"\xff\xfe\x00a", "not UTF-8"),
                     (b"a\x00b", "binary"), (b"x\n" * 100_001, "more than")):
        with pytest.raises(SourceError, match=why.replace("(", r"\(").replace(")", r"\)")):
            load_class_names(bad, "names.txt")
    p = prediction(np.array([[0.1, np.nan, 0.7]]), ["a", "b"])       # two names for three classes
    assert [t["index"] for t in p["top"]] == [2, 0, 1] and p["top"][0]["name"] == "2" and p["nonfinite"] == 1
    assert "2 class names given, but this output has 3 classes" in p["note"]
    p = prediction(np.array([[0.1, 0.2, 0.7]]), ["a", "b", "c"])
    assert [(t["name"], t["score"]) for t in p["top"]] == [("c", 0.7), ("b", 0.2), ("a", 0.1)]
    assert prediction(np.arange(12.0).reshape(1, 12))["kind"] == "classes"
    v = prediction(np.arange(12.0).reshape(1, 3, 4))
    assert v["kind"] == "values" and v["values"] == list(range(8)) and v["more"] == 4


def test_cli_keeps_class_names_with_the_run_and_refuses_a_bad_file(tmp_path):
    from tflite_lab.history import History
    names = tmp_path / "digits.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    r = run_cli("convert", SAMPLES / "digits_cnn.keras", "--num-samples", 4, "--no-latency", "--route", "keras",
                "--class-names", names, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    with History() as h:
        run = h.get(json.loads(r.stdout)["run_id"])
    assert run["extra"]["class_names"] == {"file": "digits.txt", "names": [f"digit {i}" for i in range(10)]}
    names.write_bytes(b"a\n\nb\n")
    r = run_cli("convert", SAMPLES / "digits_cnn.keras", "--class-names", names)
    assert r.returncode == 2 and "empty line (2)" in r.stderr and "Traceback" not in r.stderr


def test_a_sample_through_original_server_tflite_and_litertjs_agrees_with_each_computed_here(digits):
    import keras
    from ai_edge_litert.interpreter import Interpreter
    from tflite_lab.targets import TargetInput
    from tflite_lab.targets.browser import run_browser
    from tflite_lab.tryit import one_sample, predictions, save_inputs, try_job
    src, prepared, report = digits
    arrays = one_sample(prepared["samples_path"], 5)
    x = np.load(SAMPLES / "digits_cnn.samples.npz")["image"][5:6]
    assert np.array_equal(arrays["image"], x)
    path = save_inputs(arrays)
    r = try_job(report["tflite_path"], path, prepared["signature"], src)
    want = keras.saving.load_model(SAMPLES / "digits_cnn.keras").predict(x, verbose=0)
    assert np.allclose(np.asarray(r["original"]["probs"]), want, atol=1e-6)
    it = Interpreter(model_path=report["tflite_path"])
    d = it.get_input_details()[0]
    it.resize_tensor_input(d["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(d["index"], x.astype(np.float32))
    it.invoke()
    lite = it.get_tensor(it.get_output_details()[0]["index"])
    assert np.allclose(np.asarray(r["tflite"]["probs"]), lite, atol=1e-7)
    assert r["browser"]["refusal"] is None and r["browser"]["served"]
    # The same one-sample folder in LiteRT.js (headless Chromium): the third column.
    t = run_browser(TargetInput(report["tflite_path"], path, None, prepared["signature"]))
    assert t.runs, t.error
    got = np.load(t.figures["outputs_path"])["probs"]
    assert float(np.max(np.abs(got - lite))) <= 1e-5
    top = [predictions({"probs": y}, [f"d{i}" for i in range(10)])["probs"]["top"][0]["name"]
           for y in (want, lite, got)]
    assert top[0] == top[1] == top[2] == f"d{int(np.argmax(want))}"


def test_a_photo_becomes_the_image_input_in_the_samples_range_and_bad_images_say_why(digits):
    from tflite_lab.config import Limits
    from tflite_lab.errors import SampleError
    from tflite_lab.tryit import image_sample
    _, prepared, _ = digits
    arrays, how = image_sample(_png(40, 30), "red.png", prepared["signature"], prepared["samples_path"])
    x = arrays["image"]
    assert x.shape == (1, 8, 8, 1) and x.dtype == np.float32
    lo, hi = (float(v) for v in (np.load(prepared["samples_path"])["image"].min(), np.load(prepared["samples_path"])["image"].max()))
    grey = (0.299 * 200 + 0.587 * 30 + 0.114 * 30) / 255.0                     # PIL's L conversion
    assert np.allclose(x, lo + grey * (hi - lo), atol=1 / 255)
    assert "8x8, grey" in how and f"[{lo:.4g}, {hi:.4g}]" in how
    with pytest.raises(SampleError, match="cannot be decoded"):
        image_sample(b"\x89PNG\r\n\x1a\nnot really", "bad.png", prepared["signature"], prepared["samples_path"])
    with pytest.raises(SampleError, match="more than the limit"):
        image_sample(_png(3000, 3000), "big.png", prepared["signature"], prepared["samples_path"],
                     Limits.from_env().__class__(**{**Limits.from_env().__dict__, "max_image_pixels": 1_000_000}))
