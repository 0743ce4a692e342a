"""Compare: how far the TFLite outputs are from the original's, per output and per sample."""
from pathlib import Path

import numpy as np
import streamlit as st

from pages import jobs, reviews, runs, state, tables
from tflite_lab import charts
from tflite_lab.types import Tolerances

ss = st.session_state
st.title("Compare")
m = jobs.need_model() or st.stop()
top = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
with top[0]:
    cell = state.cell_picker("Converted model", key="compare_cell")
if cell is None:
    st.info("Nothing converted yet: convert on the Convert page, or run the Matrix.", icon=":material/info:")
    st.page_link(state.PAGES["convert"], label="Go to Convert", icon=":material/arrow_forward:")
    st.stop()

report = state.reports()[cell]
if report.get("reference_path") is None:
    # A .tflite run without its original: nothing to compare, but NaN/inf outputs still fail.
    judged = state.judged(cell)
    st.metric("Verdict", tables.verdict(judged))
    runs.copy_link(ss["lab_run_ids"].get(cell), key="compare_link")
    runs.report_download([ss["lab_run_ids"][cell]] if cell in ss["lab_run_ids"] else [], key="compare_report")
    st.info("No original model was given, so nothing was compared: the .tflite was run on the samples. "
            "Upload the original on the Model page to compare.", icon=":material/info:")
    st.dataframe(tables.styled(tables.output_stats_frame(judged)), hide_index=True, placeholder="–")
    for f in judged["failures"]:
        st.warning(f"Out of tolerance: {f}", icon=":material/rule:")
    st.stop()

tol = state.tolerances_for(cell, report)
default = state.default_tolerances(report)
keys = {f: f"tol_{f}_{cell}" for f in ("max_abs_error", "min_top1", "min_psnr_db")
        + (("min_accuracy_delta",) if report.get("accuracy") else ())}
task_keys = {mm["name"]: f"task_{mm['name']}_{cell}" for mm in report["metrics"]}
AUTO = "detected"


def save_tolerances():
    # A value the user changes is theirs: it applies to every output it can, and max abs is absolute.
    changed = {f: ss[k] for f, k in keys.items() if ss[k] != getattr(default, f)}
    cleared = [f for f in changed if changed[f] is None]
    tasks = {name: ss[k] for name, k in task_keys.items() if ss.get(k, AUTO) != AUTO}
    new = default.override(**{f: v for f, v in changed.items() if v is not None}, tasks=tasks)
    if cleared:     # an emptied field: that check is off
        from dataclasses import replace
        new = replace(new, **{f: None for f in cleared})
    ss["lab_tolerances"][cell] = new


user = set(tol.user_set)
top[1].number_input("Max abs error ≤" + (" (× output scale)" if tol.scale_max_abs and "max_abs_error" not in user else ""),
                    min_value=0.0, value=tol.max_abs_error, format="%.2e", step=1e-4,
                    key=keys["max_abs_error"], on_change=save_tolerances, placeholder="not checked",
                    help="Applies to every output. The recipe's default scales with the output's largest value.")
top[2].number_input("Top-1 agreement ≥", min_value=0.0, max_value=1.0, value=tol.min_top1, step=0.01, format="%.3f",
                    key=keys["min_top1"], on_change=save_tolerances, placeholder="not checked",
                    help="By default on classifier outputs; once you set it, on every (samples, classes) output.")
top[3].number_input("PSNR (dB) ≥", value=tol.min_psnr_db, step=1.0, format="%.1f", key=keys["min_psnr_db"],
                    on_change=save_tolerances, placeholder="not checked",
                    help="By default on non-classifier outputs; once you set it, on every output.")

acc = report.get("accuracy")
if acc:
    a = st.columns([3, 2, 2, 2, 2], vertical_alignment="bottom")
    what = "Accuracy" if acc["metric"] == "accuracy" else "MAE"
    a[0].caption(f"**{what} on {acc['num_labels']} labelled samples** (output '{acc['output']}'): the task score "
                 "against the true labels, for the original and the .tflite.")
    a[1].metric(f"{what}, original", tables.number(acc["original"], ".4g"))
    a[2].metric(f"{what}, TFLite", tables.number(acc["tflite"], ".4g"), tables.number(acc["delta"], "+.4g"),
                delta_color="normal" if acc["metric"] == "accuracy" else "inverse")
    a[3].number_input("Accuracy change ≥", value=tol.min_accuracy_delta, step=0.01, format="%.3f",
                      key=keys["min_accuracy_delta"], on_change=save_tolerances, placeholder="not checked",
                      help="TFLite minus original accuracy, e.g. -0.01 (for MAE: relative, -0.05 = at most 5% worse).")

judged = state.judged(cell)
reference, predicted = state.load_npz(report["reference_path"]), state.load_npz(report["predictions_path"])
inputs = state.load_npz(report["samples_path"])
frame = tables.metrics_frame(judged)
top1 = tables.min_top1(report)
c = st.columns(5)
tables.verdict_metric(c[0], judged)
with c[0]:
    runs.copy_link(ss["lab_run_ids"].get(cell), key="compare_link")
