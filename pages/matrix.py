"""Matrix: every route x optimization on the current model in one click, and the best trade-off."""
import time

import streamlit as st

from pages import jobs, runs, state, tables
from tflite_lab import charts
from tflite_lab.errors import TFLiteLabError
from tflite_lab.orchestrate import aeq_can_help
from tflite_lab.routes import supported_cells

ss = st.session_state
st.title("Matrix")
st.caption(f"executor: {jobs.executor_label()}")
m = jobs.need_model() or st.stop()
if state.original() is not m:
    st.info("The matrix converts an original model; this one is already a .tflite (see Compare).",
            icon=":material/info:")
    st.stop()

from tflite_lab.targets.boards import boards  # noqa: E402

t = st.columns([1, 2], vertical_alignment="bottom")
micro = t[0].toggle("Microcontroller", key="matrix_micro",
                    help="Also run every cell on TFLite Micro's real kernels and check it fits the board; the best "
                         "cell is then the smallest that runs and fits within tolerance")
if micro:
    t[1].selectbox("Board", list(boards()), key="matrix_board", format_func=lambda b: boards()[b]["label"])
todo = jobs.pending_cells(m.format)
supported = len(supported_cells(m.format))
columns = {"note": st.column_config.TextColumn(width="large")}
shown = ["route", "optimization", "status", "size (KB)", "size vs original", "max abs error", "top-1", "accuracy",
         "latency (ms)", *(tables.MICRO_COLUMNS if micro else []), "note"]
height = 36 + 35 * len(tables.matrix_frame(m.format))        # every cell visible, no inner scrolling
c = st.columns([1, 1, 1, 1, 1, 2], vertical_alignment="bottom")
c[0].metric("Cells", len(tables.matrix_frame(m.format)))
c[1].metric("Supported", supported)
c[2].metric("Computed", sum(jobs.cell_id(r, o) in state.reports() for r, o in
                            ((r.value, o.value) for r, o in supported_cells(m.format))))
c[3].metric("Within tolerance", sum(state.judged(cell)["ok"] for cell in state.reports()))
c[4].metric("Errors", len(state.failures()), help="Cells whose conversion or run failed (see the note)")
run = c[5].button(f"Run {len(todo)} remaining cells" if todo and len(todo) < supported else "Run matrix",
                  type="primary", disabled=not todo, key="run_matrix", icon=":material/play_arrow:",
                  help="Cells already computed are kept, not redone.")

jobs.show_cancelled()
if run:
    prepared, t0 = None, time.monotonic()
    stop = jobs.cancel_button("The matrix run", key="matrix_cancel")
    with st.status("Preparing the samples and the reference outputs…") as status:
        log = jobs.StepLog(status, "Preparing")
        try:
            prepared = jobs.ensure_prepared(log, cancel=stop)
            log.done("Prepared")
        except TFLiteLabError as e:
            log.failed("Preparing failed")
            error = e
    if prepared is None:
        state.show_error(error)
    else:
        bar, slot = st.progress(0.0, text=f"Running {len(todo)} cells…"), st.empty()

        def render(states):
            finished = sum(step in ("done", "failed") for step, _ in states.values())
            bar.progress(finished / max(1, len(states)), text=f"{finished} of {len(states)} cells finished "
                         f"({time.monotonic() - t0:.0f} s)")
            slot.dataframe(tables.styled(tables.matrix_frame(m.format, states)), hide_index=True,
                           column_config=columns, height=height, column_order=shown, placeholder="–")

        jobs.run_cells(todo, prepared, render, stop)
        # TF's calibration failed where ai-edge-quantizer may not: its cell of that recipe is run once
        # so the failing cells' notes say whether it succeeds.
        for o in sorted({c.optimization for c in todo if c.id in state.failures()
                         and aeq_can_help(state.failures()[c.id], c.optimization)}):
            if f"aeq-{o}" not in state.reports() and f"aeq-{o}" not in state.failures():
                slot.caption(f"TensorFlow's {o} failed to calibrate: trying ai-edge-quantizer…")
                try:
                    rep = jobs.run_job("selective", cancel=stop, prepared=prepared, optimization=o,
                                         quantizer="aeq", bench=state.bench_spec())
                    state.reports()[rep["cell"]] = rep
                except TFLiteLabError as e:
                    state.failures()[f"aeq-{o}"] = jobs.failure_record(e)
        runs.record("matrix", list(state.reports()), prepared, failed=dict(state.failures()))
        stored = sum(bool(state.reports().get(c.id, {}).get("cached_cell")) for c in todo)
        ss["matrix_note"] = f"Ran {len(todo)} cells in {time.monotonic() - t0:.1f} s" + (
            f" ({stored} answered from the store)." if stored else ".")
        st.rerun()      # redraw the counts, the table and the chart from the new results

