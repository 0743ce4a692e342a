"""'Try it': one input (a camera photo, a dropped image or one of the samples) through the original,
the server's .tflite and the .tflite in this browser, the three predictions side by side."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import jobs, state
from tflite_lab.errors import TFLiteLabError
from tflite_lab.tryit import agreement, image_sample, one_sample, predictions, save_inputs

IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "webp"]


def _image_input_name(signature: dict) -> str | None:
    from tflite_lab.errors import SampleError
    from tflite_lab.samples import _image_input
    from tflite_lab.types import Signature
    try:
        return _image_input(Signature.from_dict(signature)).name
    except SampleError:
        return None


def _table(preds: dict[str, dict]) -> None:
    for name, p in preds.items():
        if p["kind"] == "classes":
            st.caption(f"'{name}' — top {len(p['top'])} of {p['classes']} classes"
                       + (f" · {p['nonfinite']} NaN/inf" if p["nonfinite"] else ""))
            st.table(pd.DataFrame([{"class": t["name"], "score": f"{t['score']:.4g}"} for t in p["top"]]).set_index("class"))
            if p.get("note"):
                st.caption(p["note"])
        else:
            vals = ", ".join(f"{v:.5g}" for v in p["values"]) + (f", … (+{p['more']})" if p["more"] else "")
            st.caption(f"'{name}' {p['shape']}" + (f" · {p['nonfinite']} NaN/inf" if p["nonfinite"] else ""))
            st.code(vals, language=None)


def _arrays(cell: str, report: dict, key: str, signature: dict):
    """The input the user chose, as one-sample arrays, and a sentence saying what it is."""
    image = _image_input_name(signature)
    modes = ["A sample"] + (["Camera", "An image file"] if image else [])
    mode = st.segmented_control("Input", modes, default="A sample", key=f"{key}_mode") or "A sample"
    if mode == "A sample":
        n = report["num_samples"]
        i = st.number_input(f"Sample (0–{n - 1})", 0, n - 1, 0, key=f"{key}_index")
        return lambda: (one_sample(report["samples_path"], int(i)), f"sample {int(i)} of the cell's samples")
    shot = (st.camera_input("Photo", key=f"{key}_camera") if mode == "Camera"
            else st.file_uploader("Image", type=IMAGE_TYPES, key=f"{key}_image"))
    if shot is None:
        return None
    data, name = shot.getvalue(), shot.name or "photo"
    return lambda: image_sample(data, name, signature, report["samples_path"])


def panel(cell: str, key: str) -> None:
    from pages import device_panel
    ss = st.session_state
    report = state.reports().get(cell)
    m = state.model()
    if report is None or m is None:
        return
    make = _arrays(cell, report, key, m.signature)
    results = ss.setdefault("lab_try", {})
    if st.button("Try it", key=f"{key}_go", icon=":material/play_arrow:", disabled=make is None):
        with st.spinner("Running the original and the server's .tflite…"):
            try:
                arrays, how = make()
                path = save_inputs(arrays)
                orig = state.original()
                r = jobs.run_job("try_sample", tflite_path=report["tflite_path"], inputs_path=path,
                                   signature=m.signature, source=orig.source if orig else None)
                results[cell] = {**r, "how": how, "browser_outputs": None, "token": f"try:{path[-40:]}"}
            except TFLiteLabError as e:
                state.show_error(e)
                return
    r = results.get(cell)
    if not r:
        return
    st.caption(f"Input: {r['how']}.")
    import numpy as np
    server = {k: np.asarray(v) for k, v in r["tflite"].items()}
    original = {k: np.asarray(v) for k, v in r["original"].items()} if r["original"] else None
    cols = st.columns(3)
    with cols[0]:
        st.markdown("**Original (server)**")
        if original is None:
            st.caption("No original model: only the .tflite was given.")
        else:
            _table(predictions(original, state.class_names()))
    with cols[1]:
        st.markdown("**.tflite (server LiteRT)**")
        _table(predictions(server, state.class_names()))
        if original is not None:
            st.caption("max |Δ| vs original: " + ", ".join(f"{k} {v:.3g}" for k, v in agreement(original, server).items()))
    with cols[2]:
        st.markdown("**.tflite in this browser (LiteRT.js)**")
        b = r["browser"]
        if b["refusal"]:
            st.warning(b["refusal"], icon=":material/block:")
        elif device_panel.component() is None:
            st.caption("LiteRT.js is not installed on this server.")
        else:
            value = device_panel.component()(cell=b["served"], token=r["token"], autostart=r["browser_outputs"] is None,
                                              key=f"{key}_component", default=None, hint="this one input")
            if value and value.get("token") == r["token"] and r["browser_outputs"] is None:
                if not value.get("ok", True) or not value.get("outputs"):
                    st.error(f"LiteRT.js failed: {value.get('error') or 'no outputs'}", icon=":material/block:")
                    return
                try:
                    r["browser_outputs"] = jobs.run_job("try_browser_outputs", cell_dir=b["cell_dir"], raw=value)
                    r["browser_where"] = device_panel.device_label(value.get("figures") or {})
                except TFLiteLabError as e:
                    state.show_error(e)
            if r["browser_outputs"] is not None:
                got = {k: np.asarray(v) for k, v in r["browser_outputs"].items()}
                _table(predictions(got, state.class_names()))
                st.caption(f"On {r.get('browser_where')}; max |Δ| vs server LiteRT: "
                           + ", ".join(f"{k} {v:.3g}" for k, v in agreement(server, got).items()))
