"""The graph allowlist (tflite_lab/graph_policy.py) against models that read or write the host.

One subprocess builds the corpus (tests/policy_corpus.py) and proves each model armed: run by plain
TensorFlow, it reads the canary's random secret or writes its marker. Then TFLite Lab must refuse
each before any TensorFlow execution: exit 2 / SourceError with one line naming the op and its
risk, the secret in no output (stdout, stderr, --out, the store), no marker, and the next normal
conversion works.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from lab_helpers import ROOT, SAMPLES, run_cli, zip_folder
from tflite_lab.errors import SourceError
from tflite_lab.pipeline import BenchSpec, SampleSpec, source_json
from tflite_lab.sources import detect_format, source_from_path
from tflite_lab.types import ModelSource
from tflite_lab.worker import WorkerPool

# model -> fragments of the one-line refusal (op name and risk words)
CASES = {
    "sm_table_file": ["InitializeTableFromTextFileV2 (", "reads files"],
    "sm_restore_foreign": ["RestoreV2 (", "reads files"],
    "sm_immutable_const": ["ImmutableConst (", "reads files"],
    "sm_print_file": ["PrintV2 (", "writes files"],
    "sm_summary_writer": ["CreateSummaryFileWriter (", "writes files"],
    "sm_while_readfile": ["ReadFile (StatelessWhile body", "reads files"],
    "sm_if_writefile": ["WriteFile (If then_branch", "writes files"],
    "sm_nested_call_readfile": ["ReadFile (PartitionedCall f '__inference_inner", "reads files"],
    "sm_case_readfile": ["ReadFile (StatelessCase branches", "reads files"],
    "sm_dataset_reader": ["TextLineDataset (", "reads files"],
    "sm_svd": ["Svd (", "no TFLite builtin kernel; it would also need Flex, which LiteRT here cannot run"],
}
# Keras and HDF5 files: refused from the stored config / HDF5 structure, before Keras opens them.
KERAS_CASES = {
    "k_tfsm.keras": ["layer TFSMLayer 'tfsm' loads a model from", "reader_sm", "field 'filepath'", "reads files"],
    "k_stringlookup_path.keras": ["layer StringLookup 'lookup' takes its vocabulary from the path", "secret.txt",
                                  "field 'vocabulary'", "reads files"],
    "k_textvec_url.keras": ["layer TextVectorization 'lookup' takes its vocabulary", "file://", "reads files"],
    "k_stringlookup_dotdot.keras": ["'../canary/secret.txt' (field 'vocabulary')", "reads files"],
    "h5_external_link.h5": ["is an external link to", "secret.h5:/secret", "reads files"],
    "h5_virtual_dataset.h5": ["is virtual (reads", "secret.h5", "reads files"],
    "h5_external_storage.h5": ["is stored in external file", "secret.txt", "reads files"],
    "k_weights_link.keras": ["(model.weights.h5) is refused", "external link", "reads files"],
}
# .tflite files: only builtin ops run.
TFLITE_CASES = {
    "t_flex_readfile.tflite": ["t_flex_readfile.tflite is refused: only builtin ops run here",
                               "FlexReadFile (Flex op: reads files)"],
    "t_custom_readfile.tflite": ["ReadFile (custom op: reads files)"],
}
# Through the CLI (one worker start each); every case also goes through the worker jobs below.
CLI_SUBSET = ["t_flex_readfile.tflite", "sm_table_file.zip", "sm_restore_foreign.zip", "sm_while_readfile.zip",
              "sm_if_writefile.zip", "k_tfsm.keras", "h5_external_link.h5"]
FRAGMENTS = {**{f"{k}.zip": v for k, v in CASES.items()}, **KERAS_CASES, **TFLITE_CASES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    dirs = {k: root / k for k in ("models", "canary", "markers", "armed")}
    for d in dirs.values():
        d.mkdir()
    secret = "canary-" + secrets.token_hex(12)
    (dirs["canary"] / "secret.txt").write_text(secret)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "policy_corpus.py"), *map(str, dirs.values())],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    armed = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in CASES:
        zip_folder(dirs["models"] / name, dirs["models"] / f"{name}.zip")
    # The models only name the canary: a leak found later can only come from running them.
    for f in dirs["models"].rglob("*"):
        assert not f.is_file() or secret.encode() not in f.read_bytes(), f
    assert not any(dirs["markers"].iterdir())
    return {**dirs, "secret": secret, "armed_result": armed}


def assert_no_leak(corpus, *texts_and_dirs):
    secret = corpus["secret"]
    for item in texts_and_dirs:
        if isinstance(item, Path):
            for f in item.rglob("*") if item.exists() else []:
                assert not f.is_file() or secret.encode() not in f.read_bytes(), f"secret leaked into {f}"
        else:
            assert secret not in item
    assert not any(corpus["markers"].iterdir()), f"a model ran: {list(corpus['markers'].iterdir())}"


def test_the_corpus_is_armed(corpus):
    """Run by plain TensorFlow, every model reads the secret or writes its marker (svd: just runs)."""
    r, n = corpus["armed_result"], corpus["armed_result"]["secret_len"]
    assert n == len(corpus["secret"])
    for name in ("sm_table_file", "sm_restore_foreign", "sm_immutable_const", "sm_dataset_reader"):
        assert r[name]["read_secret"], (name, r[name])
    # FlexReadFile runs the reader graph k_tfsm proved armed; this TensorFlow build's interpreter has no
    # Flex delegate, so it cannot be run here (the refusal is what keeps a Flex-enabled host safe).
    assert not r["t_flex_readfile"]["ran"] and "not supported by this interpreter" in r["t_flex_readfile"]["error"]
    for name in ("sm_print_file", "sm_summary_writer", "sm_if_writefile"):
        assert r[name]["wrote_marker"], (name, r[name])
    # The others fold the secret's length into their output (x = ones(2, 3)).
    assert r["sm_while_readfile"]["y"] == 6 * (1 + 2 * n)       # read once per row
    assert r["sm_nested_call_readfile"]["y"] == 6 * (n + 1)
    assert r["sm_case_readfile"]["y"] == 6 * n
    assert r["sm_svd"]["ran"]
    assert r["k_tfsm"]["y"] == 6 * n                 # the TFSMLayer's SavedModel read the file
    for name in ("k_stringlookup_path", "k_textvec_url", "k_stringlookup_dotdot", "h5_external_link",
                 "h5_virtual_dataset", "h5_external_storage", "k_weights_link"):
        assert r[name]["read_secret"], (name, r[name])


@pytest.mark.parametrize("name", CLI_SUBSET)
def test_cli_refuses_before_running(corpus, tmp_path, name):
    out, store = tmp_path / "out", tmp_path / "store"
    r = run_cli("convert", corpus["models"] / name, "--no-latency", "--out", out, cwd=tmp_path,
                env={"TFLITE_LAB_CACHE": str(store)})
    both = r.stdout + r.stderr
    assert r.returncode == 2, both
    assert "Traceback" not in both and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert f"{name} is refused" in lines[0] or f"{name} (model.weights.h5) is refused" in lines[0]
    for frag in FRAGMENTS[name]:
        assert frag in lines[0], (frag, lines[0])
    assert_no_leak(corpus, r.stdout, r.stderr, out, store)


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(1) as p:
        yield p


@pytest.mark.parametrize("name", list(CASES))
def test_describe_and_prepare_refuse(corpus, pool, tmp_path, name):
    """The same refusal from the worker jobs the pages run (describe, then the reference run)."""
    store = tmp_path / "store"
    src = source_json(source_from_path(corpus["models"] / name, store=store))
    for job, kwargs in (("describe", {}), ("prepare", {"spec": SampleSpec(count=2), "bench": BenchSpec(enabled=False),
                                                         "store_root": str(store)})):
        with pytest.raises(SourceError) as ei:
            pool.run(job, source=src, **kwargs)
        msg = ei.value.user_message
        assert ei.value.exit_code == 2 and "\n" not in msg
        assert msg.startswith(f"{name} is refused before anything runs: its graph uses ")
        for frag in CASES[name]:
            assert frag in msg, (frag, msg)
        assert_no_leak(corpus, msg, ei.value.detail, store)


def test_allowed_savedmodels_are_described_from_the_protobuf(pool, tiny_models):
    """Clean SavedModels pass; describe's signature (read from the protobuf) is the loaded one's."""
    for path in (SAMPLES / "diabetes_regressor_savedmodel.zip", tiny_models / "multi_sm.zip"):
        src = source_json(source_from_path(path))
        d = pool.run("describe", source=src)
        prepared = pool.run("prepare", source=src, spec=SampleSpec(count=2), bench=BenchSpec(enabled=False))
        assert d["signature"] == prepared["signature"], path
        assert d["info"]["params"] > 0


@pytest.mark.parametrize("name", list(KERAS_CASES) + list(TFLITE_CASES))
def test_keras_hdf5_and_tflite_refused_before_they_open(corpus, pool, tmp_path, name):
    """Refused where the file is taken in (a .keras config is plain JSON, checked in the server) or
    else in the worker, before Keras or LiteRT opens it; and the worker refuses it on its own too,
    should the file reach it by another way."""
    store = tmp_path / "store"
    path = corpus["models"] / name
    errors = []
    try:
        pool.run("describe", source=source_json(source_from_path(path, store=store)))
    except SourceError as e:
        errors.append(e)
    data = path.read_bytes()
    fmt = detect_format(data, name)
    placed = store / "unchecked" / name
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data)
    unchecked = ModelSource(path=str(placed), format=fmt, sha256=hashlib.sha256(data).hexdigest(),
                            size_bytes=len(data), filename=name)
    try:
        pool.run("describe", source=source_json(unchecked))
    except SourceError as e:
        errors.append(e)
    assert len(errors) == 2, f"{name} was not refused at both stages"
    assert errors[0].user_message == errors[1].user_message
    msg = errors[0].user_message
    assert errors[0].exit_code == 2 and "\n" not in msg
    for frag in FRAGMENTS[name]:
        assert frag in msg, (frag, msg)
    for e in errors:
        assert_no_leak(corpus, e.user_message, e.detail, store)


@pytest.mark.parametrize("config, fragments", [
    ({"class_name": "Dense", "config": {"name": "d", "note": "/etc/passwd"}},
     ["layer Dense 'd' has an absolute path in field 'note'", "reads files"]),
    ({"class_name": "Dense", "config": {"name": "d", "kernel_initializer": {"config": {"path": "../x"}}}},
     ["layer Dense 'd' has a '..' path in field 'path'"]),
    ({"class_name": "Conv2D", "config": {"name": "c", "weights_url": "https://example.com/w.h5"}},
     ["layer Conv2D 'c' has a URL in field 'weights_url'", "network"]),
    ({"class_name": "IntegerLookup", "config": {"name": "i", "idf_weights": "C:\\w.npy"}},
     ["layer IntegerLookup 'i' takes its idf_weights from the path", "reads files"]),
])
def test_config_paths_are_refused_by_field(config, fragments):
    from tflite_lab.sources import check_keras_paths
    with pytest.raises(SourceError) as ei:
        check_keras_paths({"class_name": "Functional", "config": {"layers": [config]}}, "m.keras")
    for frag in fragments:
        assert frag in ei.value.user_message, ei.value.user_message


def test_clean_keras_configs_pass_the_path_check():
    """Every bundled Keras sample's config has no path, URL or file-loading layer."""
    from tflite_lab.sources import check_keras_file, source_from_path as src_of
    for path in sorted(SAMPLES.glob("*.keras")) + sorted(SAMPLES.glob("*.h5")):
        check_keras_file(src_of(path))


def test_the_allowlist_holds_no_risky_op():
    """The derived list can only grow with ops TFLite lowers; none may be one that touches the host."""
    from tflite_lab.op_allowlist import ALLOWED_OPS, CHECKPOINT_OPS, DERIVED, RISKS, STRUCTURAL
    assert not ALLOWED_OPS & set(RISKS), sorted(ALLOWED_OPS & set(RISKS))
    assert not ALLOWED_OPS & CHECKPOINT_OPS
    assert {"Conv2D", "MatMul", "Softmax", "ConcatV2"} <= set(DERIVED)      # seen in converted models
    assert {"StatefulPartitionedCall", "While", "If", "ReadVariableOp"} <= set(STRUCTURAL)


@pytest.mark.slow
def test_next_conversion_works_after_the_refusals(corpus, tmp_path):
    r = run_cli("convert", SAMPLES / "diabetes_regressor_savedmodel.zip", "--samples",
                SAMPLES / "diabetes_regressor.samples.npy", "--no-latency", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("saved_model-none: PASS"), r.stdout
    assert_no_leak(corpus, r.stdout, r.stderr)
