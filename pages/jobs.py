"""The pages' work: worker jobs on the executor (``tflite_lab.executors``: the local pool or Ray) with
their progress and cancel, uploads, preparing and converting cells, the matrix. The Streamlit server
never imports TensorFlow: every model operation is a job."""
from __future__ import annotations

import hashlib
import io
import threading
import time
import zipfile
from pathlib import Path

import streamlit as st

from tflite_lab import orchestrate
from tflite_lab.config import cache_dir
from tflite_lab.errors import TFLiteLabError, wrapped
from tflite_lab.executors import default_executor
from tflite_lab.orchestrate import Cell, CellJob, cell_id, failure_record  # noqa: F401  (pages use them)
from tflite_lab.pipeline import SampleSpec, source_json
from tflite_lab.sources import load_source
from tflite_lab.store import Store
from tflite_lab.types import SourceFormat
from pages.state import (Model, PAGES, SAMPLES_DIR, Samples, bench_spec, catalog, failures, model, original,
                         reports, reset_results, samples, show_error, sidebar_summary)
from pages.runs import record


class StepLog:
    """Feeds the worker's progress into an ``st.status``: one line per step with its duration."""

    def __init__(self, status, title: str):
        self.status, self.title = status, title
        self.box = status.empty()
        self.lines: list[str] = []
        self.current: tuple[str, float] | None = None
        self.t0 = time.monotonic()

    def __call__(self, step: str, _elapsed: float = 0.0) -> None:
        now = time.monotonic()
        if self.current and self.current[0] == step:        # the same step, re-sent: the clock moves on
            self.status.update(label=f"{self.title}: {step}… ({now - self.t0:.1f} s)")
            return
        self._close(now)
        self.current = (step, now)
        self.status.update(label=f"{self.title}: {step}… ({now - self.t0:.1f} s)")
        self.box.markdown("  \n".join(self.lines + [f":material/pending: {step}…"]))

    def _close(self, now: float) -> None:
        if self.current:
            self.lines.append(f":material/check_circle: {self.current[0]} — {now - self.current[1]:.1f} s")
            self.current = None

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def done(self, label: str) -> None:
        self._close(time.monotonic())
        self.box.markdown("  \n".join(self.lines) or "Taken from the cache.")
        self.status.update(label=f"{label} in {self.elapsed():.1f} s", state="complete", expanded=False)

    def failed(self, label: str) -> None:
        self._close(time.monotonic())
        self.box.markdown("  \n".join(self.lines + [f":material/cancel: {label}"]))
        self.status.update(label=f"{label} after {self.elapsed():.1f} s", state="error", expanded=False)


def cancel_button(what: str, key: str) -> threading.Event:
    """A Cancel button for the work that starts now; the event it sets stops that work.

    A click makes Streamlit stop this script run at its next progress tick (every 0.5 s), which
    kills the worker of a job running in it; matrix cells running in their own threads stop on the
    event. The next run says what was cancelled (``show_cancelled``); earlier results stay.
    """
    ev = threading.Event()

    def cancelled():            # runs before the next script run, with this run's event
        ev.set()
        st.session_state["lab_cancelled"] = what
    st.button("Cancel", key=key, icon=":material/stop_circle:", on_click=cancelled)
    return ev


def show_cancelled() -> None:
    what = st.session_state.pop("lab_cancelled", None)
    if what:
        st.warning(f"{what} was cancelled and its worker stopped; earlier results are kept.",
                   icon=":material/stop_circle:")


def executor():
    """The server's executor (local worker pool, or Ray with TFLITE_LAB_EXECUTOR=ray)."""
    return default_executor()


def executor_label() -> str:
    """"local, 2 workers" or "ray at ADDRESS, N CPUs"; why not, when the executor cannot start."""
    try:
        return executor().describe()
    except TFLiteLabError as e:
        return wrapped("unavailable: ", e.user_message)


def run_job(job: str, progress=None, cancel=None, **kwargs):
    """Run a worker job (blocking); raises the project's errors (Cancelled once ``cancel`` is set)."""
    return executor().run(job, progress=progress, cancel=cancel, **kwargs)


@st.cache_data(show_spinner=False, max_entries=64)
def _describe(sha256: str, _source: dict) -> dict:
    return run_job("describe", source=_source)


