"""Fair latency: the original and each .tflite timed with the same threads, alone (a bench phase
after every conversion of the run), batch 1, and the report says how."""
from __future__ import annotations

import json

from lab_helpers import run_cli


def test_matrix_times_both_sides_with_equal_threads_after_every_conversion(tiny_models, tmp_path):
    r = run_cli("matrix", tiny_models / "single.keras", "--routes", "keras", "saved_model", "--optimizations",
                "none", "dynamic", "--threads", "1", "--num-samples", "8", "--json", "--no-history")
    assert r.returncode == 0, r.stderr
    cells = [c for c in json.loads(r.stdout) if c.get("ok") is not None and c.get("latency_ms")]
    assert len(cells) == 4
    windows = [c["job_window"] for c in cells]
    for c in cells:
        cond = c["latency_conditions"]
        # Asked for 1 thread: TensorFlow's two pools and LiteRT all ran with it.
        assert cond["threads"] == cond["tf_intra_op_threads"] == cond["tf_inter_op_threads"] \
            == cond["litert_num_threads"] == 1
        assert cond["cpu_count"] >= 1 and cond["runs"] == 30 and cond["batch"] == 1
        assert "concrete function" in cond["original"]
        assert c["latency_ms"]["original"]["median"] > 0 and c["latency_ms"]["tflite"]["median"] > 0
        start, end = cond["phase_start"], cond["phase_end"]
        assert start < end
        for a, b in windows:            # no conversion job of this run was running while timing
            assert b <= start or a >= end, f"bench phase {start}-{end} overlaps a cell job {a}-{b}"
    assert len({c["latency_ms"]["original"]["median"] for c in cells}) == 1, "one timing of the original per model"


def test_a_single_convert_states_its_timing_conditions(tiny_models, tmp_path):
    r = run_cli("convert", tiny_models / "single.keras", "--route", "saved_model", "--num-samples", "8")
    assert r.returncode == 0, r.stderr
    assert "timed alone after the conversions:" in r.stdout
    assert "original as a TF concrete function on batch 1" in r.stdout
    r = run_cli("convert", tiny_models / "single.keras", "--threads", "0", "--no-latency")
    assert r.returncode == 2 and r.stderr.startswith("error: --threads must be at least 1")


def test_keras_route_alone_makes_no_export_and_other_routes_export_on_demand(tiny_models, tmp_path, monkeypatch):
    """`convert --route keras` skipped nothing it uses, but exported a SavedModel it never read (CPU
    on two cores, in the P1 convert time); now only a route that reads the export makes it."""
    import shutil
    # Opened models are cached by sha256 per process: the same bytes opened by an earlier test of
    # this process (from another store) would export beside that store's copy.
    from tflite_lab import models
    monkeypatch.setattr(models, "_OPENED", {})
    from tflite_lab.pipeline import BenchSpec, SampleSpec, prepare, run_cell, source_json
    from tflite_lab.sources import source_from_path
    store = str(tmp_path / "store")
    model = tmp_path / "alone.keras"
    shutil.copy(tiny_models / "single.keras", model)
    src = source_from_path(model, store=tmp_path / "store")
    off = BenchSpec(enabled=False)
    p = prepare(source_json(src), SampleSpec(count=4), off, store_root=store, export=False)
    exports = lambda: sorted(x.name for x in __import__("pathlib").Path(src.path).parent.glob("export*"))  # noqa: E731
    assert p["export_dir"] is None and exports() == []
    assert run_cell(p, "keras", "none", bench=off, store_root=store)["metrics"][0]["max_abs_error"] < 1e-5
    assert exports() == []
    rep = run_cell(p, "saved_model", "none", bench=off, store_root=store)
    assert rep["metrics"][0]["max_abs_error"] < 1e-5 and len(exports()) == 1
    # This process's TensorFlow has run ops with its default pools, so 1 thread can only be had in a
    # fresh process: the bench must say 1 on both sides, never time with mismatched counts.
    from tflite_lab.bench import bench_phase
    from tflite_lab.runtime import set_tf_threads
    assert not set_tf_threads(1)
    cond = bench_phase(p, {"c": rep["tflite_path"]}, BenchSpec(threads=1))["conditions"]
    assert cond["tf_intra_op_threads"] == cond["tf_inter_op_threads"] == cond["litert_num_threads"] == 1
