"""The saved_model route gives TensorFlow's own bytes: ``routes.convert`` (which lets convert() reuse
from_saved_model's loaded SavedModel instead of loading it a second time) against a plain
``TFLiteConverter.from_saved_model(dir)`` with the same recipe lines, in the same process."""
from __future__ import annotations

import pytest

from lab_helpers import SAMPLES

pytestmark = pytest.mark.slow

MODELS = ("digits_cnn.keras", "diabetes_regressor_savedmodel.zip", "multi_io.keras")
RECIPES = ("none", "dynamic", "float16", "int8", "int16x8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, source_json
    from tflite_lab.sources import source_from_path
    store = tmp_path_factory.mktemp("bytes")
    return {m: prepare(source_json(source_from_path(SAMPLES / m, store=store)), SampleSpec(count=8, seed=99),
                       BenchSpec(enabled=False), store_root=str(store)) for m in MODELS}


@pytest.mark.parametrize("model", MODELS)
def test_conversions_are_tensorflows_own_bytes(prepared, model):
    import tensorflow as tf
    from tflite_lab import recipes
    from tflite_lab.config import Limits
    from tflite_lab.models import open_cached
    from tflite_lab.routes import ConversionRequest, convert
    from tflite_lab.samples import representative_dataset
    from tflite_lab.store import load_npz
    from tflite_lab.types import Optimization, Route, source_from_json
    p = prepared[model]
    om = open_cached(source_from_json(p["source"]), Limits.from_env())
    samples = load_npz(p["samples_path"])
    keys = {t.name: t.key for t in om.signature.inputs}
    for recipe in RECIPES:
        opt = Optimization(recipe)
        rep = representative_dataset(samples, keys) if recipe in ("int8", "int16x8") else None
        ours = convert(ConversionRequest(Route.SAVED_MODEL, opt), om, p["export_dir"], p["fixed_batch"], rep).tflite
        plain = tf.lite.TFLiteConverter.from_saved_model(p["export_dir"])
        recipes.apply(plain, opt, representative_dataset(samples, keys) if rep else None)
        assert ours == plain.convert(), f"{model} {recipe}: not TensorFlow's bytes"
