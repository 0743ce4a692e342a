"""Deterministically build the TFLite Lab sample models.

Usage:
    python sample_models/build.py [--out DIR]

DIR defaults to the folder containing this script. Every model is trained
(if at all) on scikit-learn's bundled datasets, so nothing is downloaded.
One line per artifact is printed to stdout; TensorFlow/Keras chatter goes to
stderr (or nowhere).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

with contextlib.redirect_stdout(sys.stderr):
    import tensorflow as tf  # noqa: E402
    import keras  # noqa: E402

SEED = 0
N_SAMPLES = 64
HERE = Path(__file__).resolve().parent

# Fixed timestamp for entries of the zip we write ourselves (SavedModel zip).
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _quiet():
    """Send Python-level prints from Keras/TF to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


def _reset_seed():
    keras.utils.set_random_seed(SEED)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _report(path: Path, extra: str = "") -> None:
    size = _size(path)
    kind = "dir " if path.is_dir() else "file"
    print(f"built {kind} {path.name:<40} {size / 1024:9.1f} KiB  {extra}".rstrip(), flush=True)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def _digits():
    d = datasets.load_digits()
    x = (d.images / 16.0).astype("float32")  # (1797, 8, 8) in [0, 1]
    y = d.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
def build_digits_cnn(out: Path) -> dict:
    _reset_seed()
    x_tr, x_te, y_tr, y_te = _digits()
    x_tr, x_te = x_tr[..., None], x_te[..., None]

    inp = keras.Input(shape=(8, 8, 1), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", name="dense")(h)
    outp = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inp, outp, name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _quiet():
        model.fit(x_tr, y_tr, epochs=15, batch_size=32, verbose=0)
        _, acc = model.evaluate(x_te, y_te, verbose=0)

    path = out / "digits_cnn.keras"
    model.save(path)
    samples = out / "digits_cnn.samples.npz"
    np.savez(samples, image=x_te[:N_SAMPLES], labels=y_te[:N_SAMPLES])  # "labels": the true digits
    _report(path, f"test accuracy={acc:.4f} (n={len(y_te)})")
    _report(samples)
    return {"accuracy": round(float(acc), 4), "n_test": int(len(y_te))}


def build_breast_cancer_mlp(out: Path) -> dict:
    _reset_seed()
    d = datasets.load_breast_cancer()
    x = d.data.astype("float32")
    y = d.target.astype("int64")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y)

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_tr)
    inp = keras.Input(shape=(30,), name="features")
    h = norm(inp)
    h = keras.layers.Dense(32, activation="relu", name="dense1")(h)
    h = keras.layers.Dense(16, activation="relu", name="dense2")(h)
    outp = keras.layers.Dense(2, activation="softmax", name="probs")(h)
    model = keras.Model(inp, outp, name="breast_cancer_mlp")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _quiet():
        model.fit(x_tr, y_tr, epochs=30, batch_size=32, verbose=0)
        _, acc = model.evaluate(x_te, y_te, verbose=0)

    path = out / "breast_cancer_mlp.h5"
    with _quiet():
        model.save(path)  # legacy HDF5 format (Keras warns about it on stderr)
    samples = out / "breast_cancer_mlp.samples.csv"
    # Raw float64 test rows (unnormalized); repr() keeps the dataset's digits.
    raw_te = train_test_split(d.data, y, test_size=0.2, random_state=SEED, stratify=y)[1]
    with open(samples, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(d.feature_names) + ["labels"])      # the labels column: 0 malignant, 1 benign
        for row, label in zip(raw_te[:N_SAMPLES], y_te[:N_SAMPLES]):
            w.writerow([repr(float(v)) for v in row] + [int(label)])
    _report(path, f"test accuracy={acc:.4f} (n={len(y_te)})")
    _report(samples)
    return {"accuracy": round(float(acc), 4), "n_test": int(len(y_te))}


