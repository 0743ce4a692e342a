"""KerasHub models from .keras files: tiny backbones and a task model built here (random weights),
loaded with safe_mode=True, converted through the CLI on every route; and hostile variants (a
tokenizer vocabulary naming a host file or URL, preset handles, forged registered names, other
custom objects) refused in one line before Keras reads anything, with the canary in no output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lab_helpers import run_cli
from tflite_lab.errors import SourceError
from tflite_lab.sources import load_source

pytestmark = pytest.mark.slow

BUILD = r'''
import sys
import keras, keras_hub
out = sys.argv[1]
keras.utils.set_random_seed(0)
kw = dict(vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
bert = keras_hub.models.BertBackbone(**kw)
bert.save(f"{out}/bert.keras")
keras_hub.models.BertTextClassifier(backbone=bert, num_classes=3, preprocessor=None).save(f"{out}/classifier.keras")
keras_hub.models.GPT2Backbone(**kw).save(f"{out}/gpt2.keras")
tok = keras_hub.models.BertTokenizer(vocabulary=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer=tok, sequence_length=16)
keras_hub.models.BertTextClassifier(backbone=bert, num_classes=3, preprocessor=pre).save(f"{out}/with_tokenizer.keras")
'''
CANARY = "CANARY-7f3e1c-do-not-print"
ONE_LINE = "one line"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The models (built once per module), token samples and a canary secret in a host file."""
    d = tmp_path_factory.mktemp("kerashub")
    proc = subprocess.run([sys.executable, "-c", BUILD, str(d)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rng = np.random.default_rng(0)
    n, length = 8, 16
    lengths = rng.integers(4, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype("int32")
    tokens = (rng.integers(1, 100, (n, length)) * mask).astype("int32")
    np.savez(d / "bert_samples.npz", token_ids=tokens, segment_ids=np.zeros((n, length), "int32"), padding_mask=mask)
    np.savez(d / "gpt2_samples.npz", token_ids=tokens, padding_mask=mask)
    secret = tmp_path_factory.mktemp("host") / "notes.txt"
    secret.write_text(f"{CANARY}\n[UNK]\n")
    return {"dir": d, "secret": secret}


def _edit_config(src: Path, dest: Path, edit) -> Path:
    """Copy a .keras zip with its config.json changed by ``edit(config)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            zout.writestr(info, data)
    return dest


def _nodes(config, class_name):
    if isinstance(config, dict):
        if config.get("class_name") == class_name:
            yield config
        for v in config.values():
            yield from _nodes(v, class_name)
    elif isinstance(config, list):
        for v in config:
            yield from _nodes(v, class_name)


def _set(class_name, key, value):
    def edit(config):
        for node in _nodes(config, class_name):
            node["config"][key] = value
    return edit


def one_line_error(proc, *fragments) -> str:
    """Exit 2, one 'error:' line on stderr, no traceback, the canary nowhere."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert CANARY not in proc.stdout and CANARY not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


# ---- what loads ----

@pytest.mark.parametrize("name", ["bert", "classifier", "gpt2", "with_tokenizer"])
def test_inspect_loads_kerashub_models(hub, name):
    proc = run_cli("inspect", hub["dir"] / f"{name}.keras")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "token_ids" in proc.stdout and "padding_mask" in proc.stdout
    assert "custom objects" not in proc.stderr


# Measured on keras-hub 0.32.0 / TF 2.21: saved_model, concrete_function and cli convert every model
# (max abs error <= 5e-7); keras fails: TF's from_keras_model gives the model's input *list* to a model
# with dict inputs, its export fails, and TF falls back to a tf_keras-only path ("'NoneType' object is
# not callable"). That failure must stay one line.
ROUTES_OK = ["saved_model", "concrete_function", "cli"]


@pytest.mark.parametrize("name, samples", [("classifier", "bert"), ("gpt2", "gpt2")])
@pytest.mark.parametrize("route", ROUTES_OK)
def test_convert_kerashub_model(hub, tmp_path, name, samples, route):
    report = tmp_path / "report.json"
    proc = run_cli("convert", hub["dir"] / f"{name}.keras", "--route", route, "--json", "--no-latency",
                   "--no-history", "--samples", hub["dir"] / f"{samples}_samples.npz", "--report", report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["verdict"] == "pass" and r["ok"]
    assert r["num_samples"] == 8
    for out in r["outputs"]:
        assert out["max_abs_error"] < 1e-5, out


def test_keras_route_fails_in_one_line(hub):
    proc = run_cli("convert", hub["dir"] / "bert.keras", "--route", "keras", "--json", "--no-latency",
                   "--no-history", "--samples", hub["dir"] / "bert_samples.npz")
    assert proc.returncode in (2, 3), proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "keras-none failed" in lines[0]
    assert "inputs are a dict" in lines[0] and "Use the saved_model route" in lines[0]


# ---- what is refused, before Keras reads anything ----

def _hostile(hub, tmp_path, edit, name="with_tokenizer"):
    return _edit_config(hub["dir"] / f"{name}.keras", tmp_path / "hostile.keras", edit)


@pytest.mark.parametrize("value", ["{secret}", "notes.txt", "https://example.com/vocab.txt", "../host/notes.txt"])
def test_tokenizer_vocabulary_outside_the_archive_is_refused(hub, tmp_path, value):
    value = value.format(secret=hub["secret"])
    path = _hostile(hub, tmp_path, _set("BertTokenizer", "vocabulary", value))
    report = tmp_path / "report.json"
    # run where a relative 'notes.txt' names the secret
    proc = run_cli("convert", path, "--json", "--no-latency", "--no-history", "--report", report,
                   cwd=hub["secret"].parent)
    line = one_line_error(proc, "hostile.keras is refused", "BertTokenizer", "'vocabulary'")
    assert "outside the archive" in line or "preset handle" in line or "URL" in line
    assert not report.exists() or CANARY not in report.read_text()
    proc = run_cli("inspect", path, cwd=hub["secret"].parent)
    one_line_error(proc, "hostile.keras is refused")


@pytest.mark.parametrize("key", ["merges", "proto"])
def test_other_tokenizer_asset_fields_are_refused(hub, tmp_path, key):
    path = _hostile(hub, tmp_path, _set("BertTokenizer", key, str(hub["secret"])))
    with pytest.raises(SourceError, match=f"takes its {key} from") as e:
        load_source(path.read_bytes(), path.name, store=tmp_path / "store")
    assert CANARY not in e.value.user_message and "\n" not in e.value.user_message


@pytest.mark.parametrize("handle", ["kaggle://keras/bert/keras/bert_tiny_en_uncased", "hf://google/bert",
                                    "modelscope://x/y", "gs://bucket/model"])
def test_preset_handles_in_any_string_are_refused(hub, tmp_path, handle):
    path = _hostile(hub, tmp_path, _set("BertTextClassifierPreprocessor", "config_file", handle))
    proc = run_cli("convert", path, "--no-latency", "--no-history")
    one_line_error(proc, "preset handle", "KerasHub would download it", handle[:20])


def test_forged_kerashub_name_is_refused_in_the_worker(hub, tmp_path):
    """Looks like KerasHub by its names (passes the server's check) but keras_hub registers no such class."""
    def edit(config):
        config["registered_name"] = "keras_hub>NotAClass"
    path = _hostile(hub, tmp_path, edit, name="bert")
    proc = run_cli("inspect", path)
    one_line_error(proc, "uses custom objects", "keras_hub>NotAClass", "does not register", "model.export(DIR)")


def test_kerashub_name_from_another_module_is_refused(hub, tmp_path):
    def edit(config):
        config["module"] = "evil_pkg.layers"
    path = _hostile(hub, tmp_path, edit, name="bert")
    with pytest.raises(SourceError, match="from module evil_pkg.layers"):
        load_source(path.read_bytes(), path.name, store=tmp_path / "store")


def test_other_custom_objects_are_told_to_export_a_saved_model(hub, tmp_path):
    def edit(config):
        config.update(module="my_models.layers", registered_name="my_models>BertBackbone")
    path = _hostile(hub, tmp_path, edit, name="bert")
    proc = run_cli("convert", path, "--no-latency", "--no-history")
    line = one_line_error(proc, "uses custom objects", "my_models")
    assert line.endswith("export a SavedModel with model.export(DIR), zip the folder and upload that "
                         "(the keras route then does not apply).")


def test_lambda_next_to_kerashub_is_still_refused(hub, tmp_path):
    def edit(config):
        config["config"]["extra"] = {"class_name": "Lambda", "module": "keras.layers",
                                     "config": {"name": "payload", "function": "x"}, "registered_name": None}
    path = _hostile(hub, tmp_path, edit, name="bert")
    with pytest.raises(SourceError, match="Lambda 'payload'"):
        load_source(path.read_bytes(), path.name, store=tmp_path / "store")