def load_model(data: bytes, filename: str, catalog: dict | None = None, *, as_reference: bool = False) -> Model:
    """Check the bytes, describe the model in a worker and make it the session's model.

    Raises: TFLiteLabError (SourceError for a file that is not a model).
    """
    src = source_json(load_source(data, filename))
    slot = st.empty()           # the progress shows while reading, then makes way for the model
    with slot.status(f"Reading {filename} in a worker process…", expanded=False):
        try:
            desc = _describe(src["sha256"], src)
        except TFLiteLabError:
            slot.empty()
            raise
    slot.empty()
    m = Model(src, desc, f"{catalog['name']} (sample)" if catalog else filename, catalog)
    if as_reference:
        if m.format is SourceFormat.TFLITE:
            raise TFLiteLabError(f"{filename} is a .tflite too; the original must be a .keras, .h5 or zipped "
                                 "SavedModel.")
        st.session_state["lab_reference"] = m
    else:
        st.session_state["lab_model"] = m
        st.session_state["lab_reference"] = None
        shipped = SAMPLES_DIR / catalog["samples"] if catalog and catalog.get("samples") else None
        labels = str(SAMPLES_DIR / catalog["labels"]) if catalog and catalog.get("labels") else None
        st.session_state["lab_samples"] = Samples(SampleSpec(path=str(shipped), labels=labels), shipped.name) \
            if shipped else None
    reset_results()
    sidebar_summary()
    return m


UPLOADS = {     # upload widget -> what takes its file (the Model page renders all three)
    "model_upload": lambda data, name: load_model(data, name),
    "reference_upload": lambda data, name: load_model(data, name, as_reference=True),
    "samples_upload": lambda data, name: set_samples(SampleSpec(path=save_upload(data, name)), name),
}


def _read_upload(widget_key: str):
    """(file ids, bytes, name) of the widget's file(s), or None when it holds none.

    Several files (images) are zipped into one archive, which the core reads as a zip of images.
    """
    up = st.session_state.get(widget_key)
    files = up if isinstance(up, list) else [up] if up is not None else []
    if not files:
        return None
    if len(files) == 1:
        return (files[0].file_id,), files[0].getvalue(), files[0].name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.writestr(Path(f.name).name, f.getvalue())
    return tuple(f.file_id for f in files), buf.getvalue(), f"{len(files)} files.zip"


def stash_upload(widget_key: str) -> None:
    """The uploader's on_change: keep the file in the session until it has been taken.

    A widget's value lives only while its page is shown: a user who leaves the Model page while
    it still reads the model would lose the upload. Callbacks run before any script, so the stash
    exists whatever happens to the run that follows.
    """
    pending = st.session_state.setdefault("_pending_uploads", {})
    got = _read_upload(widget_key)
    if got is None:
        pending.pop(widget_key, None)
    else:
        pending[widget_key] = got


def take_upload(widget_key: str, *, show: bool = True) -> None:
    """Act on a newly uploaded file once; keep its error shown while the file stays in the widget.

    The file counts as taken only once its loader has finished: a run cut short by a page switch
    (Streamlit stops it at its next call) leaves it pending, and the next page takes it.
    """
    ss = st.session_state
    got = ss.get("_pending_uploads", {}).get(widget_key) or _read_upload(widget_key)
    if got is None:
        ss.pop(widget_key + "_error", None)
        return
    file_id, data, name = got
    if ss.get(widget_key + "_id") != file_id:
        ss.pop(widget_key + "_error", None)
        try:
            UPLOADS[widget_key](data, name)
        except TFLiteLabError as e:
            ss[widget_key + "_error"] = failure_record(e)
            show = True         # a file refused on another page says so there too
        ss[widget_key + "_id"] = file_id
    ss.get("_pending_uploads", {}).pop(widget_key, None)
    if show and ss.get(widget_key + "_error"):
        show_error(ss[widget_key + "_error"])


def take_pending_uploads() -> None:
    """Uploads the Model page had not finished taking when the user left it: taken now, on this page."""
    for key in list(st.session_state.get("_pending_uploads", {})):
        take_upload(key, show=False)


