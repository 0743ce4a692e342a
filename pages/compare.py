"""Compare: how far the TFLite outputs are from the original's, per output and per sample."""
from pathlib import Path

import numpy as np
import streamlit as st

from pages import common, tables
from tflite_lab import charts
from tflite_lab.types import Tolerances

ss = st.session_state
st.title("Compare")
m = common.need_model() or st.stop()
top = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
with top[0]:
    cell = common.cell_picker("Converted model", key="compare_cell")
if cell is None:
    st.info("Nothing converted yet: convert on the Convert page, or run the Matrix.", icon=":material/info:")
    st.page_link(common.PAGES["convert"], label="Go to Convert", icon=":material/arrow_forward:")
    st.stop()

report = common.reports()[cell]
tol = common.tolerances_for(cell, report)
keys = {f: f"tol_{f}_{cell}" for f in ("max_abs_error", "min_top1", "min_psnr_db")}


def save_tolerances():
    values = {f: ss[k] for f, k in keys.items()}
    # The default max abs scales with the output; once the user changes it, it is absolute.
    values["scale_max_abs"] = tol.scale_max_abs and values["max_abs_error"] == tol.max_abs_error
    ss["lab_tolerances"][cell] = Tolerances(**values)


top[1].number_input("Max abs error ≤" + (" (× output scale)" if tol.scale_max_abs else ""), min_value=0.0, value=tol.max_abs_error, format="%.2e", step=1e-4,
                    key=keys["max_abs_error"], on_change=save_tolerances, placeholder="not checked")
top[2].number_input("Top-1 agreement ≥", min_value=0.0, max_value=1.0, value=tol.min_top1, step=0.01, format="%.3f",
                    key=keys["min_top1"], on_change=save_tolerances, placeholder="not checked")
top[3].number_input("PSNR (dB) ≥", value=tol.min_psnr_db, step=1.0, format="%.1f", key=keys["min_psnr_db"],
                    on_change=save_tolerances, placeholder="not checked")

judged = common.judged(cell)
reference, predicted = common.load_npz(report["reference_path"]), common.load_npz(report["predictions_path"])
inputs = common.load_npz(report["samples_path"])
frame = tables.metrics_frame(judged)
top1 = tables.min_top1(report)
c = st.columns(5)
c[0].metric("Verdict", "PASS" if judged["ok"] else "FAIL")
c[1].metric("Outputs within tolerance", f"{(frame['status'] == 'pass').sum()} / {len(frame)}")
c[2].metric("Worst max abs error", f"{tables.worst_error(report):.3g}")
c[3].metric("Lowest top-1 agreement", f"{top1:.1%}" if top1 is not None else "–")
c[4].metric("Samples compared", report["num_samples"])
st.dataframe(tables.styled(frame), hide_index=True, placeholder="–")
for f in judged["failures"]:
    st.warning(f"Out of tolerance: {f}", icon=":material/rule:")
d = st.columns([1, 1, 4])
d[0].download_button("Metrics (.csv)", frame.to_csv(index=False), f"{cell}-metrics.csv", mime="text/csv",
                     icon=":material/download:", on_click="ignore")
d[1].download_button("Predictions (.npz)", lambda: Path(report["predictions_path"]).read_bytes(),
                     f"{cell}-predictions.npz", mime="application/octet-stream",
                     icon=":material/download:", on_click="ignore")

outputs = list(reference)
per_sample = {mm["name"]: mm["per_sample_max_abs"] for mm in report["metrics"]}
worst = np.nan_to_num(np.max(np.array(list(per_sample.values()), dtype=float), axis=0), nan=np.inf)
order = [int(i) for i in np.argsort(-worst, kind="stable")]
figures = [(f"scatter_{name}", charts.scatter_figure(reference[name], predicted[name], name)) for name in outputs]
figures += [("error_hist", charts.error_histogram_figure(reference, predicted)),
            ("per_sample", charts.per_sample_error_figure(per_sample, tol.max_abs_error, ss.get(f"drill_{cell}")))]
for i in range(0, len(figures), 3):
    for col, (key, fig) in zip(st.columns(3), figures[i:i + 3]):
        col.plotly_chart(fig, key=key)

st.subheader("Sample drill-down", divider="gray")
sample = st.selectbox("Sample (worst first)", order, key=f"drill_{cell}",
                      format_func=lambda i: f"#{i} — max |Δ| {worst[i]:.3g}")
cols = st.columns(3)
for name, x in inputs.items():
    cols[0].plotly_chart(charts.input_figure(x[sample], name), key=f"input_{name}")
for name in outputs:
    ref, out = reference[name][sample], predicted[name][sample]
    cols[1].plotly_chart(charts.output_pair_figure(ref, out, name), key=f"pair_{name}")
    cols[2].plotly_chart(charts.difference_figure(ref, out, name), key=f"diff_{name}")

classifiers = [mm["name"] for mm in report["metrics"] if mm["top1_agreement"] is not None]
if classifiers:
    st.subheader("Classifier agreement", divider="gray")
    cols = st.columns(2)
    for i, name in enumerate(classifiers):
        cols[i % 2].plotly_chart(charts.confusion_figure(reference[name], predicted[name], name), key=f"conf_{name}")
