"""Random samples that exercise the model: token ids over an Embedding's whole vocabulary, valid
padding masks, stated lengths for dynamic dims (never 1), --low/--high/--length when given, and a
verdict that says it was judged on random samples, with plain words where random values cannot mean
anything (token ids of a SavedModel whose vocabulary is unknown, noise images for a classifier).
Every model is built here; the drawn values are checked with plain numpy on samples.npz."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lab_helpers import run_cli

pytestmark = pytest.mark.slow

VOCAB = 500

BUILD = """
import sys, numpy as np, keras, tensorflow as tf
keras.utils.set_random_seed(0)
d = sys.argv[1]
# A GRU text classifier on token ids of any length: the Embedding declares the vocabulary.
tok = keras.Input((None,), dtype="int32", name="tokens")
h = keras.layers.Embedding(%(vocab)d, 8, name="embed")(tok)
h = keras.layers.GRU(8, name="gru")(h)
keras.Model(tok, keras.layers.Dense(3, activation="softmax", name="label")(h)).save(d + "/gru.keras")
# Token ids (through a Cast) and a padding mask fed as a mask keyword, a fixed length of 10.
ids = keras.Input((10,), dtype="int32", name="ids")
pad = keras.Input((10,), dtype="int32", name="attention")
e = keras.layers.Embedding(50, 4, name="vocab50")(keras.ops.cast(ids, "int64"))
pooled = keras.layers.GlobalAveragePooling1D(name="pool")(e, mask=keras.ops.cast(pad, "bool"))
keras.Model([ids, pad], keras.layers.Dense(2, name="score")(pooled)).save(d + "/masked.keras")
# A small CNN classifier of images: random values are noise to it.
img = keras.Input((16, 16, 3), name="image")
c = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(img))
keras.Model(img, keras.layers.Dense(5, activation="softmax", name="cls")(c)).save(d + "/cnn.keras")
# A SavedModel of token ids: a gather from a table; nothing in it says how large the vocabulary is.
class Tok(tf.Module):
    def __init__(self):
        self.table = tf.Variable(np.random.default_rng(0).normal(size=(1000, 4)).astype("float32"))
    @tf.function(input_signature=[tf.TensorSpec([None, 12], tf.int32, name="input_ids")])
    def serve(self, input_ids):
        return {"vec": tf.reduce_mean(tf.gather(tf.convert_to_tensor(self.table), input_ids), axis=1)}
m = Tok()
tf.saved_model.save(m, d + "/tok_sm", signatures={"serving_default": m.serve})
""" % {"vocab": VOCAB}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ranges")
    subprocess.run([sys.executable, "-c", BUILD, str(d)], check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return d


def _convert(path, out, *args):
    r = run_cli("convert", path, "--json", "--no-latency", "--no-history", "--out", out, *args)
    return r, (json.loads(r.stdout) if r.returncode in (0, 1) and r.stdout.strip() else None)


def test_token_ids_span_the_embeddings_vocabulary_at_a_stated_length(models, tmp_path):
    r, rep = _convert(models / "gru.keras", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "a" / "samples.npz")["tokens"]
    assert x.shape == (64, 32)                                  # the default length, never 1
    assert x.min() >= 0 and x.max() <= VOCAB - 1 and len(np.unique(x)) > VOCAB // 2
    drawn = rep["samples"]["inputs"]["tokens"]
    assert rep["samples"]["random"] and drawn["length"] == 32
    assert drawn["values"] == f"ids 0–{VOCAB - 1} from Embedding 'embed'"
    assert any("use length 32 there (the default; --length tokens=N to change)" in w for w in rep["warnings"])
    assert rep["samples"]["caveats"] == [] and rep["verdict"] == "pass"

    r = run_cli("convert", models / "gru.keras", "--no-latency", "--no-history", "--length", "tokens=7")
    assert r.returncode == 0, r.stderr
    assert ": PASS on 64 random samples  " in r.stdout.splitlines()[0]
    assert "use length 7 there (as set" in r.stdout


def test_low_high_when_given_still_apply(models, tmp_path):
    r, rep = _convert(models / "gru.keras", tmp_path / "b", "--low", "3", "--high", "5", "--length", "4")
    assert r.returncode == 0, r.stderr
    x = np.load(tmp_path / "b" / "samples.npz")["tokens"]
    assert x.shape == (64, 4) and set(np.unique(x)) == {3, 4, 5}
    assert "--low/--high" in rep["samples"]["inputs"]["tokens"]["values"]


def test_padding_mask_is_a_valid_mask_and_ids_through_a_cast(models, tmp_path):
    r, rep = _convert(models / "masked.keras", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    z = np.load(tmp_path / "c" / "samples.npz")
    ids, mask = z["ids"], z["attention"]
    assert ids.max() <= 49 and len(np.unique(ids)) > 25            # vocab50's ids, found through the Cast
    assert set(np.unique(mask)) <= {0, 1} and (mask[:, 0] == 1).all()
    assert (np.diff(mask, axis=1) <= 0).all()                     # ones, then zeros
    assert len({int(s) for s in mask.sum(axis=1)}) > 3             # of random lengths
    assert rep["samples"]["inputs"]["attention"]["values"].startswith("padding mask")


def test_unknown_vocabulary_and_noise_images_are_said_in_plain_words(models, tmp_path):
    r, rep = _convert(models / "tok_sm", tmp_path / "d", "--route", "saved_model")
    assert r.returncode == 0, r.stderr
    (caveat,) = rep["samples"]["caveats"]
    assert "the vocabulary is unknown, so these samples are not meaningful; give real samples" in caveat
    assert caveat in rep["warnings"] and rep["verdict"] == "pass"      # the JSON verdict keeps its values
    x = np.load(tmp_path / "d" / "samples.npz")["input_ids"]
    assert set(np.unique(x)) == {0, 1}

    r, rep = _convert(models / "cnn.keras", tmp_path / "e")
    assert r.returncode == 0, r.stderr
    assert any("a classifier's answers on noise are not meaningful" in c for c in rep["samples"]["caveats"])

    # Real samples: no caveat, and the verdict line says "samples", not "random samples".
    np.savez(tmp_path / "real.npz", image=np.random.default_rng(1).random((6, 16, 16, 3), dtype=np.float32))
    r = run_cli("convert", models / "cnn.keras", "--no-latency", "--no-history", "--samples", tmp_path / "real.npz")
    assert r.returncode == 0, r.stderr
    assert "PASS on 6 samples" in r.stdout.splitlines()[0] and "not meaningful" not in r.stdout


@pytest.mark.parametrize("arg, words", [("nosuch=5", "no input of the model"), ("tokens=0", "at least 1"),
                                        ("=3", "NAME=N")])
def test_bad_length_is_one_line(models, arg, words):
    r = run_cli("convert", models / "gru.keras", "--no-latency", "--no-history", "--length", arg)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert words in line
