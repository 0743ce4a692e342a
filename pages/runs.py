"""The run history on the pages: recording runs, opening them (``?run=``/``?runs=`` permalinks),
copy-link and the HTML report download."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from tflite_lab.errors import wrapped
from tflite_lab.pipeline import SampleSpec
from tflite_lab.types import Tolerances
from pages import auth
from pages.state import Model, Samples, judged, original, reset_results, samples, set_class_names


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
                            samples_description=samples().label if original() else None, author=auth.author())
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
                                      samples_description=samples().label, author=auth.author())
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
    given = (run.get("extra") or {}).get("class_names")
    if given:
        set_class_names(given["names"], f"{given['file']} (given with run {run.get('id')})")
    return cell


def open_permalink() -> str | None:
    """``?run=<id>`` opens that run on Compare (``&device=1``: on Deploy, running it in this browser),
    ``?runs=a,b`` side by side on History.

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
        target = found[run]
        if target.get("kind") == "device" and target.get("parent_run"):     # a device run: open its cell's run
            with history() as h:
                target = h.get(target["parent_run"]) or target
        if open_run(target) is None:
            ss["_permalink_error"] = f"Run '{run}' has no computed result to open (its conversion failed)."
            return None
        ss["_permalink_page"] = "compare"
        if params.get("device") == "1":        # the QR code: this device runs the cell at once
            ss["_permalink_page"] = "deploy"
            ss["deploy_target"], ss["deploy_cell"] = "browser", ss.get("lab_selected")
            ss["device_autostart"] = target["id"]
    else:
        ss["history_compare"] = ids
        ss["_permalink_page"] = "history"
    return ss["_permalink_page"]


def app_base_url() -> str:
    """scheme://host[:port][/baseUrlPath] as the browser reached this app ("" when unknown)."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(st.context.url or "")
    except AttributeError:
        return ""
    if not parts.netloc:
        return ""
    prefix = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"{parts.scheme}://{parts.netloc}" + (f"/{prefix}" if prefix else "")


def permalink(run_ids: list[str]) -> str:
    """The URL that opens these runs (one: on Compare; several: side by side)."""
    query = f"run={run_ids[0]}" if len(run_ids) == 1 else f"runs={','.join(run_ids)}"
    return f"{app_base_url()}/?{query}"


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
            stamp = "|".join(f"{(r or {}).get('note')}{len(h.reviews(i))}{len(h.devices(i))}"
                             for i, r in zip(run_ids, h.runs_by_id(run_ids)))      # a new review or device run: new report
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
