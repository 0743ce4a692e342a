"""Hostile uploads through the pages: a clear one-line message, no code run, and the app keeps working."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from apptest_helpers import assert_clean, convert, metrics, texts, upload_model


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A .keras whose Lambda would create a marker, and a SavedModel zip that writes a file."""
    d = tmp_path_factory.mktemp("hostile")
    marker = d / "PWNED"
    code = f"""
import keras, tensorflow as tf
x = keras.Input((3,), name="x")
y = keras.layers.Lambda(lambda t: (open(r"{marker}", "w").close(), t)[1])(x)
keras.Model(x, keras.layers.Dense(2)(y)).save(r"{d}/lambda.keras")
class W(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        tf.io.write_file(r"{marker}", "owned")
        return {{"y": x * 2.0}}
w = W()
tf.saved_model.save(w, r"{d}/writer", signatures={{"serving_default": w.serve}})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if marker.exists():
        marker.unlink()      # building the Lambda model may have traced it once
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted((d / "writer").rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(d / "writer"))
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("saved_model.pb", b"\x08\x01")
        zf.writestr("../../escaped.txt", "outside")
    return {"lambda": (d / "lambda.keras").read_bytes(), "writer": buf.getvalue(), "slip": slip.getvalue(),
            "marker": marker}


@pytest.mark.parametrize("name,filename,fragment", [
    ("lambda", "lambda.keras", "Lambda"),
    ("writer", "writer.zip", "WriteFile ("),
    ("slip", "slip.zip", "outside the archive folder"),
])
def test_hostile_model_upload_is_refused_then_the_app_works(app, hostile, name, filename, fragment):
    upload_model(app, filename, hostile[name])
    assert_clean(app)
    errors = texts(app.error)
    assert len(errors) == 1 and fragment in errors[0] and "\n" not in errors[0], errors
    assert app.session_state["lab_model"] is None
    assert not hostile["marker"].exists()
    # The next user action still works: a real model converts and passes.
    app.file_uploader(key="model_upload").clear().run()
    upload_model(app, "digits_cnn.keras")
    convert(app)
    assert_clean(app)
    assert metrics(app)["Verdict"] == "PASS"
    assert not hostile["marker"].exists()


def test_pickled_samples_upload_is_refused(digits, tmp_path):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    digits.radio[0].set_value("upload").run()
    digits.file_uploader(key="samples_upload").upload("evil.npy", buf.getvalue()).run()
    digits.button(key="check_samples").click().run()
    assert_clean(digits)
    errors = texts(digits.error)
    assert len(errors) == 1 and "pickled" in errors[0]


@pytest.fixture(scope="module")
def canary_models(tmp_path_factory):
    """A SavedModel that restores a foreign checkpoint holding a secret, and an .h5 whose kernel is
    stored in the secret file (both proven armed in tests/unit/test_graph_policy.py)."""
    import secrets
    d = tmp_path_factory.mktemp("canary")
    secret = "canary-" + secrets.token_hex(12)
    (d / "secret.txt").write_text(secret)
    code = f"""
import h5py, keras, numpy as np, tensorflow as tf
tf.train.Checkpoint(v=tf.Variable({secret!r})).write(r"{d}/foreign/ckpt")
m = tf.Module()
m.serve = tf.function(lambda x: {{"y": x * tf.cast(tf.strings.length(tf.raw_ops.RestoreV2(
    prefix=r"{d}/foreign/ckpt", tensor_names=["v/.ATTRIBUTES/VARIABLE_VALUE"], shape_and_slices=[""],
    dtypes=[tf.string])[0]), tf.float32)}}, input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
tf.saved_model.save(m, r"{d}/restore", signatures={{"serving_default": m.serve}})
keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")]).save(r"{d}/ext.h5")
with h5py.File(r"{d}/ext.h5", "r+") as f:
    names = []
    f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) and "kernel" in k else None)
    del f[names[0]]
    f.create_dataset(names[0], shape=({len(secret)},), dtype=np.uint8, external=[(r"{d}/secret.txt", 0, {len(secret)})])
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted((d / "restore").rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(d / "restore"))
    return {"restore.zip": buf.getvalue(), "ext.h5": (d / "ext.h5").read_bytes(), "secret": secret}


@pytest.mark.parametrize("filename,fragments", [
    ("restore.zip", ["restore.zip is refused before anything runs", "RestoreV2 (", "reads files"]),
    ("ext.h5", ["ext.h5 is refused", "stored in external file", "reads files"]),
])
def test_models_reading_host_files_are_refused_on_the_model_page(app, canary_models, filename, fragments):
    upload_model(app, filename, canary_models[filename])
    assert_clean(app)
    errors = texts(app.error)
    assert len(errors) == 1 and "\n" not in errors[0], errors
    for frag in fragments:
        assert frag in errors[0], errors[0]
    assert app.session_state["lab_model"] is None
    page = " ".join(texts(app.error) + texts(app.markdown) + texts(app.caption) + texts(app.info) + texts(app.warning))
    assert canary_models["secret"] not in page
