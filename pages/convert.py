"""Convert: pick a route and an optimization, convert, and get the .tflite with the code that made it."""
from pathlib import Path

import streamlit as st

from pages import jobs, runs, state, tables
from tflite_lab.activity import timing_note
from tflite_lab.charts import human_bytes, human_ms
from tflite_lab.errors import TFLiteLabError
from tflite_lab.pipeline import provenance
from tflite_lab.recipes import RECIPES
from tflite_lab.routes import CAPABILITIES, refusal
from tflite_lab.types import Optimization, Route

st.title("Convert")
m = jobs.need_model() or st.stop()
orig = state.original()
alone = orig is None        # a .tflite without its original: it can be run, not compared
if alone:
    st.info(refusal(Route.SAVED_MODEL, Optimization.NONE, m.format) + " Upload the original on the Model page "
            "to compare, or run it alone: its outputs are checked for NaN/inf, nothing is compared.",
            icon=":material/info:")

left, right = st.columns(2, gap="large")
if alone:
    cell, reason = "provided", None
elif m is orig:
    routes = [r.value for r in Route]
    route = left.radio("Route", routes, index=routes.index(Route.SAVED_MODEL.value), key="conv_route",
                       persist_state="session", format_func=lambda r: CAPABILITIES[Route(r)].title,
                       captions=[CAPABILITIES[r].explanation for r in Route])
    opt = right.radio("Optimization", [o.value for o in Optimization], key="conv_opt", persist_state="session",
                      format_func=lambda o: RECIPES[Optimization(o)].title,
                      captions=[RECIPES[o].explanation for o in Optimization])
    int8_io = right.checkbox("int8 model inputs and outputs (default: float I/O)", key="conv_int8io",
                             persist_state="session", disabled=opt != Optimization.INT8.value)
    int8_io = bool(int8_io and opt == Optimization.INT8.value)
    cell, reason = jobs.cell_id(route, opt, int8_io), refusal(route, opt, orig.format)
else:   # an uploaded .tflite: nothing to convert, it is compared with its original as it is
    left.markdown(f"**{m.label}** is already a .tflite: it is compared with **{orig.label}** as it is.")
    cell, reason = "provided", None

# Pre-flight: what we already know will matter, before any work.
preflight = list(m.description["inspection"]["findings"] if m.description.get("inspection") else [])
if not alone and orig.description["info"].get("recurrent"):
    preflight.append("Recurrent layers: the conversion uses a fixed batch of 1 (a dynamic batch fails on TF 2.21).")
prepared = st.session_state.get("lab_prepared")
preflight += prepared["warnings"] if prepared else []
for w in preflight:
    st.warning(w, icon=":material/warning:")
if reason:
    st.error(reason, icon=":material/block:")

label = "Run it alone" if alone else "Compare" if cell == "provided" else "Convert"
jobs.show_cancelled()
if st.button(label, type="primary", disabled=bool(reason), key="convert"):
    with st.status(f"{cell}…", expanded=True) as status:
        stop = jobs.cancel_button(f"Converting {cell}", key="convert_cancel")
        log = jobs.StepLog(status, cell)
        try:
            prepared = jobs.ensure_prepared(log, alone=alone, cancel=stop)
            if cell == "provided":
                jobs.run_provided(prepared, log, stop)
            else:
                jobs.run_cell(route, opt, int8_io, prepared, log, stop)
            log.done(f"{cell} done")
        except TFLiteLabError as e:
            state.failures()[cell] = jobs.failure_record(e)
            log.failed(f"{cell} failed")

if cell in state.failures():
    state.show_error(state.failures()[cell])
if cell not in state.reports():
    st.stop()

report = state.judged(cell)
lat = report["latency"] or {}
orig_ms = (lat.get("original") or {}).get("median_ms")
tfl_ms = (lat.get("tflite") or {}).get("median_ms")
st.subheader(f"Result: {cell}" + (" (from the store)" if report.get("cached") else ""), divider="gray")
if provenance(report):
    st.caption(provenance(report))
c = st.columns(5)
tables.verdict_metric(c[0], report, help="Against the tolerances (editable on Compare)" if not alone
            else "Nothing was compared: no original model. Fails only when an output is NaN/inf.")
with c[0]:
    runs.copy_link(st.session_state["lab_run_ids"].get(cell), key="convert_link")
c[1].metric("TFLite size", human_bytes(report["tflite_bytes"]),
            None if alone else f"{report['size_ratio'] - 1:+.0%} vs original", delta_color="inverse")
c[2].metric("Max abs error", tables.number(tables.worst_error(report)))
top1 = tables.min_top1(report)
c[3].metric("Top-1 agreement", tables.number(top1, ".1%"))
c[4].metric("Latency (median)", human_ms(tfl_ms),
            f"{tfl_ms / orig_ms - 1:+.0%} vs original" if tfl_ms and orig_ms else None, delta_color="inverse")
if timing_note(lat.get("conditions")):
    c[4].caption(f":orange[{timing_note(lat.get('conditions'))}]")
tables.sample_caveats(report)
if alone:
    st.dataframe(tables.styled(tables.output_stats_frame(report)), hide_index=True, placeholder="–")
for f in report["failures"]:
    st.warning(f"Out of tolerance: {f}", icon=":material/rule:")

if report["calls"]:
    code, language = tables.reproduction(report, st.session_state["lab_prepared"])
    st.markdown("**Reproduce it**")
    tabs = st.tabs(["Python" if language == "python" else "Shell", "TFLite Lab CLI"])
    tabs[0].code(code, language=language)
    tabs[1].code(tables.cli_line(report), language="bash")
d = st.columns([1, 1, 4])
stem = Path((m if alone else orig).filename).stem
d[0].download_button("Download .tflite", lambda: Path(report["tflite_path"]).read_bytes(), f"{stem}-{cell}.tflite",
                     mime="application/octet-stream", type="primary", icon=":material/download:", on_click="ignore")
d[1].download_button("Samples (.npz)", lambda: Path(report["samples_path"]).read_bytes(), f"{stem}-samples.npz",
                     mime="application/octet-stream", icon=":material/download:", on_click="ignore")
d[2].page_link(state.PAGES["compare"], label="See the comparison", icon=":material/compare_arrows:")
with st.expander(f"Converter warnings ({len(report['warnings'])}) and log"):
    for w in report["warnings"]:
        st.warning(w)
    st.code(report.get("converter_log") or "(no converter output)", language=None)
