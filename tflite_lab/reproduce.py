"""A standalone script that reproduces one conversion outside TFLite Lab.

The cell report's ``calls`` are what ran here, with this machine's paths; this is the same recipe
with local names, runnable next to the model file and the downloaded ``samples.npz``.
"""
from __future__ import annotations

from pathlib import Path

from .recipes import CLI_FLAGS, RECIPES, recipe_lines
from .types import Optimization, Route, SourceFormat

UNROLL_SOURCE = '''def unrolled(model):
    """Recurrent layers with unroll=True, same weights (int8/16x8 calibration crashes on the loop)."""
    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("LSTM", "GRU", "SimpleRNN"):
                node["config"]["unroll"] = True
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    config = model.get_config()
    walk(config)
    clone = type(model).from_config(config)
    clone.set_weights(model.get_weights())
    return clone
'''

_FIXED = '''# Recurrent layers need a fixed batch of 1 on TF 2.21 ("Lowering tensor list ops is failed").
inputs = [keras.Input(batch_shape=(1, *t.shape[1:]), dtype=t.dtype, name=t.name) for t in model.inputs]
model = keras.Model(inputs, model(inputs if len(inputs) > 1 else inputs[0]))'''

_FIXED_EXPORT = ('''model.export(EXPORT, input_signature=[[keras.InputSpec(shape=tuple(t.shape), dtype=t.dtype, name=t.name)
                                      for t in model.inputs]] if len(model.inputs) > 1 else
             [keras.InputSpec(shape=tuple(model.inputs[0].shape), dtype=model.inputs[0].dtype,
                              name=model.inputs[0].name)])  # export() would reset the batch to None''')


def reproduction(route: Route | str, optimization: Optimization | str, *, filename: str, fmt: SourceFormat | str,
                 input_keys: dict[str, str], int8_io: bool = False, fixed_batch: bool = False,
                 unrolled: bool = False) -> tuple[str, str]:
    """(code, language): a Python script, or for route 'cli' a shell script."""
    route, opt, fmt = Route(route), Optimization(optimization), SourceFormat(fmt)
    stem = Path(filename).stem
    keras_src = fmt.is_keras
    export = f"{stem}_export" if keras_src else (stem if filename.endswith(".zip") else filename)
    load = [f"model = keras.models.load_model({filename!r}, safe_mode=True)"]
    if unrolled:
        load += [UNROLL_SOURCE, "model = unrolled(model)"]
    if fixed_batch:
        load.append(_FIXED)
    do_export = ([f"EXPORT = {export!r}", _FIXED_EXPORT if fixed_batch else "model.export(EXPORT)"]
                 if keras_src else [f"EXPORT = {export!r}  # the unzipped SavedModel folder"])
    if route is Route.CLI:
        lines = ["#!/usr/bin/env bash", "set -e"]
        if keras_src:
            py = "\n".join(["import keras", *load, *do_export])
            lines += ["python - <<'EOF'", py, "EOF"]
        elif filename.endswith(".zip"):
            lines.append(f"unzip -o {filename} -d {export}")
        lines.append(" ".join(["tflite_convert", f"--saved_model_dir={export}", "--output_file=model.tflite",
                               *CLI_FLAGS[opt]]))
        return "\n".join(lines), "bash"
    head = ["import numpy as np", "import tensorflow as tf"] + (["import keras"] if keras_src else []) + [""]
    if RECIPES[opt].needs_calibration:
        first = next(iter(input_keys))
        feed = ", ".join(f"{k!r}: samples[{n!r}][i:i + 1]" for n, k in input_keys.items())
        head += ["samples = np.load('samples.npz')  # the exact samples TFLite Lab used",
                 "", "def representative_dataset():",
                 f"    for i in range(min(100, len(samples[{first!r}]))):",
                 f"        yield {{{feed}}}", ""]
    body = []
    if route is Route.KERAS:
        body += load + ["converter = tf.lite.TFLiteConverter.from_keras_model(model)"]
    else:
        if keras_src:
            body += load
        body += do_export
        if route is Route.SAVED_MODEL:
            body.append("converter = tf.lite.TFLiteConverter.from_saved_model(EXPORT)")
        else:
            body += ["loaded = tf.saved_model.load(EXPORT)",
                     "# The loaded object carries the variables; the Keras model as trackable_obj gives NaN outputs.",
                     "converter = tf.lite.TFLiteConverter.from_concrete_functions(",
                     "    [loaded.signatures['serving_default']], loaded)"]
    body += recipe_lines(opt, int8_io)
    body += ["tflite_model = converter.convert()", "with open('model.tflite', 'wb') as f:", "    f.write(tflite_model)"]
    return "\n".join(head + body), "python"
