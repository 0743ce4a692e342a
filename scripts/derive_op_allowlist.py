"""Derive tflite_lab/op_allowlist.py: the TensorFlow ops a SavedModel may contain.

An op is allowed when this script has seen it in a SavedModel that TFLite's converter turned into
a model of builtin kernels only (``supported_ops = [TFLITE_BUILTINS]``, no Flex, no custom ops).
The models are generated here: a broad set of Keras layers exported with ``model.export`` (what
TFLite Lab does for every .keras/.h5) and tf.Module SavedModels of single tf ops. The structural
ops (calls, control flow, variables, placeholders) are listed by hand below, each with why.

Run:  .venv/bin/python scripts/derive_op_allowlist.py      (about 3 minutes on 2 cores)
To grow the list: add a case below that uses the op, run the script, commit both files.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Ops an export needs to be a SavedModel at all; none computes anything or touches the host.
STRUCTURAL = {
    "Placeholder": "signature inputs", "PlaceholderWithDefault": "optional inputs",
    "Const": "constants", "Identity": "pass-through", "IdentityN": "pass-through",
    "NoOp": "control dependencies", "StopGradient": "identity at inference",
    "PartitionedCall": "function call (callee checked)", "StatefulPartitionedCall": "function call (callee checked)",
    "While": "loop (cond/body checked)", "StatelessWhile": "loop (cond/body checked)",
    "If": "branch (both checked)", "StatelessIf": "branch (both checked)",
    "Case": "branches (all checked)", "StatelessCase": "branches (all checked)",
    "VarHandleOp": "variable handle", "ReadVariableOp": "variable read", "VarIsInitializedOp": "variable state",
    "AssignVariableOp": "variable write (in memory)", "AssignAddVariableOp": "variable write (in memory)",
    "AssignSubVariableOp": "variable write (in memory)", "DestroyResourceOp": "resource cleanup",
    "Enter": "TF1 loop frame", "Exit": "TF1 loop frame", "Merge": "TF1 control flow",
    "Switch": "TF1 control flow", "NextIteration": "TF1 loop frame", "LoopCond": "TF1 loop frame",
    "_Arg": "function argument", "_Retval": "function result",
    "Snapshot": "copy", "EnsureShape": "shape assertion", "CheckNumerics": "numeric assertion",
    "Assert": "assertion", "OptionalFromValue": "control-flow gradient helper", "OptionalNone": "control-flow helper",
    "TensorListReserve": "loop state (lowered by the converter)", "TensorListSetItem": "loop state",
    "TensorListGetItem": "loop state", "TensorListStack": "loop state", "TensorListFromTensor": "loop state",
    "TensorListLength": "loop state", "TensorListElementShape": "loop state",
}

# Checkpoint ops: allowed only in functions nothing but the saver_def reaches.
CHECKPOINT_OPS = {"SaveV2": "writes files", "RestoreV2": "reads files", "MergeV2Checkpoints": "writes files",
                  "ShardedFilename": "names files", "StringJoin": "names files", "StaticRegexFullMatch": "names files",
                  "Select": "chooses the temp name", "SaveSlices": "writes files", "Save": "writes files",
                  "Restore": "reads files", "RestoreSlice": "reads files"}

# Wording only (the rule is the allowlist): what a refused op would do if it ran.
RISKS_BY_KIND = {
    "reads files": "ReadFile MatchingFiles RestoreV2 Restore RestoreSlice ImmutableConst InitializeTableFromTextFile "
                   "InitializeTableFromTextFileV2 LoadAndRemapMatrix TextLineDataset TextLineDatasetV2 TFRecordDataset "
                   "TFRecordDatasetV2 TFRecordDatasetV3 FixedLengthRecordDataset FixedLengthRecordDatasetV2 CSVDataset "
                   "CSVDatasetV2 ExperimentalCSVDataset MatchingFilesDataset LoadDataset SnapshotDataset "
                   "SnapshotDatasetV2 SnapshotDatasetReader LMDBDataset ExperimentalLMDBDataset WholeFileReader "
                   "WholeFileReaderV2 TextLineReader TextLineReaderV2 TFRecordReader TFRecordReaderV2 "
                   "FixedLengthRecordReader FixedLengthRecordReaderV2 LMDBReader ReaderReadV2 ReaderRead "
                   "DecodeProtoV2 ParseExampleDatasetV2 IsFile FileExists".split(),
    "writes files": "WriteFile DeleteFile SaveV2 Save SaveSlices MergeV2Checkpoints CreateSummaryFileWriter "
                    "CreateSummaryDbWriter WriteSummary WriteScalarSummary WriteHistogramSummary WriteImageSummary "
                    "WriteAudioSummary WriteGraphSummary WriteRawProtoSummary FlushSummaryWriter CloseSummaryWriter "
                    "SummaryWriter ImportEvent SaveDataset SaveDatasetV2 DatasetToTFRecord ExperimentalDatasetToTFRecord "
                    "PrintV2 Print DebugIdentity DebugIdentityV2 DebugIdentityV3 DebugNanCount DebugNumericSummary "
                    "DebugNumericSummaryV2 RecursiveCreateDir".split(),
    "network": "SqlDataset ExperimentalSqlDataset Rpc TryRpc RpcCall RpcClient RpcServer RpcServerStart "
               "RpcServerRegister DataServiceDataset DataServiceDatasetV2 DataServiceDatasetV3 "
               "DataServiceDatasetV4 CollectiveReduce CollectiveReduceV2 CollectiveGather CollectiveGatherV2 "
               "CollectiveBcastSend CollectiveBcastRecv _Send _Recv _HostSend _HostRecv".split(),
    "process": "PyFunc PyFuncStateless EagerPyFunc".split(),
}


def tf_cases():
    """(name, input shapes/dtypes, fn) for single-op tf.Module SavedModels."""
    import tensorflow as tf
    f = tf.float32
    x4 = ([None, 8, 8, 3], f)
    x2 = ([None, 6], f)
    return [
        ("math", [x2], lambda x: {"y": tf.abs(x) + tf.sqrt(tf.abs(x)) * tf.exp(-x) - tf.math.log(tf.abs(x) + 1.0) / 3.0}),
        ("math2", [x2], lambda x: {"y": tf.maximum(x, 0.1) + tf.minimum(x, 0.2) + tf.square(x) + tf.math.rsqrt(tf.abs(x) + 1) + tf.pow(tf.abs(x), 2.0)}),
        ("trig", [x2], lambda x: {"y": tf.sin(x) + tf.cos(x) + tf.tanh(x) + tf.sigmoid(x) + tf.atan2(x, x + 1)}),
        ("round", [x2], lambda x: {"y": tf.floor(x) + tf.math.ceil(x) + tf.round(x) + tf.sign(x) + tf.math.floormod(x, 2.0) + tf.math.floordiv(x, 2.0)}),
        ("neg", [x2], lambda x: {"y": tf.negative(x) * tf.math.reciprocal(tf.abs(x) + 1) + tf.math.squared_difference(x, 1.0)}),
        ("compare", [x2], lambda x: {"y": tf.cast(tf.logical_and(x > 0, tf.logical_or(x < 1, tf.logical_not(x >= 2))), f) + tf.cast(tf.equal(x, 0.5), f) + tf.cast(tf.not_equal(x, 1.0), f) + tf.cast(x <= 0, f)}),
        ("where", [x2], lambda x: {"y": tf.where(x > 0, x, 0.0 * x)}),
        ("reduce", [x2], lambda x: {"y": tf.reduce_sum(x, 1) + tf.reduce_mean(x, 1) + tf.reduce_max(x, 1) + tf.reduce_min(x, 1) + tf.reduce_prod(x, 1)}),
        ("reduce_bool", [x2], lambda x: {"y": tf.cast(tf.reduce_any(x > 0, 1), f) + tf.cast(tf.reduce_all(x > 0, 1), f)}),
        ("argmax", [x2], lambda x: {"y": tf.argmax(x, 1), "z": tf.argmin(x, 1)}),
        ("shape", [x4], lambda x: {"y": tf.reshape(x, [tf.shape(x)[0], -1]), "r": tf.cast(tf.rank(x), f) + tf.cast(tf.size(x), f)}),
        ("transpose", [x4], lambda x: {"y": tf.transpose(x, [0, 3, 1, 2])}),
        ("concat_split", [x2], lambda x: {"y": tf.concat(tf.split(x, 2, axis=1)[::-1], 1), "z": tf.concat(tf.split(x, [2, 4], axis=1)[::-1], 1)}),
        ("stack", [x2], lambda x: {"y": tf.stack(tf.unstack(x, axis=1), 0)}),
        ("slice", [x4], lambda x: {"y": x[:, 1:5:2, ::-1, :2], "z": tf.slice(x, [0, 0, 0, 0], [-1, 2, 2, 1])}),
        ("gather", [x2], lambda x: {"y": tf.gather(x, [0, 2, 4], axis=1), "z": tf.gather_nd(x, [[0, 1]])}),
        ("tile_pad", [x2], lambda x: {"y": tf.tile(tf.pad(x, [[0, 0], [1, 2]]), [1, 2]), "z": tf.pad(x, [[0, 0], [1, 1]], mode="REFLECT")}),
        ("expand", [x2], lambda x: {"y": tf.squeeze(tf.expand_dims(x, 1), 1) + tf.broadcast_to(x[:1], tf.shape(x))}),
        ("fill", [x2], lambda x: {"y": x + tf.fill(tf.shape(x), 2.0) + tf.zeros_like(x) + tf.ones_like(x)}),
        ("range", [x2], lambda x: {"y": x * tf.cast(tf.range(6), f)}),
        ("cast", [([None, 6], tf.int32)], lambda x: {"y": tf.cast(x, f) * 2.0, "z": x * 3 + x // 2 - tf.math.floormod(x, 3)}),
        ("matmul", [([None, 4, 5], f)], lambda x: {"y": tf.matmul(x, tf.transpose(x, [0, 2, 1])), "z": tf.einsum("bij,jk->bik", x, tf.ones([5, 2]))}),
        ("softmax", [x2], lambda x: {"y": tf.nn.softmax(x) + tf.nn.log_softmax(x) + tf.nn.relu6(x) + tf.nn.elu(x) + tf.nn.leaky_relu(x)}),
        ("topk", [x2], lambda x: {"y": tf.math.top_k(x, 2).values, "i": tf.math.top_k(x, 2).indices}),
        ("cumsum", [x2], lambda x: {"y": tf.cumsum(x, 1)}),
        ("onehot", [([None], tf.int32)], lambda x: {"y": tf.one_hot(x, 5)}),
        ("resize", [x4], lambda x: {"y": tf.image.resize(x, [4, 4]), "z": tf.image.resize(x, [16, 16], method="nearest")}),
        ("depth_space", [x4], lambda x: {"y": tf.nn.depth_to_space(tf.nn.space_to_depth(x, 2), 2)}),
        ("reverse", [x2], lambda x: {"y": tf.reverse(x, [1])}),
        ("l2norm", [x2], lambda x: {"y": tf.math.l2_normalize(x, 1)}),
        ("select_v2", [x2], lambda x: {"y": tf.raw_ops.SelectV2(condition=x > 0, t=x, e=-x)}),
        ("addn", [x2], lambda x: {"y": tf.add_n([x, x, x])}),
        ("fake_quant", [x2], lambda x: {"y": tf.quantization.fake_quant_with_min_max_args(x, -1.0, 1.0)}),
        ("batch_matmul", [([None, 3, 4], f), ([None, 4, 2], f)], lambda a, b: {"y": tf.linalg.matmul(a, b)}),
        ("while", [x2], lambda x: {"y": tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0), (0, x))[1]}),
        ("cond", [x2], lambda x: {"y": tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)}),
        ("bitwise_xor", [([None, 6], tf.int32)], lambda x: {"y": tf.bitwise.bitwise_xor(x, 1)}),
        ("right_shift", [([None, 6], tf.int32)], lambda x: {"y": tf.bitwise.right_shift(x, 1)}),
        ("bitwise_and", [([None, 6], tf.int32)], lambda x: {"y": tf.bitwise.bitwise_and(x, 3)}),
        ("gelu", [x2], lambda x: {"y": tf.nn.gelu(x, approximate=True) + tf.nn.silu(x)}),
        ("gelu_exact", [x2], lambda x: {"y": tf.nn.gelu(x, approximate=False)}),
        ("softplus", [x2], lambda x: {"y": tf.math.softplus(x)}),
        ("mirror", [x2], lambda x: {"y": tf.math.unsorted_segment_sum(x, [0, 0, 1, 1, 2, 2], 3) if False else tf.math.segment_sum(tf.transpose(x), [0, 0, 1, 1, 2, 2])}),
        ("scatter", [x2], lambda x: {"y": tf.scatter_nd([[1], [3]], tf.ones([2, 2]), [6, 2])[:, 0] + x[0]}),
        ("dims", [x2], lambda x: {"y": tf.math.is_nan(x), "z": tf.math.is_finite(x)}),
        ("conv", [x4], lambda x: {"y": tf.nn.conv2d(x, tf.ones([3, 3, 3, 2]), 1, "SAME") + tf.nn.bias_add(tf.nn.conv2d(x, tf.ones([1, 1, 3, 2]), 1, "SAME"), [1.0, 2.0])}),
        ("pool", [x4], lambda x: {"y": tf.nn.max_pool2d(x, 2, 2, "VALID") + tf.nn.avg_pool2d(x, 2, 2, "VALID")}),
        ("dwconv", [x4], lambda x: {"y": tf.nn.depthwise_conv2d(x, tf.ones([3, 3, 3, 1]), [1, 1, 1, 1], "SAME")}),
        ("real_div", [x2], lambda x: {"y": tf.math.divide_no_nan(x, x - 1.0) + tf.math.truediv(x, 3.0)}),
        ("matrix_diag", [x2], lambda x: {"y": tf.linalg.diag(x)}),
        ("sort", [x2], lambda x: {"y": tf.sort(x, direction="DESCENDING")}),
    ]


def keras_cases():
    """(name, model builder, fixed_batch) for Keras exports."""
    import keras
    L = keras.layers

    def seq(shape, *layers, batch=None):
        def build():
            x = keras.Input(shape, batch_size=batch, name="x")
            y = x
            for layer in layers:
                y = layer()(y)
            return keras.Model(x, y)
        return build

    img, vec, series = (16, 16, 3), (12,), (10, 4)
    cases = [
        ("dense", seq(vec, lambda: L.Dense(4, activation="relu"), lambda: L.Dense(3, activation="softmax"))),
        ("activations", seq(vec, *[(lambda a=a: L.Activation(a)) for a in (
            "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "swish", "gelu", "hard_sigmoid",
            "relu6", "leaky_relu", "exponential", "linear", "log_softmax", "mish", "hard_silu")])),
        ("conv", seq(img, lambda: L.Conv2D(4, 3, padding="same"), lambda: L.BatchNormalization(), lambda: L.ReLU(),
                     lambda: L.DepthwiseConv2D(3), lambda: L.SeparableConv2D(4, 3), lambda: L.MaxPooling2D(),
                     lambda: L.Conv2DTranspose(3, 3, strides=2), lambda: L.AveragePooling2D(2), lambda: L.GlobalAveragePooling2D())),
        ("conv_misc", seq(img, lambda: L.ZeroPadding2D(1), lambda: L.Cropping2D(1), lambda: L.UpSampling2D(),
                          lambda: L.Conv2D(2, 3, dilation_rate=2), lambda: L.GlobalMaxPooling2D())),
        ("conv1d", seq(series, lambda: L.Conv1D(4, 3, padding="causal"), lambda: L.MaxPooling1D(), lambda: L.Conv1DTranspose(2, 3),
                       lambda: L.AveragePooling1D(2), lambda: L.UpSampling1D(), lambda: L.GlobalAveragePooling1D())),
        ("conv3d", seq((6, 6, 6, 2), lambda: L.Conv3D(2, 3), lambda: L.Flatten())),
        ("pool3d", seq((6, 6, 6, 2), lambda: L.MaxPooling3D(), lambda: L.Flatten())),
        ("norms", seq(vec, lambda: L.LayerNormalization(), lambda: L.UnitNormalization(), lambda: L.Dropout(0.5),
                      lambda: L.GaussianNoise(0.1), lambda: L.Reshape((3, 4)), lambda: L.GroupNormalization(groups=2),
                      lambda: L.Permute((2, 1)), lambda: L.Flatten(), lambda: L.RepeatVector(2), lambda: L.Flatten())),
        ("preprocess", seq(img, lambda: L.Rescaling(1 / 255.0), lambda: L.Resizing(8, 8), lambda: L.CenterCrop(6, 6),
                           lambda: L.Normalization(mean=0.5, variance=0.25), lambda: L.Flatten(), lambda: L.Softmax())),
        ("prelu", seq(vec, lambda: L.PReLU(), lambda: L.ELU(), lambda: L.LeakyReLU(), lambda: L.ThresholdedReLU() if hasattr(L, "ThresholdedReLU") else L.ReLU(threshold=0.1))),
        ("embedding", lambda: keras.Model(*(lambda t: (t, L.GlobalAveragePooling1D()(L.Embedding(20, 4)(t))))(keras.Input((5,), dtype="int32", name="t")))),
        ("lstm", seq(series, lambda: L.LSTM(4, return_sequences=True), lambda: L.GRU(3), batch=1)),
        ("rnn", seq(series, lambda: L.SimpleRNN(3, return_sequences=True), lambda: L.Bidirectional(L.LSTM(2)), batch=1)),
        ("lstm_unrolled", seq(series, lambda: L.LSTM(4, unroll=True), batch=1)),
        ("timedist", seq(series, lambda: L.TimeDistributed(L.Dense(2)), lambda: L.Flatten())),
    ]

    def merge():
        a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
        outs = [L.Add()([a, b]), L.Subtract()([a, b]), L.Multiply()([a, b]), L.Average()([a, b]),
                L.Maximum()([a, b]), L.Minimum()([a, b]), L.Concatenate()([a, b]), L.Dot(axes=1)([a, b])]
        return keras.Model([a, b], outs)

    def attention():
        q = keras.Input((5, 8), name="q")
        y = L.MultiHeadAttention(2, 4)(q, q)
        z = L.Attention()([q, q])
        return keras.Model(q, [y, z, L.AdditiveAttention()([q, q])])
    return cases + [("merge", merge), ("attention", attention)]


def _convert_ok(folder: str) -> tuple[bool, str]:
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_saved_model(folder)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        data = conv.convert()
    except Exception as e:  # the converter raises ConverterError and friends
        return False, str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    from tflite_lab.inspect import inspect_tflite
    insp = inspect_tflite(data)
    if insp.flex_ops or insp.custom_ops:
        return False, f"needs {insp.flex_ops + insp.custom_ops}"
    return True, ""


def _ops(folder: str) -> set[str]:
    from tflite_lab import graph_policy
    return set(graph_policy.check_graph(graph_policy.parse_saved_model(folder)).reached)



def _record(case: str, folder: str, derived: dict, failed: list) -> None:
    """Ops of an export that converts become allowed (with the case as their source); else the failure is noted."""
    ok, why = _convert_ok(folder)
    ops = _ops(folder)
    if ok:
        for op in sorted(ops):
            derived.setdefault(op, case.replace(" ", ":", 1))
    else:
        failed.append(f"{case}: {why} (ops {sorted(ops - derived.keys() - STRUCTURAL.keys())})")
    print(f"{case}: {'ok' if ok else 'FAILED ' + why}", flush=True)

def main() -> None:
    import tensorflow as tf
    import keras
    derived: dict[str, str] = {}
    failed: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="derive-ops-"))
    for name, specs, fn in tf_cases():
        class M(tf.Module):
            pass
        m = M()
        m.serve = tf.function(fn, input_signature=[tf.TensorSpec(s, d, name=f"in{i}") for i, (s, d) in enumerate(specs)])
        folder = str(tmp / f"tf_{name}")
        try:
            tf.saved_model.save(m, folder, signatures={"serving_default": m.serve})
        except Exception as e:
            failed.append(f"tf {name}: export failed ({str(e).splitlines()[0][:100]})")
            continue
        _record(f"tf {name}", folder, derived, failed)
    for name, build in keras_cases():
        keras.utils.set_random_seed(0)
        folder = str(tmp / f"keras_{name}")
        try:
            model = build()
            kwargs = {}
            if model.inputs[0].shape[0] == 1:   # as TFLite Lab exports recurrent models: batch 1 kept
                specs = [keras.InputSpec(shape=tuple(t.shape), dtype=t.dtype) for t in model.inputs]
                kwargs["input_signature"] = [specs if len(specs) > 1 else specs[0]]
            model.export(folder, verbose=False, **kwargs)
        except Exception as e:
            failed.append(f"keras {name}: export failed ({str(e).splitlines()[0][:100]})")
            print(f"keras {name}: export FAILED {e}", flush=True)
            continue
        _record(f"keras {name}", folder, derived, failed)
    derived = {op: src for op, src in derived.items() if op not in STRUCTURAL and op not in CHECKPOINT_OPS
               and not any(op in v for v in RISKS_BY_KIND.values())}
    write_module(derived, failed)


def write_module(derived: dict[str, str], failed: list[str]) -> None:
    risks = {op: kind for kind, ops in RISKS_BY_KIND.items() for op in ops}
    lines = ['"""Generated by scripts/derive_op_allowlist.py; do not edit by hand (edit the script, run it).',
             "",
             "DERIVED: ops seen in a generated SavedModel that TFLite converted to builtin kernels only.",
             "STRUCTURAL: calls, control flow, variables, placeholders an export needs (hand-listed, with why).",
             "CHECKPOINT_OPS: allowed only where nothing but the saver_def reaches them.",
             "RISKS: wording for refused ops (what they would do); the rule itself is the allowlist.",
             '"""', "", "DERIVED = {"]
    lines += [f"    {op!r}: {src!r}," for op, src in sorted(derived.items())]
    lines += ["}", "", "STRUCTURAL = {"]
    lines += [f"    {op!r}: {why!r}," for op, why in sorted(STRUCTURAL.items())]
    lines += ["}", "", "CHECKPOINT_OPS = frozenset({"]
    lines += [f"    {op!r}," for op in sorted(CHECKPOINT_OPS)]
    lines += ["})", "", "RISKS = {"]
    lines += [f"    {op!r}: {kind!r}," for op, kind in sorted(risks.items())]
    lines += ["}", "", "ALLOWED_OPS = frozenset(DERIVED) | frozenset(STRUCTURAL)", "",
              "# Cases whose conversion needed more than builtins (their new ops stay refused):"]
    lines += [f"# {f}" for f in failed]
    (ROOT / "tflite_lab" / "op_allowlist.py").write_text("\n".join(lines) + "\n")
    print(f"{len(derived)} derived + {len(STRUCTURAL)} structural ops; {len(failed)} cases not builtin-only")


if __name__ == "__main__":
    main()
