"""Hostile inputs: a corpus generated here (nothing downloaded) of empty, random, truncated,
malicious and oversized files, fed to the CLI and to the library.

Every case must end in exit 2 with one ``error: ...`` line naming what was wrong, with no traceback;
no payload may run (each writes a marker file if it does), and nothing may be written outside the
store and the job workspace (the run's cwd and TMPDIR stay empty, the corpus folder is unchanged).
"""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lab_helpers import SAMPLES, run_cli, zip_folder
from tflite_lab.config import Limits
from tflite_lab.errors import SampleError, SourceError
from tflite_lab.samples import load_samples, load_samples_path
from tflite_lab.sources import load_source
from tflite_lab.types import Signature, TensorInfo

# Builds the TensorFlow-made part of the corpus in a subprocess (keeps TF out of pytest), then
# proves each payload is armed: loaded the unsafe way, it does write its marker.
BUILD = r'''
import json, os, sys
out, marker, armed = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ["TLAB_MARKER"] = os.path.join(armed, "build-time")   # building may trace the code
import numpy as np, keras, tensorflow as tf, tf_keras
src = f'lambda x: (open(__import__("os").environ.get("TLAB_MARKER", {marker!r}), "a").close(), x)[1]'

x = keras.Input((5,), name="x")
y = keras.layers.Lambda(eval(src), output_shape=(5,), name="payload")(x)
m = keras.Model(x, keras.layers.Dense(3, name="probs")(y))
m.save(f"{out}/lambda.keras"); m.save(f"{out}/lambda.h5")

lx = tf_keras.Input((5,), name="x")
ly = tf_keras.layers.Lambda(eval(src), name="payload")(lx)
tf_keras.Model(lx, tf_keras.layers.Dense(3)(ly)).save(f"{out}/legacy_lambda.h5")

def file_module(kind, path):
    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            if kind == "read":
                return {"y": x * tf.cast(tf.strings.length(tf.io.read_file(path)), tf.float32)}
            tf.io.write_file(path, tf.strings.as_string(tf.reduce_sum(x)))
            return {"y": x + 1.0}
    return M()
for kind, name in (("read", "reader_sm"), ("write", "writer_sm")):
    for folder, path in ((f"{out}/{name}", marker), (f"{armed}/{name}", f"{armed}/{name}.marker")):
        mod = file_module(kind, path)
        tf.saved_model.save(mod, folder, signatures={"serving_default": mod.serve})

g = keras.Input((60000, 60000), name="huge")
keras.Model(g, keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling1D()(g))).save(f"{out}/giant.keras")

# Armed: unsafe loads run the payloads.
res = {}
ones = np.ones((1, 5), "float32")
for name in ("lambda.keras", "lambda.h5"):
    os.environ["TLAB_MARKER"] = os.path.join(armed, name)
    keras.models.load_model(f"{out}/{name}", safe_mode=False, compile=False)(ones)
    res[name] = os.path.exists(os.environ["TLAB_MARKER"])
os.environ["TLAB_MARKER"] = os.path.join(armed, "legacy_lambda.h5")
tf_keras.models.load_model(f"{out}/legacy_lambda.h5", safe_mode=True)(ones)   # tf_keras runs it even so
res["legacy_lambda.h5"] = os.path.exists(os.environ["TLAB_MARKER"])
tf.saved_model.load(f"{armed}/writer_sm").signatures["serving_default"](x=tf.ones((1, 3)))
res["writer_sm"] = os.path.exists(f"{armed}/writer_sm.marker")
print(json.dumps(res))
'''


