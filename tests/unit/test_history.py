"""Run history: CLI runs recorded, listed, shown, reported and deleted; migrations; corrupt files;
concurrent writers. Real conversions of the bundled digits CNN, in a private data directory."""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from lab_helpers import ROOT, SAMPLES, run_cli

from tflite_lab.history import SCHEMA_VERSION, History, RunFilter
from tflite_lab.people import owner
from tflite_lab.types import sha256_arrays

pytestmark = pytest.mark.slow
MODEL = SAMPLES / "digits_cnn.keras"
SAMPLES_FILE = SAMPLES / "digits_cnn.samples.npz"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A data directory with its own store: deleting runs here never touches the session's store."""
    d = tmp_path_factory.mktemp("home")
    return {"TFLITE_LAB_HOME": str(d), "TFLITE_LAB_CACHE": str(d / "store")}


def cli(home, *args, **kw):
    return run_cli(*args, env=home, **kw)


@pytest.fixture(scope="module")
def two_runs(home, tmp_path_factory):
    """dynamic (plain --json) and none (with --report): same model and samples, so they share files."""
    out = tmp_path_factory.mktemp("reports")
    runs = []
    for opt, extra in (("dynamic", []), ("none", ["--report", out / "none.html", "--note", "baseline <b>f32</b>"])):
        p = cli(home, "convert", MODEL, "--samples", SAMPLES_FILE, "--num-samples", 24, "--optimize", opt,
                "--json", *extra)
        assert p.returncode == 0, p.stderr
        runs.append(json.loads(p.stdout))
    return runs, out / "none.html"