def build_diabetes_regressor(out: Path) -> dict:
    _reset_seed()
    d = datasets.load_diabetes()
    x = d.data.astype("float32")  # already mean-centred / scaled by sklearn
    y = d.target.astype("float32")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=SEED)
    y_mean, y_std = float(y_tr.mean()), float(y_tr.std())

    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x_tr)
    inp = keras.Input(shape=(10,), name="features")
    h = norm(inp)
    h = keras.layers.Dense(32, activation="relu", name="dense1")(h)
    h = keras.layers.Dense(16, activation="relu", name="dense2")(h)
    h = keras.layers.Dense(1, name="dense_out")(h)
    # Train on standardized targets, but output in original units.
    outp = keras.layers.Rescaling(scale=y_std, offset=y_mean, name="progression")(h)
    model = keras.Model(inp, outp, name="diabetes_regressor")
    # Scale the loss by fitting a model view that skips the Rescaling layer.
    core = keras.Model(inp, h)
    core.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    with _quiet():
        core.fit(x_tr, (y_tr - y_mean) / y_std, epochs=30, batch_size=32, verbose=0)
        pred = model.predict(x_te, verbose=0)[:, 0]
    mae = float(np.mean(np.abs(pred - y_te)))
    r2 = float(1.0 - np.sum((pred - y_te) ** 2) / np.sum((y_te - y_te.mean()) ** 2))

    path = out / "diabetes_regressor_savedmodel.zip"
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        export_dir = Path(tmp) / "saved_model"
        model.export(str(export_dir), verbose=False)
        files = sorted(p for p in export_dir.rglob("*"))
        with zipfile.ZipFile(path, "w") as zf:
            for p in files:
                rel = p.relative_to(export_dir).as_posix()
                if p.is_dir():
                    info = zipfile.ZipInfo(rel + "/", date_time=_ZIP_EPOCH)
                    info.external_attr = (0o40755 << 16) | 0x10
                    zf.writestr(info, b"")
                else:
                    info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
                    info.external_attr = 0o644 << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, p.read_bytes())
    samples = out / "diabetes_regressor.samples.npy"
    np.save(samples, x_te[:N_SAMPLES].astype("float32"))
    np.save(out / "diabetes_regressor.labels.npy", y_te[:N_SAMPLES].astype("float32"))   # --labels: targets
    _report(path, f"test MAE={mae:.2f} R2={r2:.3f} (n={len(y_te)})")
    _report(samples)
    return {"mae": round(mae, 2), "r2": round(r2, 3), "n_test": int(len(y_te))}


def build_digits_lstm(out: Path) -> dict:
    _reset_seed()
    x_tr, x_te, y_tr, y_te = _digits()  # (N, 8, 8): 8 timesteps (rows) x 8 features

    inp = keras.Input(shape=(8, 8), name="rows")
    h = keras.layers.LSTM(16, name="lstm")(inp)
    outp = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inp, outp, name="digits_lstm")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with _quiet():
        model.fit(x_tr, y_tr, epochs=20, batch_size=32, verbose=0)
        _, acc = model.evaluate(x_te, y_te, verbose=0)

    path = out / "digits_lstm.keras"
    model.save(path)
    samples = out / "digits_lstm.samples.npz"
    np.savez(samples, rows=x_te[:N_SAMPLES], labels=y_te[:N_SAMPLES])
    _report(path, f"test accuracy={acc:.4f} (n={len(y_te)})")
    _report(samples)
    return {"accuracy": round(float(acc), 4), "n_test": int(len(y_te))}


def _image_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(len(x), -1)
    stats = np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1).astype("float32")
    ink = (flat > 0.5).mean(axis=1, keepdims=True).astype("float32")
    return stats, ink


