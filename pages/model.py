"""Model: upload a model or pick a bundled sample; its format, signature, size, layers; the samples."""
import pandas as pd
import streamlit as st

from pages import jobs, state, tables
from tflite_lab.charts import human_bytes
from tflite_lab.config import Limits
from tflite_lab.errors import TFLiteLabError
from tflite_lab.pipeline import SampleSpec
from tflite_lab.tryit import load_class_names

ss = st.session_state
MAX_MB = int(Limits.from_env().upload_mb)


st.title("Model")
left, right = st.columns([1, 1], gap="large")
with left:
    st.file_uploader("Model file", type=["keras", "h5", "zip", "tflite"], key="model_upload", max_upload_size=MAX_MB,
                     on_change=jobs.stash_upload, args=("model_upload",),
                     help=".keras, .h5, a zipped SavedModel, or a .tflite to inspect and compare with its original")
    jobs.take_upload("model_upload")
with right:
    entries = {e["name"]: e for e in state.catalog()}
    name = st.selectbox("…or a bundled sample", list(entries), key="gallery_pick", persist_state="session")
    entry = entries[name]
    st.caption(f"{entry['description']}  \n`{entry['file']}` · {entry['task']} · inputs "
               + ", ".join(f"{k} {tables.shape_text(v)}" for k, v in entry["inputs"].items()))
    if st.button("Use this sample", key="gallery_use", icon=":material/download:"):
        try:
            jobs.load_model((state.SAMPLES_DIR / entry["file"]).read_bytes(), entry["file"], entry)
        except TFLiteLabError as e:
            state.show_error(e)

m = state.model()
if m is None:
    st.info("Upload a model, or pick a bundled sample to try the app.", icon=":material/upload_file:")
    st.stop()

info = m.description["info"]
st.header(m.label, divider="gray")
cols = st.columns(5)
cols[0].metric("Format", m.format.value)
cols[1].metric("File size", human_bytes(m.source["size_bytes"]), help=f"{m.source['size_bytes']:,} bytes")
cols[2].metric("Parameters", f"{info['params']:,}" if info.get("params") is not None else "–")
cols[3].metric("Layers", len(info.get("layers", [])) or "–")
cols[4].metric("Inputs / outputs", f"{len(m.signature['inputs'])} / {len(m.signature['outputs'])}")
if info.get("recurrent"):
    st.warning("Recurrent layers: they are converted with a fixed batch of 1 (a dynamic batch fails on TF 2.21).",
               icon=":material/warning:")

sig_col, layer_col = st.columns([2, 3], gap="large")
sig_col.markdown("**Signature**")
sig_col.dataframe(tables.signature_frame(m.signature), hide_index=True)
if info.get("layers"):
    layer_col.markdown("**Layers**")
    layer_col.dataframe(pd.DataFrame(info["layers"]), hide_index=True, height=min(400, 36 + 35 * len(info["layers"])))

if m.format.value == "tflite":
    insp = m.description["inspection"]
    for f in insp["findings"]:
        st.warning(f, icon=":material/warning:")
    for n in insp["notes"]:
        st.info(n, icon=":material/info:")
    layer_col.markdown("**Operators**")
    layer_col.dataframe(pd.DataFrame({"operator": list(insp["operators"]), "count": list(insp["operators"].values())}),
                        hide_index=True)
    st.subheader("Original model")
    st.file_uploader("Original model (to compare the .tflite against)", type=["keras", "h5", "zip"],
                     key="reference_upload", on_change=jobs.stash_upload, args=("reference_upload",), max_upload_size=MAX_MB)
    jobs.take_upload("reference_upload")
    ref = state.original()
    st.caption(f"Comparing against **{ref.label}**." if ref else "No original yet: the .tflite can only be inspected.")
    if ref is None:
        st.stop()

st.subheader("Sample inputs")
shipped = state.SAMPLES_DIR / m.catalog["samples"] if m.catalog else None
current = state.samples().spec
kinds = (["shipped"] if shipped else []) + ["upload", "random"]
kind_now = "random" if not current.path else "shipped" if shipped and current.path == str(shipped) else "upload"
kind = st.radio("Samples come from", kinds, index=kinds.index(kind_now), horizontal=True,
                key=f"samples_kind_{m.source['sha256'][:12]}",
                format_func={"shipped": f"the bundled {shipped.name if shipped else ''}", "upload": "a file I upload",
                             "random": "random values"}.get)
if kind == "shipped" and kind_now != "shipped":
    labels = str(state.SAMPLES_DIR / m.catalog["labels"]) if m.catalog.get("labels") else None
    jobs.set_samples(SampleSpec(path=str(shipped), labels=labels), shipped.name)
