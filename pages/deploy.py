"""Deploy: run a converted cell where it will run, judged like any cell: a microcontroller (TFLite
Micro's real kernels: ops, arena and flash against a board, MACs, the C++ bundle) or a browser
(LiteRT.js: in this visitor's own browser, or headless Chromium on the server; the web, Android and
iOS bundles)."""
import io
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import jobs, state, tables
from tflite_lab.charts import board_fit_figure, human_bytes, macs_figure
from tflite_lab.errors import TFLiteLabError
from tflite_lab.targets import TARGETS, check_targets
from tflite_lab.targets.boards import boards

st.title("Deploy")
m = jobs.need_model() or st.stop()
ss = st.session_state
cells = [c for c in state.reports() if c.split(" ")[0] == c]      # plain cells and 'provided', not aeq/keep-float
if not cells:
    st.info("Convert a cell first: its .tflite is what runs on the device.", icon=":material/info:")
    st.page_link(state.PAGES["convert"], label="Go to Convert", icon=":material/arrow_forward:")
    st.stop()

left, right = st.columns(2, gap="large")
selected = ss.get("lab_selected")
if ss.get("_deploy_pick") in cells:          # 'Convert/Switch to the float-I/O cell' asked for it
    ss["deploy_cell"] = ss.pop("_deploy_pick")
cell = left.selectbox("Cell", cells, index=cells.index(selected) if selected in cells else 0, key="deploy_cell")
target = left.radio("Target", list(TARGETS), format_func=lambda t: TARGETS[t].label, key="deploy_target")
opts = {}
if target == "micro":
    names = list(boards())
    board = right.selectbox("Board", names + ["custom"], key="deploy_board",
                            format_func=lambda b: "Other (RAM and flash)" if b == "custom" else boards()[b]["label"])
    opts = {"board": board}
    if board == "custom":
        c = right.columns(2)
        opts = {"ram_kb": c[0].number_input("RAM (KB)", 1.0, 1e6, 256.0, key="deploy_ram"),
                "flash_kb": c[1].number_input("Flash (KB)", 1.0, 1e7, 1024.0, key="deploy_flash")}
    else:
        right.caption(boards()[board]["source"])
else:
    right.caption("LiteRT.js: the LiteRT runtime compiled to WebAssembly. The browser gets a batch-1 copy of the "
                  "cell's model and runs every sample one at a time; the server judges the outputs with the cell's "
                  "tolerances.")


