"""Labels with the samples: every way they come in, bad labels refused in one line, task accuracy
(or MAE) in the report recomputed with numpy, and --min-accuracy-delta as a tolerance."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from lab_helpers import SAMPLES, run_cli
from tflite_lab.errors import SampleError
from tflite_lab.metrics import accuracy_check, accuracy_report, labels_fit
from tflite_lab.samples import load_labels_file, load_samples, load_samples_path
from tflite_lab.types import Signature, TensorInfo

VEC = Signature((TensorInfo("x", (None, 3), "float32"),), (TensorInfo("y", (None, 2), "float32"),))
IMG = Signature((TensorInfo("image", (None, 8, 8, 1), "float32"),), (TensorInfo("p", (None, 3), "float32"),))


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_key_csv_column_and_labels_file(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    s = load_samples(_npz(x=x, labels=np.array([0, 1, 1, 0])), "s.npz", VEC)
    assert list(s.arrays) == ["x"] and s.labels.tolist() == [0, 1, 1, 0]
    s = load_samples(_npz(x=x, target=np.array([1, 1, 0, 0])), "s.npz", VEC, labels_key="target")
    assert s.labels.tolist() == [1, 1, 0, 0]
    csv = b"a,b,c,labels\n1,2,3,1\n4,5,6,0\n"
    s = load_samples(csv, "s.csv", VEC)
    assert s.arrays["x"].shape == (2, 3) and s.labels.tolist() == [1, 0]
    (tmp_path / "l.csv").write_text("labels\n0\n1\n1\n0\n")
    np.save(tmp_path / "l.npy", np.array([3.5, 1.0, 2.0, 0.5]))
    assert load_labels_file(tmp_path / "l.csv", 4).tolist() == [0, 1, 1, 0]
    assert load_labels_file(tmp_path / "l.npy", 4).tolist() == [3.5, 1.0, 2.0, 0.5]


def test_class_named_image_subfolders_are_the_labels(tmp_path):
    for cls, n in (("cat", 2), ("dog", 1), ("eel", 2)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    s = load_samples_path(tmp_path / "imgs", IMG)
    assert s.count == 5 and s.class_names == ["cat", "dog", "eel"] and s.labels.tolist() == [0, 0, 1, 2, 2]


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 1]), "have 3 rows, but there are 4 samples"),
    (np.array(["a", "b", "c", "d"]), "text?"),
    (np.array([0.0, np.nan, 1.0, 1.0]), "NaN or inf"),
])
def test_bad_labels_are_one_line_errors(labels, message):
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(SampleError, match=message.replace("?", r"\?")) as e:
        load_samples(_npz(x=x, labels=labels), "s.npz", VEC)
    assert "\n" not in e.value.user_message


def test_labels_fit_accuracy_and_mae_recomputed():
    ref = {"p": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])}
    out = {"p": np.array([[0.4, 0.6], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])}
    labels = np.array([0, 1, 1, 1])
    acc = accuracy_report(ref, out, labels)
    want = lambda y: float(np.mean(y.argmax(1) == labels))  # noqa: E731
    assert acc["metric"] == "accuracy" and acc["original"] == want(ref["p"]) and acc["tflite"] == want(out["p"])
    assert acc["delta"] == pytest.approx(-0.25)
    assert not accuracy_check(acc, -0.1)["ok"] and accuracy_check(acc, -0.3)["ok"]
    reg = accuracy_report({"y": np.array([[1.0], [2.0]])}, {"y": np.array([[1.5], [2.0]])}, np.array([1.0, 3.0]))
    assert reg["metric"] == "mae" and reg["original"] == 0.5 and reg["tflite"] == 0.75
    assert accuracy_check(reg, -0.6)["ok"] and not accuracy_check(reg, -0.4)["ok"]    # MAE 50% worse
    with pytest.raises(SampleError, match="fit no output"):
        labels_fit(ref, np.array([0.5, 1.5, 2.5, 3.5]))


def test_cli_accuracy_on_the_bundled_labels_matches_litert(tmp_path):
    """The shipped digits samples carry their labels: the report's accuracy is the .tflite's, re-run here;
    a tolerance no conversion can meet (an accuracy gain of 0.5) fails, and the table says why."""
    from ai_edge_litert.interpreter import Interpreter
    out = tmp_path / "out"
    r = run_cli("convert", SAMPLES / "digits_cnn.keras", "--samples", SAMPLES / "digits_cnn.samples.npz",
                "--no-latency", "--no-history", "--min-accuracy-delta", "0.5", "--out", out)
    assert r.returncode == 1, r.stderr
    assert "accuracy on 64 labels (probs)" in r.stdout and "delta>=0.5 FAIL" in r.stdout
    acc = json.loads((out / "report.json").read_text())["accuracy"]
    z = np.load(SAMPLES / "digits_cnn.samples.npz")
    it = Interpreter(model_path=str(out / "model.tflite"))
    run = it.get_signature_runner()
    probs = np.concatenate([next(iter(run(image=z["image"][i:i + 1]).values())) for i in range(len(z["image"]))])
    assert acc["metric"] == "accuracy" and acc["output"] == "probs" and acc["num_labels"] == 64
    assert acc["tflite"] == pytest.approx(float(np.mean(probs.argmax(1) == z["labels"])))
    assert not acc["check"]["ok"] and acc["check"]["bound"] == 0.5
    assert np.load(out / "labels.npy").tolist() == z["labels"].tolist()


def test_cli_labels_of_the_wrong_length(tmp_path):
    """One line, exit 2 (the regression's MAE itself is checked in test_labels_fit_accuracy_and_mae_recomputed)."""
    np.save(tmp_path / "short.npy", np.zeros(10))
    r = run_cli("convert", SAMPLES / "diabetes_regressor_savedmodel.zip", "--samples",
                SAMPLES / "diabetes_regressor.samples.npy", "--labels", tmp_path / "short.npy", "--no-latency",
                "--no-history")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: Labels from short.npy have 10 rows, but there are 64 samples; give exactly one label per sample, "
        "in the same order."]
