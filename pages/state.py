"""What every page shares about the session: the model, samples and results in ``st.session_state``
(``lab_*`` keys, so they survive page switches), the tolerances, error display and small shared widgets."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from tflite_lab.errors import TFLiteLabError
from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report
from tflite_lab.types import Optimization, SourceFormat, Tolerances


ROOT = Path(__file__).resolve().parents[1]


SAMPLES_DIR = ROOT / "sample_models"


PAGES = {name: f"pages/{name}.py" for name in ("model", "convert", "compare", "size_speed", "matrix", "debug",
                                                  "deploy", "history")}


@dataclass(frozen=True)
class Model:
    """The model the session works on: where it is on disk and what ``describe`` found."""

    source: dict                 # tflite_lab.pipeline.source_json(...)
    description: dict            # the 'describe' job's result
    label: str                   # "digits_cnn (sample)" or the upload's file name
    catalog: dict | None = None  # the sample_models/catalog.json entry of a bundled sample

    @property
    def filename(self) -> str:
        return self.source["filename"]

    @property
    def format(self) -> SourceFormat:
        return SourceFormat(self.source["format"])

    @property
    def signature(self) -> dict:
        return self.description["signature"]


@dataclass(frozen=True)
class Samples:
    spec: SampleSpec
    label: str                   # "digits_cnn.samples.npz" or "64 random in [0, 1], seed 0"


def init_state() -> None:
    for key, value in (("lab_model", None), ("lab_reference", None), ("lab_samples", None),
                       ("lab_prepared", None), ("lab_reports", {}), ("lab_failures", {}),
                       ("lab_tolerances", {}), ("lab_selected", None), ("lab_model_error", None),
                       ("lab_debug", {}), ("lab_run_ids", {}), ("lab_matrix_run", None)):
        st.session_state.setdefault(key, value)


def model() -> Model | None:
    return st.session_state.get("lab_model")


def class_names() -> list[str] | None:
    """The class names the user gave for the session's model (Model page, or a CLI run opened here)."""
    given, m = st.session_state.get("lab_class_names"), model()
    return given["names"] if given and m and given["model_sha256"] == m.source["sha256"] else None


def set_class_names(names: list[str] | None, origin: str) -> None:
    m = model()
    st.session_state["lab_class_names"] = ({"names": names, "origin": origin, "model_sha256": m.source["sha256"]}
                                           if names and m else None)


def original() -> Model | None:
    """The model conversions start from (for an uploaded .tflite: the original it is compared with)."""
    m = model()
    return st.session_state.get("lab_reference") if m and m.format is SourceFormat.TFLITE else m


def samples() -> Samples:
    return st.session_state.get("lab_samples") or Samples(SampleSpec(), "64 random in [0, 1], seed 0")


def bench_spec() -> BenchSpec:
    ss = st.session_state
    return BenchSpec(enabled=ss.get("set_bench", True), threads=ss.get("set_threads"), runs=ss.get("set_runs", 30))


def reports() -> dict[str, dict]:
    return st.session_state["lab_reports"]


def failures() -> dict[str, dict]:
    return st.session_state["lab_failures"]


def reset_results() -> None:
    """Model, samples or benchmark settings changed: earlier results no longer apply."""
    ss = st.session_state
    ss["lab_prepared"] = None
    ss["lab_reports"] = {}
    ss["lab_failures"] = {}
    ss["lab_tolerances"] = {}
    ss["lab_selected"] = None
    ss["lab_debug"] = {}
    ss["lab_run_ids"] = {}
    ss["lab_matrix_run"] = None


def default_tolerances(report: dict) -> Tolerances:
    opt = report["optimization"]
    return Tolerances.for_optimization(Optimization.NONE if opt == "provided" else opt)


def tolerances_for(cell: str, report: dict) -> Tolerances:
    saved = st.session_state["lab_tolerances"].get(cell)
    return saved if saved is not None else default_tolerances(report)


def judged(cell: str) -> dict:
    report = reports()[cell]
    return judge_report(report, tolerances_for(cell, report))


def sidebar_summary() -> None:
    """The sidebar's current model, samples and results; redrawn whenever a page changes them."""
    from tflite_lab.charts import human_bytes
    slot = st.session_state.get("_sidebar_summary")
    if slot is None:
        return
    with slot.container():
        st.markdown("#### Current model")
        m = model()
        if m is None:
            st.caption("None yet: upload one or pick a sample on the Model page.")
            return
        params = m.description["info"].get("params")
        st.markdown(f"**{m.label}**")
        st.caption(f"{m.format.value} · {human_bytes(m.source['size_bytes'])}"
                   + (f" · {params:,} parameters" if params is not None else ""))
        if m.format is SourceFormat.TFLITE:
            ref = original()
            st.caption(f"Original: {ref.label}" if ref else "Original: none yet (upload it on the Model page)")
        st.caption(f"Samples: {samples().label}")
        done, failed = len(reports()), len(failures())
        st.caption(f"Results: {done} converted" + (f", {failed} failed" if failed else ""))


def show_error(e: TFLiteLabError | dict) -> None:
    """The one-line message, and the long story (converter log, worker traceback) folded away."""
    message, detail = (e.user_message, e.detail) if isinstance(e, TFLiteLabError) else (e["message"], e.get("detail"))
    st.error(message, icon=":material/error:")
    if detail:
        with st.expander("Details"):
            st.code(detail, language=None)


@st.cache_resource(max_entries=12, show_spinner=False)
def load_npz(path: str) -> dict[str, np.ndarray]:
    """Arrays of a content-addressed .npz (samples, references, predictions); shared and read-only."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


@st.cache_data(show_spinner=False)
def catalog() -> list[dict]:
    return json.loads((SAMPLES_DIR / "catalog.json").read_text())


def float_ops_caption(report: dict) -> None:
    """A selectively quantized cell (Compare, Size & speed): what stayed float, and what it costs."""
    if report.get("float_ops"):
        cost = report.get("float_cost_bytes")
        st.caption(f"Kept in float ({len(report['float_ops'])} ops"
                   + (f", +{cost:,} bytes over the all-quantized model" if cost is not None else "") + "): "
                   + ", ".join(f"{o['op']} `{o['tensor']}`" for o in report["float_ops"]))


def cell_picker(label: str = "Result", key: str = "pick_cell") -> str | None:
    """Choose one of the computed cells; the choice is shared by all pages (``lab_selected``)."""
    cells = list(reports())
    if not cells:
        return None
    ss = st.session_state
    ss[key] = ss.get("lab_selected") if ss.get("lab_selected") in cells else cells[-1]
    cell = st.selectbox(label, cells, key=key, on_change=lambda: ss.update(lab_selected=ss[key]))
    ss["lab_selected"] = cell
    return cell