def build_multi_io(out: Path) -> dict:
    _reset_seed()
    x_tr, x_te, y_tr, y_te = _digits()
    s_tr, ink_tr = _image_stats(x_tr)
    s_te, ink_te = _image_stats(x_te)
    x_tr, x_te = x_tr[..., None], x_te[..., None]

    image = keras.Input(shape=(8, 8, 1), name="image")
    stats = keras.Input(shape=(2,), name="stats")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(image)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Concatenate(name="concat")([h, stats])
    h = keras.layers.Dense(48, activation="relu", name="dense")(h)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    ink = keras.layers.Dense(1, activation="sigmoid", name="ink")(h)
    model = keras.Model([image, stats], [digit, ink], name="multi_io")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={"digit": "sparse_categorical_crossentropy", "ink": "mse"},
        loss_weights={"digit": 1.0, "ink": 10.0},
        metrics={"digit": ["accuracy"], "ink": ["mae"]},
    )
    with _quiet():
        model.fit([x_tr, s_tr], {"digit": y_tr, "ink": ink_tr},
                  epochs=15, batch_size=32, verbose=0)
        p_digit, p_ink = model.predict([x_te, s_te], verbose=0)
    acc = float(np.mean(p_digit.argmax(axis=1) == y_te))
    mae = float(np.mean(np.abs(p_ink - ink_te)))

    path = out / "multi_io.keras"
    model.save(path)
    samples = out / "multi_io.samples.npz"
    np.savez(samples, image=x_te[:N_SAMPLES], stats=s_te[:N_SAMPLES], labels=y_te[:N_SAMPLES])  # labels: digit
    _report(path, f"digit accuracy={acc:.4f} ink MAE={mae:.4f} (n={len(y_te)})")
    _report(samples)
    return {"digit_accuracy": round(acc, 4), "ink_mae": round(mae, 4), "n_test": int(len(y_te))}


