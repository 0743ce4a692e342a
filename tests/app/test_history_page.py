"""History page, side-by-side runs and permalinks, on runs the dashboard itself recorded."""
from __future__ import annotations

import os

import pytest
from apptest_helpers import APP, TIMEOUT, assert_clean, convert, go, metrics, texts
from streamlit.testing.v1 import AppTest

from tflite_lab.history import History, RunFilter

pytestmark = pytest.mark.slow


def fresh(**params) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


@pytest.fixture
def two_runs(digits):
    """dynamic, then none, converted on the Convert page: both recorded by the dashboard."""
    ids = []
    for opt in ("dynamic", "none"):
        convert(digits, "saved_model", opt)
        assert_clean(digits)
        ids.append(digits.session_state["lab_run_ids"][f"saved_model-{opt}"])
    return digits, ids


def test_dashboard_run_recorded_and_listed(two_runs):
    at, (dyn, none) = two_runs
    assert dyn != none
    with History() as h:
        run = h.get(dyn)
    assert (run["origin"], run["kind"], run["route"], run["recipe"]) == ("dashboard", "convert", "saved_model", "dynamic")
    assert run["samples"]["description"] == "digits_cnn.samples.npz"
    assert run["verdict"] == "pass" and metrics(at)["Verdict"] == "PASS"
    go(at, "history")
    assert_clean(at)
    listed = at.dataframe[0].value
    assert {dyn, none} <= set(listed["run"])
    assert list(listed["run"]).index(none) < list(listed["run"]).index(dyn)      # newest first
    at.selectbox(key="hist_verdict").set_value("fail").run()
    assert_clean(at)
    assert not at.dataframe or dyn not in set(at.dataframe[0].value["run"])
    at.selectbox(key="hist_verdict").set_value(None).run()
    at.selectbox(key="hist_model").set_value("digits_cnn.keras").run()
    at.selectbox(key="hist_recipe").set_value("dynamic").run()
    shown = set(at.dataframe[0].value["run"])
    assert dyn in shown and none not in shown


def test_permalink_opens_run_on_compare_and_unknown_id(two_runs):
    _, (dyn, _) = two_runs
    at = fresh(run=dyn)
    assert_clean(at)
    assert "Compare" in texts(at.title)
    with History() as h:
        count = h.get(dyn)["samples"]["count"]
    assert metrics(at)["Verdict"] == "PASS" and metrics(at)["Samples compared"] == str(count)
    assert at.session_state["lab_selected"] == "saved_model-dynamic"
    assert any(c.value.endswith(f"/?run={dyn}") for c in at.code)           # the Copy link box
    lost = fresh(run="zzzzzzzz")
    assert_clean(lost)
    assert any("No run 'zzzzzzzz' in the run history" in e.value for e in lost.error)
    assert "Model" in texts(lost.title)


def test_side_by_side_note_and_delete(two_runs):
    at, (dyn, none) = two_runs
    side = fresh(runs=f"{dyn},{none}")
    assert_clean(side)
    assert "2 runs side by side" in texts(side.subheader)
    table = next(d.value for d in side.dataframe if "" in d.value.columns).set_index("")    # not the trash's
    label_dyn, label_none = table.columns
    assert dyn in label_dyn and none in label_none
    assert table.loc["verdict"].tolist() == ["PASS", "PASS"]
    with History() as h:
        a, b = h.get(dyn), h.get(none)
    # The delta to the first run, recomputed from the recorded sizes.
    assert f"(+{b['tflite_bytes'] - a['tflite_bytes']:,.0f})" in table.loc["TFLite bytes", label_none]
    specs = [c.proto.spec or "" for c in side.get("plotly_chart")]
    assert any("Original vs TFLite, runs overlaid" in sp for sp in specs)       # same samples: outputs overlaid
    assert any("Max absolute error per sample, runs overlaid" in sp for sp in specs)

    # One run: edit its note (no sign-in configured: the user owns the history), then delete it with confirmation.
    side.session_state["history_compare"] = [dyn]
    side.run()
    side.text_area(key=f"hist_note_{dyn}").set_value("int8 next? see ticket #12")
    side.button(key="FormSubmitter:hist_edit-Save note").click().run()
    assert_clean(side)
    with History() as h:
        assert h.get(dyn)["note"] == "int8 next? see ticket #12" and h.get(dyn)["author"]["subject"].startswith("os:")
        assert dyn in [r["id"] for r in h.runs(RunFilter(search="TICKET #12"))]
    # A third run of the same cell (from the cache) shares every file with dyn: deleting dyn keeps them.
    convert(at, "saved_model", "dynamic")
    files = [p for ps in History().get(dyn)["artifacts"].values() for p in ps]
    side.button(key="hist_delete").click().run()
    assert any("They go to the trash" in w.value for w in side.warning)
    with History() as h:
        assert h.get(dyn) is not None               # nothing deleted before the confirmation
    side.button(key="hist_delete_yes").click().run()
    assert_clean(side)
    with History() as h:
        assert h.get(dyn) is None and h.get(none) is not None
    assert all(os.path.exists(p) for p in files)
    assert any("Moved 1 run(s) to the trash" in s.value for s in side.success)
    assert dyn in set(side.dataframe[-1].value["run"])        # the trash's table
    side.button(key="trash_empty").click().run()
    side.button(key="trash_empty_yes").click().run()
    assert_clean(side)
    assert any("run(s) for good and 0 store file(s)" in s.value for s in side.success)     # other tests' too
    assert all(os.path.exists(p) for p in files)          # the third run still uses them
