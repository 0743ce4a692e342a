"""Debug: where quantization loses accuracy, per layer, what keeping layers in float buys, and the
other remedies (int16x8, float16, mixed precision, more calibration) when that is not enough."""
import dataclasses
import json
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import jobs, runs, state, tables
from tflite_lab import charts
from tflite_lab.errors import TFLiteLabError
from tflite_lab.graphview import graph_dot
from tflite_lab.types import Tolerances

ss = st.session_state
st.title("Debug")
m = jobs.need_model() or st.stop()
if state.original() is not m:
    st.info("Debug starts from the original model; this one is already a .tflite.", icon=":material/info:")
    st.stop()

QUANTIZERS = {"tf": "TensorFlow converter", "aeq": "ai-edge-quantizer"}
top = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
opt = top[0].radio("Optimization", ["int8", "int16x8", "dynamic", "float16"], horizontal=True, key="debug_opt")
quantizer = top[1].radio("Quantizer", list(QUANTIZERS), horizontal=True, key="debug_quantizer",
                         format_func=QUANTIZERS.get)
min_acc = top[2].number_input("Accuracy change ≥ (labels)", value=-0.01, step=0.01, format="%.3f",
                              key="debug_min_acc", help="Tolerance for the sweep on labelled samples: "
                              "TFLite minus original accuracy (for MAE: relative). Empty: not checked.")
run = top[3].button("Debug", type="primary", key="debug_run", icon=":material/troubleshoot:")
key = f"{quantizer}-{opt}"
jobs.show_cancelled()
if run:
    with st.status(f"Debugging {opt} ({QUANTIZERS[quantizer]})…", expanded=True) as status:
        stop = jobs.cancel_button(f"Debugging {opt}", key="debug_cancel")
        log = jobs.StepLog(status, "Debugging")
        try:
            prepared = jobs.ensure_prepared(log, cancel=stop)
            tol = Tolerances.for_optimization(opt).override(min_accuracy_delta=min_acc)
            ss["lab_debug"][key] = jobs.run_job("debug", progress=log, cancel=stop, prepared=prepared, optimization=opt,
                                                  quantizer=quantizer, tolerances=tol.to_json(),
                                                  sample_spec=dataclasses.asdict(state.samples().spec))
            runs.record_debug(ss["lab_debug"][key], prepared)
            log.done("Debugged")
        except TFLiteLabError as e:
            log.failed("Debugging failed")
            state.show_error(e)
result = ss["lab_debug"].get(key)
if result is None:
    st.info("Press **Debug** for the per-layer error of this recipe, the layers to keep in float and the sweep.",
            icon=":material/info:")
    st.stop()

for n in result["notes"]:
    st.info(n, icon=":material/info:")
if result.get("run_id"):
    runs.link_and_report(result["run_id"], key="debug")
layers = pd.DataFrame(result["layers"])
metric = result["metric"]
label = {"rmse_per_scale": "RMSE / scale", "noise_added": "noise added"}[metric]
ISO = ["rank", "tensor", "op", "dtype", "scale", "zero_point", "rmse", "max_abs_error", "mean_error", "rmse_per_scale"]
ACC = ["rank", "tensor", "op", "dtype", "weights", "mse", "snr_db", "cosine", "snr_drop_db", "noise_added"]
if result["views"]["isolated"]:
    st.subheader("Layer-isolated error", divider="gray")
    st.caption(result["meaning"]["isolated"])
    st.dataframe(layers[[c for c in ISO if c in layers]], hide_index=True, key="debug_isolated", placeholder="–")
if result["views"]["accumulated"]:
    st.subheader("Accumulated error", divider="gray")
    st.caption(result["meaning"]["accumulated"])
    st.dataframe(layers[[c for c in ACC if c in layers]], hide_index=True, key="debug_accumulated", placeholder="–")

c = st.columns(2)
c[0].plotly_chart(charts.layer_error_figure(result["layers"], metric, label), key="debug_along_graph")
c[1].plotly_chart(charts.sweep_figure(result["sweep"]), key="debug_sweep")
sweep = pd.DataFrame([{**s, "float_layers": len(s["float_layers"]), "best": bool(s.get("best"))} for s in result["sweep"]])
st.dataframe(sweep[["k", "float_layers", "tflite_bytes", "max_abs_error", "top1_agreement", "accuracy", "ok", "best"]],
             hide_index=True, key="debug_sweep_table", placeholder="–")
best = result.get("best_step")
if best is not None:
    st.success(f"Smallest model within tolerance: {result['sweep'][best]['k']} layer(s) in float, "
               f"{result['sweep'][best]['tflite_bytes']:,} bytes.", icon=":material/star:")

