"""TFLite Lab dashboard: the router and the shared sidebar. The pages live in pages/.

Run with ``streamlit run app.py``. This process never imports TensorFlow: model work runs in the
worker processes of ``tflite_lab.worker``, so the first paint does not wait for it.
"""
import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:          # `streamlit run` adds it; AppTest does not
    sys.path.insert(0, str(ROOT))

from pages import auth, jobs, runs, state  # noqa: E402
from tflite_lab.errors import TFLiteLabError  # noqa: E402

def _favicon():
    """A chip drawn here: a ``:material/…`` page icon makes the browser fetch it from fonts.gstatic.com."""
    import numpy as np
    from PIL import Image
    img = np.zeros((32, 32, 3), np.uint8)
    img[8:24, 8:24] = (255, 111, 0)
    for i in range(10, 23, 4):                  # the pins
        img[i:i + 2, 4:8] = img[i:i + 2, 24:28] = img[4:8, i:i + 2] = img[24:28, i:i + 2] = (90, 90, 90)
    return Image.fromarray(img)


st.set_page_config(page_title="TFLite Lab", page_icon=_favicon(), layout="wide")
state.init_state()
auth.gate()         # a misconfigured [auth], or TFLITE_LAB_REQUIRE_LOGIN=1 and nobody signed in: nothing below
try:
    jobs.executor()   # starts one worker now, so TensorFlow is imported before the first model arrives
except TFLiteLabError as e:      # TFLITE_LAB_EXECUTOR=ray with an unreachable RAY_ADDRESS, an unknown name
    st.error(e.user_message, icon=":material/error:")

start = runs.open_permalink()       # ?run=<id> starts on Compare (&device=1: Deploy), ?runs=a,b on History
navigation = st.navigation([
    st.Page(state.PAGES["model"], title="Model", icon=":material/upload_file:", default=start is None),
    st.Page(state.PAGES["convert"], title="Convert", icon=":material/transform:"),
    st.Page(state.PAGES["compare"], title="Compare", icon=":material/compare_arrows:", default=start == "compare"),
    st.Page(state.PAGES["size_speed"], title="Size & speed", icon=":material/speed:"),
    st.Page(state.PAGES["matrix"], title="Matrix", icon=":material/grid_view:"),
    st.Page(state.PAGES["debug"], title="Debug", icon=":material/troubleshoot:"),
    st.Page(state.PAGES["deploy"], title="Deploy", icon=":material/developer_board:", default=start == "deploy"),
    st.Page(state.PAGES["history"], title="History", icon=":material/history:", default=start == "history"),
])
if st.session_state.get("_permalink_error"):
    st.error(st.session_state.pop("_permalink_error"), icon=":material/link_off:")

from tflite_lab.runtime import cpu_count  # noqa: E402


def _threads_text(t: int | None) -> str:
    return f"every core ({cpu_count()})" if t is None else str(t)


with st.sidebar:
    auth.sidebar()
    st.session_state["_sidebar_summary"] = st.empty()   # pages refresh it when they change the model or results
    state.sidebar_summary()
    # In a popover: its widgets mount only when it opens, so their code chunks do not compete with the
    # page's for the first paint (1.49 -> 1.32 s in benchmarks/first_paint.py).
    with st.popover("Settings", icon=":material/tune:", width="stretch"):
        st.toggle("Measure latency", value=True, key="set_bench", on_change=state.reset_results,
                  help="Time batch-1 runs of the original and each .tflite (adds about a second per model).")
        st.selectbox("Threads (both sides)", [None, 1, 2, 4], key="set_threads", on_change=state.reset_results,
                     format_func=_threads_text, help="TensorFlow (intra/inter-op) and LiteRT both time with this many threads.")
        st.number_input("Timed runs", min_value=5, max_value=500, value=30, step=5, key="set_runs",
                        on_change=state.reset_results, help="Batch-1 runs after 3 warm-up runs (at most ~3 s per model).")
    bench = state.bench_spec()
    st.caption(f"Latency: {bench.runs} timed runs, threads: {_threads_text(bench.threads)}" if bench.enabled
               else "Latency: not measured")

navigation.run()
