"""Debug page: on a model with one layer int8 cannot take, the tables, charts and graph render, the
layer is ranked first and preselected, and keeping it float makes a new cell that Compare shows."""
from __future__ import annotations

import pytest
from apptest_helpers import assert_clean, go, texts, upload_model

pytestmark = pytest.mark.slow


def test_debug_then_keep_float_makes_a_cell_on_compare(app, sensitive_model):
    upload_model(app, "sensitive.keras", (sensitive_model / "sensitive.keras").read_bytes())
    app.radio[0].set_value("upload").run()
    app.file_uploader(key="samples_upload").upload("sensitive.samples.npz",
                                                   (sensitive_model / "sensitive.samples.npz").read_bytes()).run()
    go(app, "debug")
    assert_clean(app)
    app.button(key="debug_run").click().run()
    assert_clean(app)
    frames = [d.value for d in app.dataframe]
    iso = next(f for f in frames if "rmse_per_scale" in f.columns)
    assert "sensitive" in iso["tensor"].iloc[0] and iso["rank"].iloc[0] == 1
    assert {"rmse_per_scale", "scale", "zero_point"} <= set(iso.columns)
    assert any("snr_db" in f.columns and "rmse_per_scale" not in f.columns for f in frames)
    assert any("RMSE/scale ≈ 0.29 is pure rounding" in c for c in texts(app.caption))
    assert len(app.get("plotly_chart")) == 2 and len(app.get("graphviz_chart")) == 1
    sweep = next(f for f in frames if "float_layers" in f.columns)
    assert list(sweep["ok"]) == [False, True] and list(sweep["best"]) == [False, True]
    keep = app.multiselect(key="debug_keep_tf-int8")
    assert keep.value == [iso["tensor"].iloc[0]]                  # the suggestion, preselected
    app.button(key="debug_keep_run").click().run()
    assert_clean(app)
    cell = "saved_model-int8 (1 float)"
    assert cell in app.session_state["lab_reports"]
    assert any(cell in s for s in texts(app.success))
    go(app, "compare")
    assert_clean(app)
    assert app.selectbox(key="compare_cell").value == cell
    shown = {m.label: m.value for m in app.metric}
    assert shown["Verdict"] == "PASS" and shown["Accuracy, TFLite"] == "1"
    assert any(c.startswith("Kept in float (1 ops, +") and "sensitive" in c for c in texts(app.caption))
    go(app, "size_speed")
    assert_clean(app)
    assert any(c.startswith("Kept in float (1 ops, +") and "sensitive" in c for c in texts(app.caption))
    go(app, "matrix")
    assert_clean(app)
    assert cell in list(app.dataframe[0].value["cell"])
    app.button(key="run_matrix_aeq").click().run()          # recipe x quantizer: one aeq cell per recipe
    assert_clean(app)
    rows = app.dataframe[0].value.set_index("cell")
    assert {"aeq-dynamic", "aeq-float16", "aeq-int8", "aeq-int16x8"} <= set(rows.index)
    assert rows.loc["aeq-float16", "status"] == "pass" and rows.loc["aeq-int8", "status"] == "FAIL"
    assert rows.loc["aeq-int8", "route"] == "ai-edge-quantizer"