def _zip(folder: str, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                z.write(f, Path(prefix) / f.relative_to(folder))
    return buf.getvalue()


if target == "browser":
    from pages import device_panel
    st.subheader("Run on this device", divider="gray")
    st.caption("Runs in the browser that shows this page — open the link below on a phone to judge that phone.")
    device_panel.panel(cell, key="deploy_device")
    st.subheader("Try it", divider="gray")
    st.caption("One input through the original, the server's .tflite and the .tflite in this browser."
               + ("" if state.class_names() else " Class names (one per line) can be given on the Model page."))
    from pages import try_panel
    try_panel.panel(cell, key="deploy_try")
    st.subheader("Mobile code", divider="gray")
    try:
        mobile = jobs.run_job("mobile_bundles", tflite_path=state.reports()[cell]["tflite_path"])
        cols = st.columns(2)
        for col, (name, label) in zip(cols, (("android", "Android (Kotlin)"), ("ios", "iOS (Swift)"))):
            col.download_button(f"{label} bundle (.zip)", lambda d=mobile[name], n=name: _zip(d, n),
                                f"{Path(m.label).stem}-{cell}-{name}.zip", mime="application/zip", on_click="ignore",
                                icon=":material/download:", key=f"deploy_{name}")
        st.caption("Generated from the model's own signature: every tensor's name, shape, dtype and quantization.")
    except TFLiteLabError as e:
        state.show_error(e)
    st.subheader("Headless Chromium on the server", divider="gray")

ss.setdefault("lab_deployed", {})
run_label = "Run in headless Chromium on the server" if target == "browser" else f"Run on {TARGETS[target].label}"
if st.button(run_label, type="primary" if target != "browser" else "secondary", key="deploy_run"):
    with st.status(f"{cell} on {target}…", expanded=True) as status:
        log = jobs.StepLog(status, f"{cell} on {target}")
        try:
            requested = {target: opts}
            check_targets(requested)
            prepared = jobs.ensure_prepared(log, alone=state.original() is None)
            if cell == "provided":
                report = jobs.run_provided(prepared, log, targets=requested)
            else:
                r = state.reports()[cell]
                report = jobs.run_cell(r["route"], r["optimization"], bool(r.get("int8_io")), prepared, log,
                                         targets=requested)
            ss["lab_deployed"][cell, target] = True
            log.done(f"{cell} ran on {target}")
        except TFLiteLabError as e:
            log.failed(f"{cell} on {target} failed")
            state.show_error(e)

report = state.judged(cell)
t = (report.get("targets") or {}).get(target)
if not t:
    st.stop()

if target == "browser":
    from pages import device_panel
    device_panel.show_result(t, report, where="in headless Chromium")
    if t.get("bundle_dir") and Path(t["bundle_dir"]).is_dir():
        st.download_button("Web bundle (.zip)", lambda: _zip(t["bundle_dir"], "web"), f"{Path(m.label).stem}-{cell}-web.zip",
                           mime="application/zip", on_click="ignore", icon=":material/download:", key="deploy_web")
        st.caption("A standalone page: serve the folder from any static server, offline; it runs the model, "
                   "compares with the server's outputs and sets data-verdict on <body>.")
    st.stop()

st.subheader(f"{cell} on {TARGETS[target].label}", divider="gray")
c = st.columns(5)
c[0].metric("Verdict", str(t.get("verdict") or "-").upper())
c[1].metric("Tensor arena", human_bytes(t["arena_bytes"]) if t.get("arena_bytes") else "–",
            help=f"Measured to 16 bytes: the smallest arena with which TFLM allocates and invokes; the recording "
                 f"allocator said {t.get('arena_recorded_bytes') or '–'} bytes")
c[2].metric("Flash (model)", human_bytes(t["flash_bytes"]))
c[3].metric("MACs per inference", f"{t['macs']['total']:,}", help=t["macs"]["how"])
c[4].metric("TFLM invoke (median)", f"{t['invoke_ms_median']:.2f} ms" if t.get("invoke_ms_median") else "–",
            help="On this server's CPU, TFLM's reference kernels: not a device latency")
if t.get("error"):
    st.error(t["error"], icon=":material/block:")
if t.get("board"):
    st.plotly_chart(board_fit_figure(t["board"]), key="deploy_board_chart")
    st.caption(t["board"]["overhead_why"])

st.markdown("**Ops** (decided by TFLM's interpreter)")
st.dataframe(pd.DataFrame(t.get("ops") or [], dtype=object), hide_index=True, key="deploy_ops", placeholder="–")
if t.get("float_ops"):
    st.warning("Ops that compute in float (slow without an FPU): " + ", ".join(
        f"#{o['index']} {o['op']}" + (f" ({o['layer']})" if o.get("layer") else "") for o in t["float_ops"]),
        icon=":material/warning:")
if t.get("outputs"):
    st.markdown("**TFLM vs the original** (the cell's tolerances)")
    mine = [f.split(": ", 1)[1] for f in report.get("failures", []) if f.startswith(f"{target}: ")]
    st.dataframe(tables.styled(tables.metrics_frame({**report, "metrics": t["outputs"], "failures": mine})),
                 hide_index=True, placeholder="–", key="deploy_outputs")
if t.get("vs_litert"):
    st.markdown("**TFLM vs LiteRT** (same .tflite, same samples)")
    st.dataframe(pd.DataFrame(t["vs_litert"], dtype=object), hide_index=True, key="deploy_vs_litert")
    first = t.get("first_difference")
    if first:
        st.info(f"First op where TFLM and LiteRT differ by more than one step: #{first['index']} {first['op']}"
                + (f" ({first['layer']})" if first.get("layer") else "") + f", {first['max_diff']:g} {first['unit']}.",
                icon=":material/info:")
if t["macs"].get("per_op"):
    st.plotly_chart(macs_figure(t["macs"]), key="deploy_macs")

bundle = t.get("bundle_dir")
if bundle and Path(bundle).is_dir():
    st.download_button("C++ bundle (.zip)", lambda: _zip(bundle, "micro"), f"{Path(m.label).stem}-{cell}-micro.zip",
                       mime="application/zip", on_click="ignore", icon=":material/download:", key="deploy_bundle")
elif t.get("bundle_error"):
    st.caption(f"No C++ bundle: {t['bundle_error']}")