class _OpenOnUnpickle:
    """Unpickling this calls open(path, "a"): a pickle that creates a marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "a"))


def _sm_zip(dest: Path, *extra) -> Path:
    """A zip that looks like a SavedModel (saved_model.pb at the root) plus hostile entries."""
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr("saved_model.pb", b"\x08\x01")
        for info, data in extra:
            zf.writestr(info, data)
    return dest


def _zero_bomb(dest: Path, member: str, mb: int, first: dict | None = None) -> Path:
    """``mb`` MB of zeros deflated into ``member``, streamed so no big buffer is built."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in (first or {}).items():
            zf.writestr(name, data)
        with zf.open(member, "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(mb):
                f.write(chunk)
    return dest


def _half(src: Path, dest: Path) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_models):
    """The hostile files (``c``), the marker folder their payloads aim at (``markers``, must stay
    empty) and the proof that the payloads are armed."""
    c = tmp_path_factory.mktemp("corpus")
    markers = tmp_path_factory.mktemp("markers")
    armed = tmp_path_factory.mktemp("armed")
    marker = markers / "PAYLOAD_RAN"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TLAB_MARKER", None)
    proc = subprocess.run([sys.executable, "-c", BUILD, str(c), str(marker), str(armed)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    armed_result = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ("reader_sm", "writer_sm"):
        zip_folder(c / kind, c / f"{kind}.zip")

    rng = np.random.default_rng(1234)
    (c / "empty.keras").write_bytes(b"")
    for ext in ("keras", "h5", "zip", "tflite"):
        (c / f"random.{ext}").write_bytes(rng.bytes(8192))
    (c / "table.h5").write_text("age,height,weight\n31,180,75\n45,165,60\n")
    _half(SAMPLES / "digits_cnn.keras", c / "half.keras")
    _half(SAMPLES / "breast_cancer_mlp.h5", c / "half.h5")
    out = c / "converted"
    conv = run_cli("convert", tiny_models / "single.keras", "--no-latency", "--out", out)
    assert conv.returncode == 0, conv.stderr
    _half(out / "model.tflite", c / "half.tflite")

    # Zip slip and friends, each next to a saved_model.pb so the archive is unpacked.
    _sm_zip(c / "slip.zip", ("../" * 30 + str(markers / "slip.txt").lstrip("/"), b"owned"))
    _sm_zip(c / "abs.zip", (zipfile.ZipInfo(str(markers / "abs.txt")), b"owned"))
    link = zipfile.ZipInfo("variables/variables.index")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    _sm_zip(c / "link.zip", (link, str(markers / "link-target")))
    _zero_bomb(c / "bomb.zip", "variables/variables.data-00000-of-00001", 1024, {"saved_model.pb": b"\x08\x01"})
    _zero_bomb(c / "bomb16.zip", "variables/variables.data-00000-of-00001", 16, {"saved_model.pb": b"\x08\x01"})
    with zipfile.ZipFile(tiny_models / "single.keras") as single:     # Keras inflates .keras itself
        keep = {n: single.read(n) for n in single.namelist() if n != "model.weights.h5"}
    _zero_bomb(c / "bomb.keras", "model.weights.h5", 256, keep)
    with zipfile.ZipFile(c / "nosm.zip", "w") as zf:
        zf.writestr("model/weights.bin", b"\0" * 64)
        zf.writestr("README.txt", "not a model")

    # A .keras whose config names a layer class from a non-Keras module (importing it runs code).
    with zipfile.ZipFile(tiny_models / "single.keras") as zin, zipfile.ZipFile(c / "custom.keras", "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n == "config.json":
                cfg = json.loads(data)
                dense = next(layer for layer in cfg["config"]["layers"] if layer["class_name"] == "Dense")
                dense.update(module="tlab_payload", registered_name="tlab_payload>Dense")
                data = json.dumps(cfg).encode()
            zout.writestr(n, data)

    # Samples.
    np.save(c / "pickled.npy", np.array([_OpenOnUnpickle(marker), 1.0], dtype=object), allow_pickle=True)
    np.save(armed / "pickled.npy", np.array([_OpenOnUnpickle(armed / "pickle.marker")], dtype=object),
            allow_pickle=True)
    (c / "raw_pickle.npy").write_bytes(pickle.dumps(_OpenOnUnpickle(marker)))
    np.save(c / "wrong_shape.npy", np.zeros((4, 7), np.float32))
    (c / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(3000))

    assert not any(markers.iterdir()), "building the corpus must not fire a payload"
    return {"dir": c, "markers": markers, "armed": armed, "armed_result": armed_result, "tiny": tiny_models}


def _snapshot(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs for p in d.rglob("*")}


def run_hostile(corpus, tmp_path, *args, env=None):
    """Run the CLI from an empty cwd with a private TMPDIR; assert nothing landed outside the store."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmpdir"
    cwd.mkdir()
    tmp.mkdir()
    before = _snapshot(corpus["dir"], corpus["markers"], corpus["tiny"])
    proc = run_cli(*args, cwd=cwd, env={"TMPDIR": str(tmp), **(env or {})})
    assert not list(cwd.iterdir()), f"files appeared in the cwd: {list(cwd.iterdir())}"
    assert not list(tmp.iterdir()), f"left in TMPDIR (job workspace not removed?): {list(tmp.iterdir())}"
    assert _snapshot(corpus["dir"], corpus["markers"], corpus["tiny"]) == before
    assert not any(corpus["markers"].iterdir()), f"a payload ran: {list(corpus['markers'].iterdir())}"
    return proc


def assert_one_line_error(proc, *fragments, code=2) -> str:
    """Exit ``code``, no traceback, nothing on stdout, and stderr exactly one ``error:`` line holding
    the fragments (progress lines appear only on a terminal)."""
    both = proc.stdout + proc.stderr
    assert proc.returncode == code, both
    assert "Traceback" not in both, both
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag.lower() in lines[0].lower(), f"{frag!r} not in {lines[0]!r}"
    return lines[0]


# ---- the corpus through the CLI ----

NOT_A_MODEL = "not a model; expected a .keras, .h5, zipped SavedModel or .tflite model"

# name -> (model, extra args (strings; "{c}" and "{tiny}" are filled in), env, fragments)
CLI_CASES = {
    "empty": ("empty.keras", [], {}, ["empty.keras is empty", NOT_A_MODEL]),
    "random-keras": ("random.keras", [], {}, ["random.keras is", NOT_A_MODEL]),
    "random-h5": ("random.h5", [], {}, ["random.h5 is", NOT_A_MODEL]),
    "random-zip": ("random.zip", [], {}, ["random.zip is", NOT_A_MODEL]),
    "random-tflite": ("random.tflite", [], {}, ["random.tflite is", NOT_A_MODEL]),
    "csv-as-h5": ("table.h5", [], {}, ["table.h5 is CSV text ('age,height,weight')", NOT_A_MODEL]),
    "truncated-keras": ("half.keras", [], {}, ["half.keras is a truncated or corrupt zip archive"]),
    "truncated-h5": ("half.h5", [], {}, ["half.h5 is a truncated or corrupt h5 file"]),
    "truncated-tflite": ("half.tflite", ["--reference", "{tiny}/single.keras"], {},
                         ["truncated or corrupt .tflite flatbuffer"]),
    "truncated-tflite-alone": ("half.tflite", [], {}, ["truncated or corrupt .tflite flatbuffer"]),
    "zip-slip": ("slip.zip", [], {}, ["entry '../../", "slip.txt' points outside the archive folder", "refused"]),
    "zip-absolute": ("abs.zip", [], {}, ["abs.txt", "absolute or windows path", "refused"]),
    "zip-symlink": ("link.zip", [], {}, ["'variables/variables.index' is a symbolic link", "refused"]),
    "zip-bomb-ratio": ("bomb.zip", [], {}, ["bomb.zip: entry 'variables/variables.data-00000-of-00001' expands", "x (limit 200x)", "zip bomb"]),
    "zip-bomb-size": ("bomb16.zip", [], {"TFLITE_LAB_UNZIP_MB": "8"},
                      ["bomb16.zip would expand to 16 MB", "limit of 8 MB", "zip bomb"]),
    "zip-bomb-keras": ("bomb.keras", [], {}, ["bomb.keras: entry 'model.weights.h5' expands", "zip bomb"]),
    "zip-without-savedmodel": ("nosm.zip", [], {}, ["nosm.zip is a zip archive without a SavedModel",
                                                     "readme.txt"]),
    "lambda-keras": ("lambda.keras", [], {}, ["lambda.keras contains Lambda 'payload'", "Python code",
                                              "never run"]),
    "lambda-h5": ("lambda.h5", [], {}, ["lambda.h5 contains Lambda 'payload'", "Python code"]),
    "lambda-legacy-h5": ("legacy_lambda.h5", [], {}, ["legacy_lambda.h5 contains Lambda 'payload'"]),
    "custom-object": ("custom.keras", [], {}, ["custom.keras uses custom objects", "tlab_payload"]),
    "savedmodel-readfile": ("reader_sm.zip", [], {}, ["reader_sm.zip is refused before anything runs", "ReadFile (", "reads files"]),
    "savedmodel-writefile": ("writer_sm.zip", [], {}, ["writer_sm.zip is refused", "WriteFile (", "writes files"]),
    "savedmodel-writefile-folder": ("writer_sm", [], {}, ["writer_sm is refused", "WriteFile (", "writes files"]),
    "giant-input": ("giant.keras", [], {}, ["Input 'huge' declares (?, 60000, 60000) float32",
                                           "13,733 MB per sample", "limit of 256 MB", "before allocating"]),
    "samples-pickled-npy": ("{tiny}/single.keras", ["--samples", "{c}/pickled.npy"], {},
                            ["pickled.npy holds pickled Python objects", "never loaded"]),
    "samples-raw-pickle": ("{tiny}/single.keras", ["--samples", "{c}/raw_pickle.npy"], {},
                           ["raw_pickle.npy is a Python pickle", "never loaded"]),
    "samples-wrong-shape": ("{tiny}/single.keras", ["--samples", "{c}/wrong_shape.npy"], {},
                            ["input 'x'", "shape (4, 7)", "expects (?, 5)"]),
    "samples-corrupt-image": (str(SAMPLES / "mobilenet_v2_small.keras"), ["--samples", "{c}/corrupt.png"], {},
                              ["Image corrupt.png cannot be decoded", "corrupt or not an image"]),
}


def _fill(s: str, corpus) -> str:
    s = s.format(c=corpus["dir"], tiny=corpus["tiny"])
    return s if os.path.isabs(s) else str(corpus["dir"] / s)


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_refuses_hostile_input(corpus, tmp_path, case):
    model, extra, env, fragments = CLI_CASES[case]
    args = ["convert", _fill(model, corpus), *(_fill(a, corpus) if "{" in a else a for a in extra), "--no-latency"]
    proc = run_hostile(corpus, tmp_path, *args, env=env)
    assert_one_line_error(proc, *fragments)


@pytest.mark.parametrize("name, fragments", [
    ("random.h5", ["random.h5 is", NOT_A_MODEL]),                      # refused before any worker
    ("lambda.keras", ["lambda.keras contains Lambda 'payload'"]),      # refused inside the worker
    ("writer_sm.zip", ["writer_sm.zip is refused", "WriteFile (", "writes files"]),
    ("half.tflite", ["truncated or corrupt .tflite flatbuffer"]),
    ("slip.zip", ["points outside the archive folder"]),
])
def test_inspect_gives_the_same_one_line_error(corpus, tmp_path, name, fragments):
    proc = run_hostile(corpus, tmp_path, "inspect", corpus["dir"] / name)
    assert_one_line_error(proc, *fragments)


def test_truncated_tflite_message_names_the_file(corpus, tmp_path):
    proc = run_hostile(corpus, tmp_path, "inspect", corpus["dir"] / "half.tflite")
    line = assert_one_line_error(proc, "truncated or corrupt")
    assert "half.tflite" in line and "(error)" not in line


def test_payloads_are_armed(corpus, tmp_path):
    """The corpus is meaningful: loaded the unsafe way, each payload writes its marker."""
    assert corpus["armed_result"] == {"lambda.keras": True, "lambda.h5": True, "legacy_lambda.h5": True,
                                      "writer_sm": True}
    np.load(corpus["armed"] / "pickled.npy", allow_pickle=True)
    assert (corpus["armed"] / "pickle.marker").exists()


# ---- the same refusals at the library level (no subprocess) ----

def _sig(name: str, shape: tuple) -> Signature:
    return Signature((TensorInfo(name, shape, "float32", name),), (TensorInfo("out", (None, 3), "float32", "output_0"),))


LIB_SOURCE_CASES = {
    "empty.keras": "is empty",
    "random.keras": NOT_A_MODEL,
    "random.tflite": NOT_A_MODEL,
    "table.h5": "CSV text",
    "half.keras": "truncated or corrupt zip archive",
    "slip.zip": "points outside the archive folder",
    "abs.zip": "absolute or Windows path",
    "link.zip": "is a symbolic link",
    "bomb.zip": "zip bomb",
    "bomb.keras": "zip bomb",
    "nosm.zip": "without a SavedModel",
}


@pytest.mark.parametrize("name", list(LIB_SOURCE_CASES))
def test_load_source_refuses(corpus, tmp_path, name):
    store = tmp_path / "store"
    with pytest.raises(SourceError) as ei:
        load_source((corpus["dir"] / name).read_bytes(), name, store=store)
    assert LIB_SOURCE_CASES[name].lower() in ei.value.user_message.lower()
    assert "\n" not in ei.value.user_message
    assert not any(corpus["markers"].iterdir())
    leftovers = [p for p in store.rglob("*") if p.is_file()]
    assert leftovers == [], f"a refused upload left files in the store: {leftovers}"


def test_load_source_bomb_under_a_lowered_limit(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TFLITE_LAB_UNZIP_MB", "8")
    with pytest.raises(SourceError, match=r"would expand to 16 MB, more than the limit of 8 MB"):
        load_source((corpus["dir"] / "bomb16.zip").read_bytes(), "bomb16.zip", store=tmp_path)


def test_load_source_lying_zip_header_is_refused(tmp_path):
    """An entry whose headers claim 1,000 bytes but whose stream inflates to 16 MB."""
    path = _zero_bomb(tmp_path / "lying.zip", "variables/variables.data-00000-of-00001", 16,
                      {"saved_model.pb": b"\x08\x01"})
    data = bytearray(path.read_bytes())
    real = (16 << 20).to_bytes(4, "little")
    patched = 0
    # file_size sits at offset 22 of the local header and 24 of the central directory entry
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            if data[i + off:i + off + 4] == real:
                data[i + off:i + off + 4] = (1000).to_bytes(4, "little")
                patched += 1
            start = i + 4
    assert patched >= 1
    with pytest.raises(SourceError, match=r"is corrupt: entry '.*' cannot be read|expands past") as ei:
        load_source(bytes(data), "lying.zip", store=tmp_path / "store")
    assert "lying.zip" in ei.value.user_message
    assert sum(p.stat().st_size for p in (tmp_path / "store").rglob("*") if p.is_file()) < 2 << 20




def test_load_samples_refuses_pickles_without_unpickling(corpus):
    sig = _sig("x", (None, 5))
    with pytest.raises(SampleError, match="holds pickled Python objects; they are never loaded"):
        load_samples((corpus["dir"] / "pickled.npy").read_bytes(), "pickled.npy", sig)
    with pytest.raises(SampleError, match="is a Python pickle; pickles are never loaded"):
        load_samples((corpus["dir"] / "raw_pickle.npy").read_bytes(), "raw_pickle.npy", sig)
    assert not any(corpus["markers"].iterdir())


def test_load_samples_wrong_shape_names_input_and_both_shapes(corpus):
    with pytest.raises(SampleError) as ei:
        load_samples_path(corpus["dir"] / "wrong_shape.npy", _sig("x", (None, 5)))
    msg = ei.value.user_message
    assert "'x'" in msg and "(4, 7)" in msg and "(?, 5)" in msg


def test_load_samples_corrupt_image(corpus):
    sig = _sig("image", (None, 96, 96, 3))
    with pytest.raises(SampleError, match=r"Image corrupt.png cannot be decoded .*corrupt or not an image"):
        load_samples((corpus["dir"] / "corrupt.png").read_bytes(), "corrupt.png", sig)
    # one corrupt image among good ones is enough to refuse the folder
    folder = corpus["dir"] / "images"
    folder.mkdir(exist_ok=True)
    for f in sorted((SAMPLES / "mobilenet_v2_small.samples").iterdir())[:2]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "zz_bad.png").write_bytes((corpus["dir"] / "corrupt.png").read_bytes())
    with pytest.raises(SampleError, match="Image zz_bad.png cannot be decoded"):
        load_samples_path(folder, sig, Limits())


# ---- and the tool still works afterwards ----

@pytest.mark.slow
def test_normal_conversion_still_succeeds_after_the_corpus(corpus, tmp_path):
    proc = run_hostile(corpus, tmp_path, "convert", SAMPLES / "digits_cnn.keras", "--no-latency")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("saved_model-none: PASS"), proc.stdout
    assert not any(corpus["markers"].iterdir())