elif kind == "upload":
    st.file_uploader("Sample inputs", type=["npy", "npz", "csv", "png", "jpg", "jpeg", "zip"], key="samples_upload",
                     on_change=jobs.stash_upload, args=("samples_upload",),
                     max_upload_size=MAX_MB, accept_multiple_files=True,
                     help=".npy or .csv for one input, .npz keyed by input name, or images (several, or a zip of "
                     "them; scaled to [0, 1] and resized to the input)")
    jobs.take_upload("samples_upload")
    if kind_now != "upload":
        st.caption(f"Until a file is uploaded, the samples stay: {state.samples().label}.")
elif kind == "random":
    c = st.columns(4)
    count = c[0].number_input("Samples", 1, Limits.from_env().max_samples, current.count or 64, key="rand_count")
    seed = c[1].number_input("Seed", 0, 2**31 - 1, current.seed, key="rand_seed")
    auto = "from the model"      # an Embedding's vocabulary for its ids, else 0 and 1
    low = c[2].number_input("Low", value=current.low, key="rand_low", format="%g", placeholder=auto,
                            help="Empty: from the model where it declares a range (token ids: the whole vocabulary "
                                 "of the Embedding they feed), else 0")
    high = c[3].number_input("High", value=current.high, key="rand_high", format="%g", placeholder=auto,
                             help="Empty: from the model where it declares a range, else 1")
    dynamic = [t for t in ((state.original() or m).signature["inputs"]) if None in (t["shape"] or [None])[1:]]
    lengths = dict(current.lengths)
    if dynamic:
        lc = st.columns(min(len(dynamic), 4))
        for i, t in enumerate(dynamic):
            lengths[t["name"]] = lc[i % len(lc)].number_input(
                f"Length of {t['name']}", 1, 1 << 16, lengths.get(t["name"]), key=f"rand_len_{t['name']}",
                placeholder="the model's maximum, else 32", help="Size of this input's dynamic dims in the samples")
    lengths = tuple((k, int(v)) for k, v in lengths.items() if v)
    if low is not None and high is not None and high <= low:
        st.error(f"High ({high:g}) must be above low ({low:g}).")
    else:
        bound = (lambda v: auto if v is None else f"{v:g}")
        where = "" if low is None and high is None else f" in [{bound(low)}, {bound(high)}]"
        jobs.set_samples(SampleSpec(count=int(count), seed=int(seed), low=low, high=high, lengths=lengths),
                           f"{count} random{where}, seed {seed}"
                           + "".join(f", {k} length {v}" for k, v in lengths))

st.caption(f"Using: **{state.samples().label}**")
if st.button("Check samples", key="check_samples", help="Load the samples and run the original model on them"):
    with st.status("Preparing…", expanded=True) as status:
        log = jobs.StepLog(status, "Preparing")
        try:
            jobs.ensure_prepared(log)
            log.done("Prepared")
        except TFLiteLabError as e:
            log.failed("Preparing failed")
            state.show_error(e)
prepared = ss.get("lab_prepared")
if prepared:
    st.success(f"{prepared['num_samples']} samples ({prepared['samples_origin']}); the original's outputs are the "
               "reference every conversion is compared with.", icon=":material/check_circle:")
    if prepared.get("sample_inputs"):
        st.dataframe(tables.sample_inputs_frame(prepared["sample_inputs"]), hide_index=True, key="sample_inputs")
    for w in prepared["warnings"]:
        st.warning(w, icon=":material/warning:")

st.subheader("Class names")
st.file_uploader("Class names (.txt: one per line, in the order of the model's output)", type=["txt", "names", "labels"],
                 key="class_names_upload", max_upload_size=4,
                 help="Label the predictions on Deploy's 'Try it' and the classes of Compare's confusion view.")
up = ss.get("class_names_upload")
if up is not None and ss.get("_class_names_read") != up.file_id:
    ss["_class_names_read"] = up.file_id
    try:
        state.set_class_names(load_class_names(up.getvalue(), up.name), up.name)
    except TFLiteLabError as e:
        state.show_error(e)
names = state.class_names()
if names:
    dims = {o["name"]: (o.get("shape") or [None])[-1] for o in (state.original() or m).signature["outputs"]}
    fits = [k for k, d in dims.items() if d == len(names)]
    st.caption(f"{len(names)} class names from {ss['lab_class_names']['origin']}: "
               + ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
               + (f" — for {', '.join(fits)}." if fits else "."))
    if not fits:
        st.warning(f"No output has {len(names)} classes ({', '.join(f'{k}: {d}' for k, d in dims.items())}): the "
                   "names will not be used.", icon=":material/warning:")
    if st.button("Forget the class names", key="class_names_clear"):
        state.set_class_names(None, "")
        st.rerun()