AEQ = [o for o in ("dynamic", "float16", "int8", "int16x8")
       if f"aeq-{o}" not in state.reports() and f"aeq-{o}" not in state.failures()]
if st.button(f"Add ai-edge-quantizer cells ({len(AEQ)})" if AEQ else "ai-edge-quantizer cells added",
             key="run_matrix_aeq", disabled=not AEQ, icon=":material/add:",
             help="Recipe x quantizer: ai-edge-quantizer quantizes the float .tflite (cells aeq-int8, ...); where "
                  "TensorFlow's converter fails, the note says whether it succeeds."):
    with st.status("ai-edge-quantizer cells…") as status:
        stop = jobs.cancel_button("Adding ai-edge-quantizer cells", key="matrix_aeq_cancel")
        log = jobs.StepLog(status, "ai-edge-quantizer")
        try:
            prepared = jobs.ensure_prepared(log, cancel=stop)
            for o in AEQ:
                try:
                    rep = jobs.run_job("selective", progress=log, cancel=stop, prepared=prepared, optimization=o,
                                         quantizer="aeq", bench=state.bench_spec())
                    state.reports()[rep["cell"]] = rep
                except TFLiteLabError as e:
                    state.failures()[f"aeq-{o}"] = jobs.failure_record(e)
            log.done("ai-edge-quantizer cells")
        except TFLiteLabError as e:
            log.failed("ai-edge-quantizer cells failed")
            state.show_error(e)
    st.rerun()

if ss.get("matrix_note"):
    st.success(ss.pop("matrix_note"), icon=":material/done_all:")
frame = tables.matrix_frame(m.format)
event = st.dataframe(tables.styled(frame), hide_index=True, column_config=columns, key="matrix_table",
                     on_select="rerun", selection_mode="single-row", height=height, column_order=shown,
                     placeholder="–")
note = st.empty()           # what a clicked cell that cannot open on Compare says, right under the table
rows = tables.pareto_rows("micro" if micro else None)
best = charts.best_cell(rows)
if best:
    st.success(f"Best: **{best}**, the smallest model within tolerance" + (
        f" that runs on TFLite Micro and fits {boards()[ss['matrix_board']]['label']}." if micro else "."),
        icon=":material/star:")
elif micro and rows:
    st.warning("No cell runs on TFLite Micro, fits the board and is within tolerance.", icon=":material/warning:")
if ss.get("lab_matrix_run"):
    runs.link_and_report(ss["lab_matrix_run"], key="matrix")
y_label = "max abs error"
metrics = {r["accuracy_metric"] for r in rows if r.get("accuracy") is not None}
if metrics:     # labelled samples: the task's own error is a choice of axis
    task_label = "1 − accuracy" if metrics == {"accuracy"} else "MAE"
    y_label = st.radio("Pareto y-axis", ["max abs error", task_label], horizontal=True, key="pareto_axis")
    if y_label != "max abs error":
        rows = [{**r, "max_abs_error": None if r.get("accuracy") is None else
                 (1 - r["accuracy"] if r["accuracy_metric"] == "accuracy" else r["accuracy"])} for r in rows]
chart = st.plotly_chart(charts.pareto_figure(rows, y_label), key="pareto", on_select="rerun", selection_mode="points")

clicked = [r for r in event.selection.rows] if event else []
picked = frame.iloc[clicked[0]]["cell"] if clicked else None
points = chart.selection.points if chart else []
picked = picked or next((p.get("customdata") for p in points if p.get("customdata")), None)
if picked in state.failures():
    with note.container():
        state.show_error(state.failures()[picked])
elif picked in state.reports():
    ss["lab_selected"] = picked
    st.switch_page(state.PAGES["compare"])
elif picked:        # a refused cell, or one not run yet
    note.info(f"{picked}: " + (frame.set_index("cell").loc[picked, "note"] or "not run yet."), icon=":material/info:")

if state.reports():
    a, b = st.columns([2, 1], vertical_alignment="bottom")
    cell = a.selectbox("Open a cell on Compare", list(state.reports()), key="matrix_open_pick",
                       index=list(state.reports()).index(best) if best else 0)
    if b.button("Open on Compare", key="matrix_open", icon=":material/compare_arrows:"):
        ss["lab_selected"] = cell
        st.switch_page(state.PAGES["compare"])