c[1].metric("Outputs within tolerance", f"{(frame['status'] == 'pass').sum()} / {len(frame)}")
c[2].metric("Worst max abs error", tables.number(tables.worst_error(report)))
c[3].metric("Lowest top-1 agreement", tables.number(top1, ".1%"))
c[4].metric("Samples compared", report["num_samples"])
tables.sample_caveats(report)
reviews.show_recorded(ss["lab_run_ids"].get(cell), key="compare")
st.dataframe(tables.styled(frame), hide_index=True, placeholder="–",
             column_config={"tolerances applied": st.column_config.TextColumn(width="large")})
for f in judged["failures"]:
    st.warning(f"Out of tolerance: {f}", icon=":material/rule:")
state.float_ops_caption(report)
if st.toggle("Run on this device", key=f"compare_device_{cell}",
             help="Runs this cell's .tflite in LiteRT.js in this browser (a phone, a laptop) and judges its outputs "
                  "with these tolerances; each run is kept in the history next to the cell's run."):
    from pages import device_panel
    with st.container(border=True):
        device_panel.panel(cell, key="compare_device")
for n in report.get("matching", []):
    (st.warning if n.startswith("warning: ") else st.caption)(f"Tensor matching: {n.removeprefix('warning: ')}")
with st.expander("How each output is judged"):
    st.caption("Classifier outputs (rows of probabilities) are judged by top-1 agreement, the others by PSNR; "
               "the max abs error applies to all. Override the detected task per output:")
    cols = st.columns(min(4, max(1, len(task_keys))))
    for i, mm in enumerate(judged["metrics"]):
        detected = next(x for x in report["metrics"] if x["name"] == mm["name"]).get("task", "regression")
        cols[i % len(cols)].selectbox(
            f"'{mm['name']}'", [AUTO, "classification", "regression"], key=task_keys[mm["name"]],
            index=[AUTO, "classification", "regression"].index(tol.task_of(mm["name"]) or AUTO),
            format_func=lambda t, d=detected: f"{d} (detected)" if t == AUTO else t, on_change=save_tolerances,
            help=next(x for x in report["metrics"] if x["name"] == mm["name"]).get("task_reason"))
d = st.columns([1, 1, 1, 3])
d[0].download_button("Metrics (.csv)", frame.to_csv(index=False), f"{cell}-metrics.csv", mime="text/csv",
                     icon=":material/download:", on_click="ignore")
d[1].download_button("Predictions (.npz)", lambda: Path(report["predictions_path"]).read_bytes(),
                     f"{cell}-predictions.npz", mime="application/octet-stream",
                     icon=":material/download:", on_click="ignore")
with d[2]:
    runs.report_download([ss["lab_run_ids"][cell]] if cell in ss["lab_run_ids"] else [], key="compare_report")

outputs = list(reference)
per_sample = {mm["name"]: mm["per_sample_max_abs"] for mm in report["metrics"]}
worst = np.max(np.array(list(per_sample.values()), dtype=float), axis=0)      # NaN stays NaN
order = [int(i) for i in np.argsort(-np.nan_to_num(worst, nan=np.inf), kind="stable")]    # NaN first
bounds = {c["bound"] for mm in judged["metrics"] for c in mm.get("checks", []) if c["metric"] == "max_abs_error"}
figures = [(f"scatter_{name}", charts.scatter_figure(reference[name], predicted[name], name)) for name in outputs]
figures += [("error_hist", charts.error_histogram_figure(reference, predicted)),
            ("per_sample", charts.per_sample_error_figure(
                per_sample, float(bounds.pop()) if len(bounds) == 1 else None, ss.get(f"drill_{cell}")))]
for i in range(0, len(figures), 3):
    for col, (key, fig) in zip(st.columns(3), figures[i:i + 3]):
        col.plotly_chart(fig, key=key)

st.subheader("Sample drill-down", divider="gray")
sample = st.selectbox("Sample (worst first)", order, key=f"drill_{cell}",
                      format_func=lambda i: f"#{i} — max |Δ| {tables.number(worst[i])}")
cols = st.columns(3)
for name, x in inputs.items():
    cols[0].plotly_chart(charts.input_figure(x[sample], name), key=f"input_{name}")
for name in outputs:
    ref, out = reference[name][sample], predicted[name][sample]
    cols[1].plotly_chart(charts.output_pair_figure(ref, out, name), key=f"pair_{name}")
    cols[2].plotly_chart(charts.difference_figure(ref, out, name), key=f"diff_{name}")

classifiers = [mm["name"] for mm in judged["metrics"]
               if mm["top1_agreement"] is not None and mm.get("task") == "classification"]
if classifiers:
    st.subheader("Classifier agreement", divider="gray")
    cols = st.columns(2)
    for i, name in enumerate(classifiers):
        cols[i % 2].plotly_chart(charts.confusion_figure(reference[name], predicted[name], name, state.class_names()),
                                 key=f"conf_{name}")
