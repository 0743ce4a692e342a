"""Stage 2: every input and output of a model: name, shape (None = dynamic), dtype."""
from __future__ import annotations

import numpy as np

from .errors import SignatureError
from .types import Signature, TensorInfo


def _dtype_name(dt) -> str:
    name = getattr(dt, "name", None) or str(dt)
    return np.dtype(name).name if name != "string" else "string"


def _keras_output_names(model) -> list[tuple[str, str]]:
    """(name, signature key) per output, from the model itself, so identical in every process.

    Dict outputs: the dict key for both (Keras' export keys its signature by them). Otherwise the
    producing layer's name, with the export's ``output_i`` as key. KerasTensor names
    (``keras_tensor_170``) are a per-process counter and are never used.
    """
    outputs = list(model.outputs)
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(struct, dict):
        by_id = {id(v): str(k) for k, v in struct.items()}
        if all(id(t) in by_id for t in outputs):
            return [(by_id[id(t)], by_id[id(t)]) for t in outputs]
    names = []
    for i, t in enumerate(outputs):
        op = getattr(getattr(t, "_keras_history", None), "operation", None)
        names.append(getattr(op, "name", None) or f"output_{i}")
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    # One layer's output returned twice (or a multi-output layer): tell them apart by position.
    return [(f"{n}_{i}" if seen[n] > 1 else n, f"output_{i}") for i, n in enumerate(names)]


def keras_signature(model) -> Signature:
    """Inputs by their Input-layer names (the keys Keras' export uses), outputs as _keras_output_names."""
    inputs = tuple(TensorInfo(t.name, tuple(t.shape), _dtype_name(t.dtype), key=t.name) for t in model.inputs)
    outputs = tuple(TensorInfo(name, tuple(t.shape), _dtype_name(t.dtype), key=key)
                    for (name, key), t in zip(_keras_output_names(model), model.outputs))
    return Signature(inputs, outputs)


def saved_model_signature(fn) -> Signature:
    """From a SavedModel serving function (``loaded.signatures['serving_default']``)."""
    specs = fn.structured_input_signature[1]
    if not specs:
        raise SignatureError("The SavedModel's serving signature takes no named inputs; "
                             "export it with model.export() or tf.saved_model.save(..., signatures=...).")
    inputs = tuple(TensorInfo(k, tuple(s.shape.as_list()), _dtype_name(s.dtype), key=k) for k, s in specs.items())
    outs = fn.structured_outputs
    if not isinstance(outs, dict):
        raise SignatureError("The SavedModel's serving signature does not name its outputs.")
    outputs = tuple(TensorInfo(k, tuple(s.shape.as_list()), _dtype_name(s.dtype), key=k) for k, s in outs.items())
    return Signature(inputs, outputs)


def signature_def_signature(sig: dict) -> Signature:
    """From a parsed SignatureDef (graph_policy.GraphReport.signatures[key]): nothing is loaded or run."""
    from tensorflow.python.framework import dtypes
    def infos(part):
        return tuple(TensorInfo(k, tuple(None if d == -1 else int(d) for d in shape) if shape is not None else (),
                                _dtype_name(dtypes.as_dtype(dt)), key=k) for k, (dt, shape) in sig[part].items())
    inputs, outputs = infos("inputs"), infos("outputs")
    if not inputs:
        raise SignatureError("The SavedModel's serving signature takes no named inputs; "
                             "export it with model.export() or tf.saved_model.save(..., signatures=...).")
    return Signature(inputs, outputs)


def _strip(name: str) -> str:
    name = name[:-2] if name.endswith(":0") else name   # keep ":1" etc.: they tell outputs apart
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def tflite_signature(interpreter) -> Signature:
    """From a LiteRT interpreter: the serving signature when present, else the raw tensors."""
    sigs = interpreter.get_signature_list()
    def info(key, d):
        shape = tuple(None if s == -1 else int(s) for s in d.get("shape_signature", d["shape"]))
        return TensorInfo(key, shape, np.dtype(d["dtype"]).name, key=key)
    if sigs:
        key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        runner = interpreter.get_signature_runner(key)
        ins = runner.get_input_details()
        outs = runner.get_output_details()
        return Signature(tuple(info(k, d) for k, d in ins.items()), tuple(info(k, d) for k, d in outs.items()))
    return Signature(tuple(info(_strip(d["name"]), d) for d in interpreter.get_input_details()),
                     tuple(info(_strip(d["name"]), d) for d in interpreter.get_output_details()))
