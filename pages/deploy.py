"""Deploy: run a converted cell where it will run (a microcontroller, on TFLite Micro's real kernels),
judged like any cell: verdict, ops, arena and flash against a board, outputs, vs LiteRT, MACs, bundle."""
import io
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import common, tables
from tflite_lab.charts import board_fit_figure, human_bytes, macs_figure
from tflite_lab.errors import TFLiteLabError
from tflite_lab.targets import TARGETS, check_targets
from tflite_lab.targets.boards import boards

st.title("Deploy")
m = common.need_model() or st.stop()
ss = st.session_state
cells = [c for c in common.reports() if c.split(" ")[0] == c]      # plain cells and 'provided', not aeq/keep-float
if not cells:
    st.info("Convert a cell first: its .tflite is what runs on the device.", icon=":material/info:")
    st.page_link(common.PAGES["convert"], label="Go to Convert", icon=":material/arrow_forward:")
    st.stop()

left, right = st.columns(2, gap="large")
selected = ss.get("lab_selected")
cell = left.selectbox("Cell", cells, index=cells.index(selected) if selected in cells else 0, key="deploy_cell")
target = left.radio("Target", list(TARGETS), format_func=lambda t: TARGETS[t].label, key="deploy_target")
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

ss.setdefault("lab_deployed", {})
if st.button(f"Run on {TARGETS[target].label}", type="primary", key="deploy_run"):
    with st.status(f"{cell} on {target}…", expanded=True) as status:
        log = common.StepLog(status, f"{cell} on {target}")
        try:
            requested = {target: opts}
            check_targets(requested)
            prepared = common.ensure_prepared(log, alone=common.original() is None)
            if cell == "provided":
                report = common.run_provided(prepared, log, targets=requested)
            else:
                r = common.reports()[cell]
                report = common.run_cell(r["route"], r["optimization"], bool(r.get("int8_io")), prepared, log,
                                         targets=requested)
            ss["lab_deployed"][cell, target] = True
            log.done(f"{cell} ran on {target}")
        except TFLiteLabError as e:
            log.failed(f"{cell} on {target} failed")
            common.show_error(e)

report = common.judged(cell)
t = (report.get("targets") or {}).get(target)
if not t:
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
    def _zip() -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(Path(bundle).rglob("*")):
                if f.is_file():
                    z.write(f, Path("micro") / f.relative_to(bundle))
        return buf.getvalue()
    st.download_button("C++ bundle (.zip)", _zip, f"{Path(m.label).stem}-{cell}-micro.zip", mime="application/zip",
                       on_click="ignore", icon=":material/download:", key="deploy_bundle")
elif t.get("bundle_error"):
    st.caption(f"No C++ bundle: {t['bundle_error']}")