def set_samples(spec: SampleSpec, label: str) -> None:
    if samples().spec != spec:
        st.session_state["lab_samples"] = Samples(spec, label)
        reset_results()
        sidebar_summary()


def save_upload(data: bytes, filename: str) -> str:
    """An uploaded sample file on disk under its own name (messages quote it), addressed by content."""
    folder = cache_dir() / "uploads" / hashlib.sha256(data).hexdigest()[:32]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (Path(filename).name or "samples")
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def ensure_prepared(progress=None, alone: bool = False, cancel=None) -> dict:
    """Samples fixed, reference outputs computed and the model exported: once per model x samples x bench.

    ``alone``: a .tflite without its original, prepared from its own signature (nothing to compare).
    """
    m = model() if alone else original()
    if m is None:
        raise TFLiteLabError("Load a model on the Model page first.")
    spec, bench = samples().spec, bench_spec()
    key = orchestrate.prepare_key(m.source, spec, bench)
    ss = st.session_state
    if ss.get("lab_prepared") is None or ss.get("lab_prepared_key") != key:
        ss["lab_prepared"] = orchestrate.prepare(executor(), m.source, spec, bench, progress, cancel)
        ss["lab_prepared_key"] = key
    return ss["lab_prepared"]


def run_cell(route: str, optimization: str, int8_io: bool, prepared: dict, progress=None, cancel=None,
             targets: dict | None = None) -> dict:
    """Convert and evaluate one cell (and run it on ``targets``); keeps the report (or the failure)."""
    cell = Cell(route, optimization, int8_io)
    try:
        report = orchestrate.run_cell(executor(), cell, prepared, bench_spec(), reports(), failures(),
                                      progress=progress, cancel=cancel, targets=targets, store=Store())
    except TFLiteLabError:
        sidebar_summary()
        raise
    st.session_state["lab_selected"] = cell.id
    record("convert", [cell.id], prepared)
    sidebar_summary()
    return report


def run_provided(prepared: dict, progress=None, cancel=None, targets: dict | None = None) -> dict:
    report = run_job("provided", progress=progress, cancel=cancel, prepared=prepared, tflite_source=model().source,
                     bench=bench_spec(), **({"targets": targets} if targets else {}))
    reports()["provided"] = report
    st.session_state["lab_selected"] = "provided"
    record("convert", ["provided"], prepared)
    sidebar_summary()
    return report


def need_model() -> Model | None:
    """The current model, or a pointer to the Model page when there is none."""
    take_pending_uploads()
    m = model()
    if m is None:
        st.info("No model yet: upload one or pick a sample on the **Model** page.", icon=":material/upload_file:")
        st.page_link(PAGES["model"], label="Go to Model", icon=":material/arrow_forward:")
    return m


def matrix_targets() -> dict | None:
    """The Matrix page's deployment targets: {"micro": {"board": ...}} while its Microcontroller switch is on."""
    ss = st.session_state
    return {"micro": {"board": ss.get("matrix_board") or "nano33ble"}} if ss.get("matrix_micro") else None


def _on_targets(report: dict, targets: dict) -> bool:
    have = report.get("targets") or {}
    return all(name in have and (have[name].get("board") or {}).get("name") == opts.get("board")
               for name, opts in targets.items())


def pending_cells(fmt: SourceFormat) -> list[Cell]:
    """Supported cells not computed yet (see ``orchestrate.pending_cells``), and with the Matrix page's
    targets on, computed cells not yet run there."""
    todo = orchestrate.pending_cells(fmt, reports(), failures())
    targets = matrix_targets()
    if targets:
        from tflite_lab.routes import supported_cells
        todo += [Cell(r.value, o.value) for r, o in supported_cells(fmt)
                 if cell_id(r.value, o.value) in reports() and not _on_targets(reports()[cell_id(r.value, o.value)], targets)]
    return todo


def run_cells(cells: list[Cell], prepared: dict, render, cancel=None) -> None:
    """Run cells on the executor; ``render(states)`` redraws progress from this (the script's) thread."""
    targets = matrix_targets()
    orchestrate.run_cells(executor(), [CellJob(c.id, c, prepared, targets) for c in cells], bench_spec(), reports(),
                          failures(), render, on_finish=lambda _key: sidebar_summary(), cancel=cancel, store=Store())
    sidebar_summary()
