"""What every page shares: the session's state, the worker jobs, error display, shared widgets.

The Streamlit server never imports TensorFlow: every model operation is a job on the executor
(``tflite_lab.executor``: the local worker pool, or Ray); which cells run and in what order is
``tflite_lab.orchestrate``. Results live in ``st.session_state`` under ``lab_*`` keys so they survive
page switches; the on-disk store makes the same bytes with the same settings fast to redo.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from tflite_lab import orchestrate
from tflite_lab.config import cache_dir
from tflite_lab.errors import TFLiteLabError, wrapped
from tflite_lab.executor import default_executor
from tflite_lab.orchestrate import Cell, CellJob, cell_id, failure_record  # noqa: F401  (pages use them)
from tflite_lab.pipeline import BenchSpec, SampleSpec, judge_report, source_json
from tflite_lab.sources import load_source
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


# ---- state ----

def init_state() -> None:
    for key, value in (("lab_model", None), ("lab_reference", None), ("lab_samples", None),
                       ("lab_prepared", None), ("lab_reports", {}), ("lab_failures", {}),
                       ("lab_tolerances", {}), ("lab_selected", None), ("lab_model_error", None),
                       ("lab_debug", {}), ("lab_run_ids", {}), ("lab_matrix_run", None)):
        st.session_state.setdefault(key, value)


def model() -> Model | None:
    return st.session_state.get("lab_model")


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


# ---- errors ----

def show_error(e: TFLiteLabError | dict) -> None:
    """The one-line message, and the long story (converter log, worker traceback) folded away."""
    message, detail = (e.user_message, e.detail) if isinstance(e, TFLiteLabError) else (e["message"], e.get("detail"))
    st.error(message, icon=":material/error:")
    if detail:
        with st.expander("Details"):
            st.code(detail, language=None)


# ---- jobs ----

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
                                      progress=progress, cancel=cancel, targets=targets)
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


# ---- widgets shared by pages ----

def need_model() -> Model | None:
    """The current model, or a pointer to the Model page when there is none."""
    take_pending_uploads()
    m = model()
    if m is None:
        st.info("No model yet: upload one or pick a sample on the **Model** page.", icon=":material/upload_file:")
        st.page_link(PAGES["model"], label="Go to Model", icon=":material/arrow_forward:")
    return m


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


# ---- the matrix ----

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
                          failures(), render, on_finish=lambda _key: sidebar_summary(), cancel=cancel)
    sidebar_summary()


# ---- run history and permalinks ----

def record(kind: str, cells: list[str], prepared: dict, failed: dict | None = None) -> str | None:
    """Keep the run in the history (judged with the session's tolerances); its id per cell.

    A history the product cannot read does not stop the dashboard: the run is not recorded and
    the page says why.
    """
    from tflite_lab.errors import HistoryError
    from tflite_lab.history import record_run
    ss = st.session_state
    try:
        run_id = record_run(kind, [judged(c) for c in cells], prepared, origin="dashboard", failed=failed,
                            samples_description=samples().label if original() else None)
    except HistoryError as e:
        st.warning(wrapped("Not recorded in the run history: ", e.user_message), icon=":material/history:")
        return None
    if kind == "matrix":
        ss["lab_matrix_run"] = run_id
        for c in cells:             # cells first converted on Convert keep their own run
            ss["lab_run_ids"].setdefault(c, run_id)
    else:
        ss["lab_run_ids"].update({c: run_id for c in cells})
    return run_id


def record_debug(result: dict, prepared: dict) -> str | None:
    """Keep a Debug run (its chosen model, the per-layer table and the sweep); its id in the result."""
    from tflite_lab.errors import HistoryError
    from tflite_lab.history import record_run
    extra = {k: result.get(k) for k in ("layers", "suggested_float", "sweep", "best_step", "notes")}
    try:
        result["run_id"] = record_run("debug", [result["model"]], prepared, origin="dashboard", extra=extra,
                                      samples_description=samples().label)
    except HistoryError as e:
        st.warning(wrapped("Not recorded in the run history: ", e.user_message), icon=":material/history:")
        return None
    return result["run_id"]


def history():
    """The run history for this script run (a new connection: sqlite3 connections stay in one thread)."""
    from tflite_lab.history import History
    return History()


def open_run(run: dict) -> str | None:
    """Make a recorded run the session's results, as if just converted; returns the cell to show."""
    reports_ = {r["cell"]: r for r in run.get("reports", [])}
    if not reports_:
        return None
    source = next(iter(reports_.values())).get("source") or {**run["model"], "path": ""}
    m = Model(source, {"signature": run.get("signature") or {"inputs": [], "outputs": []},
                       "info": run.get("info") or {}}, run["model"]["filename"])
    ss = st.session_state
    ss["lab_model"], ss["lab_reference"] = m, None
    # Converting again from here uses the run's own samples (the store keeps them as .npz).
    kept = next((p for p in run.get("artifacts", {}).get("samples", []) if p and Path(p).is_file()), None)
    ss["lab_samples"] = Samples(SampleSpec(path=kept), run["samples"].get("description") or Path(kept).name) \
        if kept else None
    reset_results()
    ss["lab_reports"].update(reports_)
    if run["kind"] == "matrix":
        ss["lab_matrix_run"] = run["id"]
    ss["lab_run_ids"].update({c: run["id"] for c in reports_})
    ss["lab_tolerances"].update({c: Tolerances.from_json(r["tolerances"]) for c, r in reports_.items()
                                 if r.get("tolerances")})
    cell = run.get("cell") if run.get("cell") in reports_ else next(iter(reports_))
    ss["lab_selected"] = cell
    return cell


def open_permalink() -> str | None:
    """``?run=<id>`` opens that run on Compare, ``?runs=a,b`` side by side on History.

    Returns the page to start on (None: the normal start page). Done once per link, so the user's
    later changes in the session are not undone by a rerun.
    """
    from tflite_lab.errors import HistoryError
    params = st.query_params
    run, runs = params.get("run"), params.get("runs")
    link = f"run={run}" if run else f"runs={runs}" if runs else None
    ss = st.session_state
    if not link:
        return None
    if ss.get("_permalink") == link:
        return ss.get("_permalink_page")
    ss["_permalink"], ss["_permalink_page"] = link, None
    ids = [run] if run else [i.strip() for i in runs.split(",") if i.strip()]
    try:
        with history() as h:
            found = {i: h.get(i) for i in ids}
    except HistoryError as e:
        ss["_permalink_error"] = e.user_message
        return None
    missing = [i for i, r in found.items() if r is None]
    if missing:
        ss["_permalink_error"] = (f"No run {', '.join(repr(i) for i in missing)} in the run history: it may have "
                                  "been deleted, or the link comes from another installation.")
        return None
    if run:
        if open_run(found[run]) is None:
            ss["_permalink_error"] = f"Run '{run}' has no computed result to open (its conversion failed)."
            return None
        ss["_permalink_page"] = "compare"
    else:
        ss["history_compare"] = ids
        ss["_permalink_page"] = "history"
    return ss["_permalink_page"]


def permalink(run_ids: list[str]) -> str:
    """The URL that opens these runs (one: on Compare; several: side by side)."""
    base = ""
    try:
        url = st.context.url or ""
        base = url.split("?", 1)[0].rsplit("/", 1)[0] if url else ""
    except AttributeError:
        pass
    query = f"run={run_ids[0]}" if len(run_ids) == 1 else f"runs={','.join(run_ids)}"
    return f"{base}/?{query}"


def copy_link(run_ids: list[str] | str | None, key: str) -> None:
    """A 'Copy link' next to a verdict: the permalink in a code box with its copy button."""
    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids or [])
    if not ids:
        st.caption("Not in the run history, so no link.")
        return
    with st.popover("Copy link", icon=":material/link:", key=key):
        st.code(permalink(ids), language=None)
        st.caption("Opens " + ("this run on Compare." if len(ids) == 1 else "these runs side by side on History."))


