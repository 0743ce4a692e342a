"""Matrix: every route x optimization on the current model in one click, and the best trade-off."""
import streamlit as st

from pages import common
from tflite_lab import charts
from tflite_lab.errors import TFLiteLabError
from tflite_lab.routes import supported_cells

ss = st.session_state
st.title("Matrix")
m = common.need_model() or st.stop()
if common.original() is not m:
    st.info("The matrix converts an original model; this one is already a .tflite (see Compare).", icon=":material/info:")
    st.stop()

todo = common.pending_cells(m.format)
supported = len(supported_cells(m.format))
columns = {"size (KB)": st.column_config.NumberColumn(format="%.1f"),
           "size vs original": st.column_config.NumberColumn(format="percent"),
           "max abs error": st.column_config.NumberColumn(format="%.2e"),
           "top-1": st.column_config.NumberColumn(format="percent"),
           "latency (ms)": st.column_config.NumberColumn(format="%.3f"),
           "note": st.column_config.TextColumn(width="large")}
c = st.columns([1, 1, 1, 1, 2], vertical_alignment="bottom")
c[0].metric("Cells", len(common.matrix_frame(m.format)))
c[1].metric("Supported", supported)
c[2].metric("Computed", sum(common.cell_id(r, o) in common.reports() for r, o in
                            ((r.value, o.value) for r, o in supported_cells(m.format))))
c[3].metric("Failed", len(common.failures()))
run = c[4].button(f"Run {len(todo)} remaining cells" if todo and len(todo) < supported else "Run matrix",
                  type="primary", disabled=not todo, key="run_matrix", icon=":material/play_arrow:",
                  help="Cells already computed are kept, not redone.")

if run:
    with st.status(f"Running {len(todo)} cells…", expanded=True) as status:
        log = common.StepLog(status, "Preparing")
        try:
            prepared = common.ensure_prepared(log)
            log.done("Prepared")
            bar, slot = st.progress(0.0), st.empty()

            def render(states):
                finished = sum(step in ("done", "failed") for step, _ in states.values())
                bar.progress(finished / len(states), text=f"{finished} of {len(states)} cells finished")
                slot.dataframe(common.matrix_frame(m.format, states), hide_index=True, column_config=columns)

            common.run_cells(todo, prepared, render)
            slot.empty()
            status.update(label=f"Ran {len(todo)} cells in {log.elapsed():.1f} s", state="complete", expanded=False)
        except TFLiteLabError as e:
            log.failed("Preparing failed")
            common.show_error(e)

frame = common.matrix_frame(m.format)
event = st.dataframe(frame, hide_index=True, column_config=columns, key="matrix_table", on_select="rerun",
                     selection_mode="single-row")
rows = common.pareto_rows()
best = charts.best_cell(rows)
if best:
    st.success(f"Best: **{best}**, the smallest model within tolerance.", icon=":material/star:")
chart = st.plotly_chart(charts.pareto_figure(rows), key="pareto", on_select="rerun", selection_mode="points")

clicked = [r for r in event.selection.rows] if event else []
picked = frame.iloc[clicked[0]]["cell"] if clicked else None
points = chart.selection.points if chart else []
picked = picked or next((p.get("customdata") for p in points if p.get("customdata")), None)
if picked in common.failures():
    common.show_error(common.failures()[picked])
elif picked in common.reports():
    ss["lab_selected"] = picked
    st.switch_page(common.PAGES["compare"])

if common.reports():
    a, b = st.columns([2, 1], vertical_alignment="bottom")
    cell = a.selectbox("Open a cell on Compare", list(common.reports()), key="matrix_open_pick",
                       index=list(common.reports()).index(best) if best else 0)
    if b.button("Open on Compare", key="matrix_open", icon=":material/compare_arrows:"):
        ss["lab_selected"] = cell
        st.switch_page(common.PAGES["compare"])