def _sample_patches(size: int = 96) -> tuple[list[tuple[str, np.ndarray]], np.ndarray]:
    """Deterministic 96x96 patches from sklearn's china.jpg and flower.jpg.

    Returns (named sample patches, calibration batch) as uint8 arrays.
    """
    imgs = datasets.load_sample_images()
    named, calib = [], []
    for fname, img in zip(imgs.filenames, imgs.images):
        stem = Path(fname).stem
        h, w, _ = img.shape  # 427 x 640
        pil = Image.fromarray(img)
        # 4 crops per image for the samples folder: whole image squashed to
        # square-ish crop, plus 3 regions at different scales.
        boxes = [
            (w // 2 - h // 2, 0, w // 2 + h // 2, h),   # centre square, full height
            (0, 0, 200, 200),                             # top-left
            (w - 240, h - 240, w, h),                     # bottom-right
            (w // 2 - 64, h // 2 - 64, w // 2 + 64, h // 2 + 64),  # centre zoom
        ]
        for i, box in enumerate(boxes):
            patch = np.asarray(pil.crop(box).resize((size, size), Image.BILINEAR))
            named.append((f"{stem}_{i}", patch))
        # 12 more grid crops per image for BatchNorm calibration.
        for yy in range(0, h - 160 + 1, (h - 160) // 2):
            for xx in range(0, w - 160 + 1, (w - 160) // 3):
                box = (xx, yy, xx + 160, yy + 160)
                calib.append(np.asarray(pil.crop(box).resize((size, size), Image.BILINEAR)))
    batch = np.stack([p for _, p in named] + calib)
    return named, batch


def build_mobilenet(out: Path) -> dict:
    _reset_seed()
    named, batch_u8 = _sample_patches(96)
    image = keras.Input(shape=(96, 96, 3), name="image")
    with _quiet():
        app = keras.applications.MobileNetV2(
            alpha=0.35, input_tensor=image, weights=None, classes=10)
    # With input_tensor=, the application's inputs are a 1-element *list*,
    # so calling it with a bare array warns on every call. Re-wrap the same
    # layer graph as a single-input functional model (no nesting, same layers).
    model = keras.Model(image, app.outputs[0], name=app.name)

    # Untrained BN layers have mean 0 / var 1 statistics, which makes the
    # network output (nearly) input-independent. Take statistics from one
    # real batch instead: momentum 0 => moving stats := batch stats.
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    old = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    batch = batch_u8.astype("float32") / 255.0
    model(batch, training=True)
    for bn, m in zip(bns, old):
        bn.momentum = m

    path = out / "mobilenet_v2_small.keras"
    model.save(path)
    samples = out / "mobilenet_v2_small.samples"
    samples.mkdir(parents=True, exist_ok=True)
    for name, patch in named:
        Image.fromarray(patch).save(samples / f"{name}.png", optimize=False)
    probs = model.predict(np.stack([p for _, p in named]).astype("float32") / 255.0, verbose=0)
    spread = float(np.max(np.abs(probs - probs[0])))
    _report(path, f"untrained; {model.count_params()} params; "
                  f"{len(bns)} BN layers calibrated on {len(batch)} patches; "
                  f"max prob diff across samples={spread:.4f}")
    _report(samples, f"({len(named)} PNGs)")
    return {"untrained": True, "params": int(model.count_params()),
            "max_prob_diff_between_samples": round(spread, 4)}


CATALOG = [
    {
        "name": "digits_cnn",
        "file": "digits_cnn.keras",
        "format": "keras",
        "description": "Small Conv2D CNN classifying sklearn 8x8 digit images (10 classes).",
        "samples": "digits_cnn.samples.npz",
        "task": "classification",
        "inputs": {"image": [None, 8, 8, 1]},
        "outputs": {"probs": [None, 10]},
        "builder": build_digits_cnn,
    },
    {
        "name": "breast_cancer_mlp",
        "file": "breast_cancer_mlp.h5",
        "format": "h5",
        "description": "MLP with built-in Normalization layer on 30 raw breast-cancer features (malignant/benign).",
        "samples": "breast_cancer_mlp.samples.csv",
        "task": "classification",
        "inputs": {"features": [None, 30]},
        "outputs": {"probs": [None, 2]},
        "builder": build_breast_cancer_mlp,
    },
    {
        "name": "diabetes_regressor",
        "file": "diabetes_regressor_savedmodel.zip",
        "format": "saved_model_zip",
        "description": "MLP regressor predicting diabetes disease progression from 10 sklearn features (SavedModel, zipped).",
        "samples": "diabetes_regressor.samples.npy",
        "labels": "diabetes_regressor.labels.npy",
        "task": "regression",
        "inputs": {"features": [None, 10]},
        "outputs": {"output_0": [None, 1]},
        "builder": build_diabetes_regressor,
    },
    {
        "name": "digits_lstm",
        "file": "digits_lstm.keras",
        "format": "keras",
        "description": "LSTM(16) reading each 8x8 digit image as 8 timesteps of 8 pixels (10 classes).",
        "samples": "digits_lstm.samples.npz",
        "task": "classification",
        "inputs": {"rows": [None, 8, 8]},
        "outputs": {"probs": [None, 10]},
        "builder": build_digits_lstm,
    },
    {
        "name": "multi_io",
        "file": "multi_io.keras",
        "format": "keras",
        "description": "Two-input/two-output model: digit image + pixel stats -> digit class and ink fraction.",
        "samples": "multi_io.samples.npz",
        "task": "mixed",
        "inputs": {"image": [None, 8, 8, 1], "stats": [None, 2]},
        "outputs": {"digit": [None, 10], "ink": [None, 1]},
        "builder": build_multi_io,
    },
    {
        "name": "mobilenet_v2_small",
        "file": "mobilenet_v2_small.keras",
        "format": "keras",
        "description": "Untrained MobileNetV2 (alpha=0.35, 96x96 RGB in [0,1], 10 classes) with BatchNorm stats from real photos.",
        "samples": "mobilenet_v2_small.samples",
        "task": "classification",
        "inputs": {"image": [None, 96, 96, 3]},
        "outputs": {"predictions": [None, 10]},
        "builder": build_mobilenet,
    },
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE,
                    help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    tf.config.experimental.enable_op_determinism()
    t0 = time.perf_counter()
    catalog = []
    for entry in CATALOG:
        metrics = entry["builder"](out)
        item = {k: v for k, v in entry.items() if k != "builder"}
        item["metrics"] = metrics
        catalog.append(item)
    with open(out / "catalog.json", "w") as f:
        json.dump(catalog, f, indent=2)
        f.write("\n")
    total = sum(_size(out / e["file"]) + _size(out / e["samples"]) for e in catalog)
    print(f"wrote catalog.json; {len(catalog)} models, artifacts total "
          f"{total / 1024 / 1024:.2f} MiB, in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