remedies = result.get("remedies") or []
if remedies:
    st.subheader("Remedies", divider="gray")
    st.caption("No layer stands out, or keeping layers float does not reach tolerance, so the other remedies were "
               "converted and run on the same samples, judged with the same tolerances; smallest passing first.")
    table = pd.DataFrame([{**r, "chosen": bool(r.get("chosen")), "note": r.get("error") or ""} for r in remedies])
    st.dataframe(table[["remedy", "cell", "changed", "tflite_bytes", "max_abs_error", "top1_agreement", "psnr_db",
                        "accuracy", "ok", "chosen", "note"]], hide_index=True, key="debug_remedies", placeholder="–")
    pick = next((r for r in remedies if r.get("chosen")), None)
    if pick:
        st.success(f"Within tolerance: **{pick['cell']}** ({pick['changed']}), {pick['tflite_bytes']:,} bytes.",
                   icon=":material/star:")
        st.download_button(f"{pick['cell']} (.tflite)", lambda: Path(pick["tflite_path"]).read_bytes(),
                           f"{pick['cell'].replace(' ', '_').replace('(', '').replace(')', '')}.tflite",
                           mime="application/octet-stream", on_click="ignore", icon=":material/download:",
                           key="debug_remedy_download")
    elif not any(r["ok"] for r in remedies) and best is None:
        st.warning("Nothing is within tolerance: every remedy was tried (numbers above).", icon=":material/warning:")

st.subheader("Graph", divider="gray")
bounds = (0.35, 1.0) if metric == "rmse_per_scale" else (0.001, 0.01)
dot, collapsed = graph_dot(result["graph"], result["layers"], metric, bounds)
st.caption(f"Ops of the float model coloured by {label} (green fine, yellow suspect, red worst; dashed = float in "
           "the quantized model)." + (f" {collapsed} unremarkable ops are collapsed into runs." if collapsed else ""))
st.graphviz_chart(dot)
d = st.columns(4)
d[0].download_button("Layers (.csv)", layers.drop(columns=["inputs"], errors="ignore").to_csv(index=False),
                     f"{key}-layers.csv", mime="text/csv", on_click="ignore", icon=":material/download:")
d[1].download_button("Overlay (.json)", json.dumps(result["overlay"], indent=2), "overlay.json",
                     mime="application/json", on_click="ignore", icon=":material/download:")
d[2].download_button("Float model (.tflite)", lambda: Path(result["float_tflite_path"]).read_bytes(), "float.tflite",
                     mime="application/octet-stream", on_click="ignore", icon=":material/download:")
repro = (result["model"] or {}).get("reproduce")
if repro:
    with st.expander("Reproduce: the debugger and the chosen model, outside TFLite Lab"):
        st.code(repro["code"], language=repro["language"])
with st.expander("Open in Model Explorer (on your machine)"):
    st.caption("Download the float model and the overlay, then run this locally. The dashboard never starts "
               "Model Explorer: its server reads any file on the host it runs on.")
    st.code(result["model_explorer_command"], language="bash")

st.subheader("Keep layers in float", divider="gray")
if quantizer == "tf" and opt != "int8":
    st.caption("TensorFlow's converter keeps layers float only for int8; choose ai-edge-quantizer for this recipe.")
    st.stop()
choices = [r["tensor"] for r in result["layers"] if r.get("rank")]
ops = sorted({r["op"] for r in result["layers"]})
k = st.columns([3, 2, 1], vertical_alignment="bottom")
keep = k[0].multiselect("Layers (worst first; suggested preselected)", choices, default=result["suggested_float"],
                        key=f"debug_keep_{key}")
keep_ops = k[1].multiselect("Op types", ops, key=f"debug_keep_ops_{key}")
if k[2].button("Convert with these in float", key="debug_keep_run", disabled=not (keep or keep_ops),
               icon=":material/tune:"):
    with st.status("Converting with float layers…", expanded=True) as status:
        stop = jobs.cancel_button("Converting with float layers", key="debug_keep_cancel")
        log = jobs.StepLog(status, "Converting")
        try:
            report = jobs.run_job("selective", progress=log, cancel=stop,
                                    prepared=jobs.ensure_prepared(log, cancel=stop), keep_float=keep,
                                    keep_float_ops=keep_ops, optimization=opt, quantizer=quantizer,
                                    bench=state.bench_spec())
            state.reports()[report["cell"]] = report
            ss["lab_selected"] = report["cell"]
            runs.record("convert", [report["cell"]], jobs.ensure_prepared())
            state.sidebar_summary()
            log.done(f"Converted {report['cell']}")
        except TFLiteLabError as e:
            log.failed("Conversion failed")
            state.show_error(e)
cell = ss.get("lab_selected")
if cell in state.reports() and state.reports()[cell].get("float_ops") is not None and cell.endswith("float)"):
    r = state.judged(cell)
    st.success(f"**{cell}**: {tables.verdict(r)}, {r['tflite_bytes']:,} bytes"
               + (f" (+{r['float_cost_bytes']:,} for the float ops)" if r.get("float_cost_bytes") is not None else "")
               + "; it is on Compare, Size & speed and Matrix.", icon=":material/check_circle:")
    runs.copy_link(ss["lab_run_ids"].get(cell), key="debug_cell_link")
    st.dataframe(pd.DataFrame(r["float_ops"]), hide_index=True, key="debug_float_ops")
    st.page_link(state.PAGES["compare"], label="Open on Compare", icon=":material/compare_arrows:")
