"""A TF1-format SavedModel's saver runs at load: its checkpoint paths must be the loader's file name.

tf.saved_model.load reads a SavedModel as TF1 unless it is one MetaGraph with an object graph, and
then runs saver_def.restore_op_name with the filename tensor fed. One subprocess builds a clean TF1
SavedModel and a copy whose RestoreV2 prefix is a constant naming a foreign checkpoint, and proves
that copy armed (plain TensorFlow serves the foreign weights, 42). The policy must pass the clean
one and refuse the copy, naming RestoreV2 and "reads files", without the foreign path in the line.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tflite_lab.errors import SourceError
from tflite_lab.graph_policy import check_saved_model

BUILD = r'''
import json, os, shutil, sys
from pathlib import Path
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
d = Path(sys.argv[1]); tf1 = tf.compat.v1
g = tf.Graph()
with g.as_default():                  # "another user's" checkpoint: v = 42
    v = tf1.get_variable("v", initializer=tf.constant([42.0, 42.0, 42.0]))
    with tf1.Session() as s:
        s.run(tf1.global_variables_initializer()); tf1.train.Saver().save(s, str(d / "foreign" / "ckpt"))
g = tf.Graph()
with g.as_default():
    x = tf1.placeholder(tf.float32, [None, 3], name="x")
    v = tf1.get_variable("v", initializer=tf.constant([1.0, 1.0, 1.0]))
    y = tf.identity(x * v, name="y")
    with tf1.Session() as s:
        s.run(tf1.global_variables_initializer())
        b = tf1.saved_model.Builder(str(d / "clean"))
        b.add_meta_graph_and_variables(s, ["serve"], signature_def_map={
            "serving_default": tf1.saved_model.predict_signature_def({"x": x}, {"y": y})})
        b.save()
sm = saved_model_pb2.SavedModel(); sm.ParseFromString((d / "clean/saved_model.pb").read_bytes())
gd = sm.meta_graphs[0].graph_def
c = gd.node.add(); c.name = "foreign_prefix"; c.op = "Const"
c.attr["dtype"].type = c.attr["value"].tensor.dtype = tf.string.as_datatype_enum
c.attr["value"].tensor.string_val.append(str(d / "foreign" / "ckpt").encode())
for n in gd.node:
    if n.op == "RestoreV2":
        n.input[0] = "foreign_prefix"
shutil.copytree(d / "clean", d / "hostile")
(d / "hostile/saved_model.pb").write_bytes(sm.SerializeToString())
out = {k: tf.saved_model.load(str(d / k)).signatures["serving_default"](x=tf.ones([1, 3]))["y"].numpy().tolist()
       for k in ("clean", "hostile")}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def tf1_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tf1")
    r = subprocess.run([sys.executable, "-c", BUILD, str(d)], capture_output=True, text=True, timeout=300,
                       env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    return d, json.loads(r.stdout.strip().splitlines()[-1])


def test_tf1_foreign_restore_is_armed_and_refused(tf1_models):
    d, served = tf1_models
    assert served == {"clean": [[1.0, 1.0, 1.0]], "hostile": [[42.0, 42.0, 42.0]]}   # plain TF restores it
    check_saved_model(d / "clean", "clean.zip")          # TF1's own Saver graph passes
    with pytest.raises(SourceError) as ei:
        check_saved_model(d / "hostile", "hostile.zip")
    msg = ei.value.user_message
    assert ei.value.exit_code == 2 and "\n" not in msg
    assert "RestoreV2 (saver node 'save/RestoreV2', its path from 'foreign_prefix'" in msg and "reads files" in msg
    assert "foreign" + "/ckpt" not in msg and str(d) not in msg