_REPORTS: dict[tuple, bytes] = {}       # the last few reports built, for their exact size on the button


def _build_report(run_ids: tuple[str, ...], stamp: str) -> bytes:
    from tflite_lab.report_html import render_report
    with history() as h:
        runs = [h.get(i) for i in run_ids]
    data = render_report([r for r in runs if r]).encode()
    if len(_REPORTS) >= 8:
        _REPORTS.pop(next(iter(_REPORTS)))
    _REPORTS[(run_ids, stamp)] = data
    return data


def report_download(run_ids: list[str], key: str) -> None:
    """Download the HTML report of these runs, built when clicked (it embeds 4.6 MB of plotly.js and
    would slow every page otherwise); the button gives its size: exact once built, else the estimate
    (plotly.js plus ~100 KB a run, as charts are capped at 5,000 values)."""
    from tflite_lab.charts import human_bytes
    from tflite_lab.errors import HistoryError
    if not run_ids:
        return
    try:
        with history() as h:
            stamp = "|".join(f"{(r or {}).get('note')}{(r or {}).get('reviewer')}" for r in h.runs_by_id(run_ids))
    except HistoryError as e:
        st.caption(wrapped("No report: ", e.user_message))
        return
    ids = tuple(run_ids)
    built = _REPORTS.get((ids, stamp))
    size = human_bytes(len(built)) if built else "≈" + human_bytes(_plotly_js_bytes() + 100_000 * len(ids))
    st.download_button(f"HTML report ({size})", built or (lambda: _build_report(ids, stamp)),
                       "report-" + "-".join(run_ids) + ".html", mime="text/html", key=key,
                       icon=":material/download:", on_click="ignore",
                       help="One self-contained file: opens offline in any browser.")


def link_and_report(run_id: str, key: str) -> None:
    """A run's 'Copy link' and its HTML report side by side (Matrix, Debug)."""
    a, b, _ = st.columns([1, 1, 4])
    with a:
        copy_link(run_id, key=f"{key}_link")
    with b:
        report_download([run_id], key=f"{key}_report")


@st.cache_resource(show_spinner=False)
def _plotly_js_bytes() -> int:
    import plotly.offline
    return len(plotly.offline.get_plotlyjs().encode())