def history_json(home, *args):
    p = cli(home, "history", *args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_convert_records_what_a_run_is(home, two_runs):
    (dyn, none), _ = two_runs
    import getpass
    listed = history_json(home, "--json", "--author", getpass.getuser())["runs"]      # no --author: the OS user
    assert {r["id"] for r in listed} == {dyn["run_id"], none["run_id"]}
    assert listed[0]["author"] == {"email": "", "name": getpass.getuser(), "subject": f"os:{getpass.getuser()}"}
    for public in (dyn, none):
        assert re.fullmatch(r"[a-z2-9]{8}", public["run_id"])
    listed = history_json(home, "--json", "--model", "digits_cnn.keras")
    assert listed["total"] == 2 and [r["id"] for r in listed["runs"]] == [none["run_id"], dyn["run_id"]]
    run = history_json(home, "show", dyn["run_id"], "--json")
    model_bytes = MODEL.read_bytes()
    assert run["model"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert (run["route"], run["recipe"], run["kind"], run["origin"]) == ("saved_model", "dynamic", "convert", "cli")
    assert run["verdict"] == "pass" and run["tolerances"] == dyn["tolerances"]
    assert [m["max_abs_error"] for m in run["metrics"]] == [o["max_abs_error"] for o in dyn["outputs"]]
    # The samples hash is the hash of the arrays actually used (recomputed here from the store file).
    with np.load(run["artifacts"]["samples"][0]) as z:
        arrays = {k: z[k] for k in z.files}
    assert run["samples"]["sha256"] == sha256_arrays(arrays) and run["samples"]["count"] == 24
    assert len(next(iter(arrays.values()))) == 24
    assert run["versions"]["tensorflow"] == version("tensorflow")
    assert run["versions"]["keras"] == version("keras") and run["versions"]["litert"] == version("ai-edge-litert")
    assert run["host_cpu"] and run["latency"]["tflite"]["median_ms"] > 0 and "threads" in run["latency"]["tflite"]
    assert run["tflite_bytes"] == dyn["tflite_bytes"] == len(open(run["artifacts"]["tflite"][0], "rb").read())
    for kind in ("tflite", "samples", "reference", "predictions", "script"):
        assert len(run["artifacts"][kind]) == 1, kind
    script = open(run["artifacts"]["script"][0]).read()
    assert "Optimize.DEFAULT" in script and "digits_cnn.keras" in script
    assert run["accuracy"] == dyn["accuracy"] and run["accuracy"]["metric"]     # the bundled samples carry labels
    assert history_json(home, "--json", "--verdict", "fail")["total"] == 0
    assert history_json(home, "--json", "--search", "<b>F32")["runs"][0]["id"] == none["run_id"]
    text = cli(home, "history").stdout
    assert dyn["run_id"] in text and "2 of 2 runs" in text


def test_html_report_single_and_side_by_side(home, two_runs, tmp_path):
    (dyn, none), written = two_runs
    html = written.read_text()
    head, rest = html.split("</script>", 1)            # plotly.js itself, inlined (it mentions URLs it never uses)
    assert head.endswith(__import__("plotly.offline").offline.get_plotlyjs()) and "<script src" not in rest
    assert "http://" not in rest and "https://" not in rest
    assert "Per-output metrics against tolerances" in html and "baseline &lt;b&gt;f32&lt;/b&gt;" in html
    import getpass
    assert f'by <span class="author">{getpass.getuser()}</span>' in html and "No review yet." in html
    assert html.count("Plotly.newPlot") >= 4 and version("tensorflow") in html
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() in html
    assert written.stat().st_size < 6e6
    out = tmp_path / "both.html"
    p = cli(home, "report", dyn["run_id"], none["run_id"], "--out", out)
    assert p.returncode == 0, p.stderr
    both = out.read_text()
    assert "Side by side" in both and "Original vs TFLite, runs overlaid" in both      # same samples: overlaid
    assert dyn["run_id"] in both and none["run_id"] in both
    bad = cli(home, "report", "nosuchid", "--out", tmp_path / "x.html")
    assert bad.returncode == 2 and bad.stderr.startswith("error: No run 'nosuchid'")


@pytest.fixture(scope="module")
def matrix_run(home, two_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix") / "matrix.html"
    # One new conversion (cli-none) and one refusal (the CLI route cannot calibrate int8).
    p = cli(home, "matrix", MODEL, "--samples", SAMPLES_FILE, "--num-samples", 24, "--routes", "cli",
            "--optimizations", "none", "int8", "--no-latency", "--json", "--report", out)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout), out


def test_matrix_is_one_run_with_every_cell(home, matrix_run):
    cells, out = matrix_run
    run_id = cells[0]["run_id"]
    assert {c["run_id"] for c in cells} == {run_id}
    run = history_json(home, "show", run_id, "--json")
    assert run["kind"] == "matrix"
    computed = {f"{c['route']}-{c['optimization']}" for c in cells if not c.get("error")}
    assert {r["cell"] for r in run["reports"]} == computed
    assert "cli-int8" in run["failed_cells"]          # refused: the CLI route cannot calibrate
    html = out.read_text()
    assert "Matrix: " in html and "Size vs error" in html and "refused" in html


def test_delete_removes_only_unshared_files(home, two_runs, matrix_run):
    import os
    (dyn, none), _ = two_runs
    cells, _ = matrix_run
    run = history_json(home, "show", cells[0]["run_id"], "--json")
    others = {p for r in (dyn, none) for ps in history_json(home, "show", r["run_id"], "--json")["artifacts"].values()
              for p in ps}
    mine = {p for ps in run["artifacts"].values() for p in ps}
    assert mine - others and mine & others        # the cli-none files are the matrix's own; the samples are shared
    p = cli(home, "history", "delete", run["id"], "--author", "ana@example.org")
    assert p.returncode == 0, p.stderr
    assert all(os.path.exists(path) for path in mine)           # in the trash: every file kept
    gone = cli(home, "history", "show", run["id"])
    assert gone.returncode == 2 and f"No run '{run['id']}'" in gone.stderr
    trash = history_json(home, "trash", "--json")["runs"]
    assert [(r["id"], r["deleted_by"]) for r in trash] == [(run["id"], "ana@example.org")]
    assert cli(home, "history", "restore", run["id"]).returncode == 0
    assert history_json(home, "show", run["id"], "--json")["reports"] == run["reports"]
    assert cli(home, "history", "delete", run["id"]).returncode == 0
    p = cli(home, "history", "trash", "--empty")
    assert p.returncode == 0 and "deleted 1 run(s)" in p.stdout, p.stderr
    for path in mine:
        assert os.path.exists(path) == (path in others), path
    assert history_json(home, "trash", "--json")["total"] == 0


def test_corrupt_database_refused_and_untouched(home, tmp_path):
    bad_home = tmp_path / "bad"
    bad_home.mkdir()
    db = bad_home / "history.sqlite"
    db.write_bytes(b"this is not a database, just bytes " * 100)
    before = db.read_bytes()
    env = {**home, "TFLITE_LAB_HOME": str(bad_home)}
    p = run_cli("convert", MODEL, "--samples", SAMPLES_FILE, "--num-samples", 24, "--json", env=env)
    assert p.returncode == 2 and str(db) in p.stderr and p.stderr.startswith("error: The run history")
    assert len(p.stderr.strip().splitlines()) == 1
    p = run_cli("history", env=env)
    assert p.returncode == 2 and str(db) in p.stderr
    assert db.read_bytes() == before and sorted(x.name for x in bad_home.iterdir()) == ["history.sqlite"]
    p = run_cli("convert", MODEL, "--samples", SAMPLES_FILE, "--num-samples", 24, "--json", "--no-history", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["run_id"] is None and db.read_bytes() == before


def test_foreign_and_newer_databases_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(Exception, match="other tables \\(customers\\)"):
        History(other)
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(Exception, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        History(newer)


def _real_run(home, two_runs) -> dict:
    (_, none), _ = two_runs
    run = history_json(home, "show", none["run_id"], "--json")
    for k in ("id", "summary_row"):
        run.pop(k, None)
    run["artifacts"] = {k: v for k, v in run["artifacts"].items()}
    return run


V1_COLUMNS = ("id", "created_at", "kind", "origin", "model_name", "model_sha256", "route", "recipe", "verdict",
              "samples_desc", "samples_sha256", "original_bytes", "tflite_bytes", "latency_ms", "max_abs_sort",
              "summary", "note", "data")


def test_migration_from_v1_keeps_every_row(home, two_runs, tmp_path):
    run = _real_run(home, two_runs)
    path = tmp_path / "v1.sqlite"
    History(path, schema_version=1).close()
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        assert "reviewer" not in {r[1] for r in c.execute("PRAGMA table_info(runs)")}
        for i in range(30):
            c.execute(f"INSERT INTO runs ({', '.join(V1_COLUMNS)}) VALUES ({', '.join('?' * len(V1_COLUMNS))})",
                      (f"v1run{i:03d}", 1_700_000_000 + i, "convert", "cli", run["model"]["filename"],
                       run["model"]["sha256"], run["route"], run["recipe"], run["verdict"],
                       run["samples"]["description"], run["samples"]["sha256"], run["original_bytes"],
                       run["tflite_bytes"], 1.0 + i, 0.001, json.dumps(run["summary"]), f"note {i}",
                       json.dumps({k: v for k, v in run.items() if k not in ("reports", "artifacts", "note")})))
            c.execute("INSERT INTO run_reports VALUES (?, 0, ?, ?)", (f"v1run{i:03d}", run["cell"],
                                                                   json.dumps(run["reports"][0])))
            c.execute("INSERT INTO artifacts VALUES (?, 'tflite', ?)", (f"v1run{i:03d}", f"/nowhere/{i}.tflite"))
    with History(path) as h:
        assert h.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert h.count() == 30
        # v3 moved the JSON blob to its own table: out of the rows the History page scans.
        assert "data" not in {r[1] for r in h.db.execute("PRAGMA table_info(runs)")}
        assert h.db.execute("SELECT COUNT(*) FROM run_data").fetchone()[0] == 30
        for i in range(30):
            got = h.get(f"v1run{i:03d}")
            assert got["note"] == f"note {i}" and got["reviews"] == [] and got["latency_ms"] == 1.0 + i
            assert got["author"] is None                   # recorded before sign-in
            assert got["metrics"] == run["metrics"] and got["reports"][0]["metrics"] == run["reports"][0]["metrics"]
            assert got["artifacts"] == {"tflite": [f"/nowhere/{i}.tflite"]}
        assert h.update("v1run007", actor=owner(), note="seen by ana")
        assert h.runs(RunFilter(search="ana"))[0]["id"] == "v1run007"


WRITER = """
import json, sys
from tflite_lab.history import History
run = json.load(open(sys.argv[2]))
with History(sys.argv[1]) as h:
    ids = [h.record({**run, "note": f"writer {sys.argv[3]} #{i}"}) for i in range(25)]
print(json.dumps(ids))
"""


def test_four_processes_writing_at_once_lose_no_run(home, two_runs, tmp_path):
    run = _real_run(home, two_runs)
    (tmp_path / "run.json").write_text(json.dumps(run))
    db = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(tmp_path / "run.json"), str(w)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        ids += json.loads(out)
    assert len(ids) == len(set(ids)) == 100
    with History(db) as h:
        assert h.count() == 100 and h.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for w in range(4):
            assert h.count(RunFilter(search=f"writer {w} #")) == 25
        assert h.get(ids[57])["reports"][0]["metrics"] == run["reports"][0]["metrics"]
