"""Size & speed: file size and its reduction, batch-1 latency and throughput, original vs TFLite."""
import streamlit as st

from pages import jobs, state
from tflite_lab import charts
from tflite_lab.activity import timing_note
from tflite_lab.pipeline import provenance

st.title("Size & speed")
m = jobs.need_model() or st.stop()
cell = state.cell_picker("Converted model", key="speed_cell")
if cell is None:
    st.info("Nothing converted yet: convert on the Convert page, or run the Matrix.", icon=":material/info:")
    st.page_link(state.PAGES["convert"], label="Go to Convert", icon=":material/arrow_forward:")
    st.stop()

reports = state.reports()
report = reports[cell]
if provenance(report):
    st.caption(provenance(report))
state.float_ops_caption(report)
original_bytes, tflite_bytes = report["original_bytes"], report["tflite_bytes"]
lat = report["latency"] or {}
orig, tfl = lat.get("original") or {}, lat.get("tflite") or {}
c = st.columns(6)
c[0].metric("Original size", charts.human_bytes(original_bytes), help=f"{original_bytes:,} bytes")
c[1].metric("TFLite size", charts.human_bytes(tflite_bytes), f"{tflite_bytes / original_bytes - 1:+.1%}",
            delta_color="inverse", help=f"{tflite_bytes:,} bytes")
c[2].metric("Size reduction", f"{original_bytes / tflite_bytes:.1f}×", help="original bytes / TFLite bytes")
if tfl:
    c[3].metric("Original latency", charts.human_ms(orig.get("median_ms")), help="median of batch-1 runs")
    c[4].metric("TFLite latency", charts.human_ms(tfl["median_ms"]), help=f"median of {tfl['runs']} batch-1 runs; "
                f"p90 {charts.human_ms(tfl['p90_ms'])}; {tfl['threads'] or 'default'} threads")
    c[5].metric("Speed-up", f"{orig['median_ms'] / tfl['median_ms']:.1f}×" if orig else "–",
                help="original median / TFLite median")
    if timing_note(lat.get("conditions")):
        st.caption(f":orange[Latency {timing_note(lat.get('conditions'))}]")
else:
    st.info("Latency was not measured: turn on 'Measure latency' in the sidebar and convert again.",
            icon=":material/timer_off:")

sizes = {k: r["tflite_bytes"] for k, r in reports.items()}
st.plotly_chart(charts.size_figure(original_bytes, sizes), key="size_chart")
timed = {k: r["latency"]["tflite"] for k, r in reports.items() if (r["latency"] or {}).get("tflite")}
if timed:
    boxes = ({"original": orig["samples_ms"]} if orig else {}) | {k: v["samples_ms"] for k, v in timed.items()}
    throughput = (({"original": orig.get("throughput_sps")} if orig else {})
                  | {k: v.get("throughput_sps") for k, v in timed.items()})
    a, b = st.columns([3, 2])
    a.plotly_chart(charts.latency_box_figure(boxes), key="latency_chart")
    b.plotly_chart(charts.throughput_figure(throughput), key="throughput_chart")
    cond = lat.get("conditions") or {}
    st.caption("Latency: batch 1 after warm-up runs, on this server's CPU, the original as a TensorFlow concrete "
               "function (no Keras per-call dispatch) and the .tflite as one LiteRT invoke"
               + (f", both with {cond['threads']} threads (TF intra/inter-op {cond['tf_intra_op_threads']}/"
                  f"{cond['tf_inter_op_threads']}, LiteRT {cond['litert_num_threads']}) on {cond['cpu_count']} CPUs, "
                  f"up to {cond['runs']} runs, timed {'' if timing_note(cond) else 'alone '}after the conversions" if cond else "")
               + ". Throughput: samples per second of the same warm pass on both sides, the first (up to) 64 samples "
               "as one batch (models with a fixed batch run one batch at a time).")
