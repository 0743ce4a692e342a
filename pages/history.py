"""History: every recorded run (dashboard and CLI), filtered and paged in SQL; runs side by side."""
import datetime as dt

import pandas as pd
import streamlit as st

from pages import auth, reviews, runs, state, tables, trash
from tflite_lab import charts, report_html
from tflite_lab.errors import HistoryError
from tflite_lab.history import REVIEW_STATES, SORTS, RunFilter
from tflite_lab.people import Person, author_label, can_change

PAGE_SIZE = 50
ss = st.session_state
st.title("History")
try:
    h = runs.history()
except HistoryError as e:
    state.show_error(e)
    st.stop()

who = auth.actor()
f = st.columns([2, 1, 1, 2, 2, 2, 2], vertical_alignment="bottom")
model = f[0].selectbox("Model", [None, *h.distinct("model_name")], key="hist_model", format_func=lambda x: x or "all")
verdict = f[1].selectbox("Verdict", [None, "pass", "fail", "ran, no reference", "error"], key="hist_verdict",
                         format_func=lambda x: x or "all")
recipe = f[2].selectbox("Recipe", [None, *h.distinct("recipe")], key="hist_recipe", format_func=lambda x: x or "all")
days = f[3].date_input("Date", value=(), key="hist_dates", help="A day, or a range of days")
search = f[4].text_input("Search", key="hist_search", placeholder="text in a note, a review or a name")
author = f[5].selectbox("Author", [None, *h.authors()], key="hist_author", format_func=lambda x: x or "anyone")
review = f[6].selectbox("Review", [None, *(s for s in REVIEW_STATES if s != "approved by me" or who.person)],
                        key="hist_review", format_func=lambda x: x or "any")
since = until = None
if days:
    first, last = (days[0], days[-1]) if isinstance(days, (tuple, list)) else (days, days)
    since = dt.datetime.combine(first, dt.time()).timestamp()
    until = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()).timestamp()
flt = RunFilter(model=model, verdict=verdict, recipe=recipe, since=since, until=until, search=search or None,
                author=author, review=review, me=who.person)
total = h.count(flt)
s = st.columns([2, 1, 1, 3], vertical_alignment="bottom")
sort = s[0].selectbox("Sort by", list(SORTS), key="hist_sort")
descending = s[1].toggle("Descending", value=True, key="hist_desc")
pages = max(1, -(-total // PAGE_SIZE))
page = s[2].number_input("Page", min_value=1, max_value=pages, value=1, key="hist_page") if pages > 1 else 1
s[3].caption(f"{total:,} runs" + (f" · page {page} of {pages}" if pages > 1 else "") + f" · {h.path}")

rows = h.runs(flt, sort=sort, descending=descending, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
if not rows:
    st.info("No run yet: conversions on the Convert and Matrix pages and `python -m tflite_lab convert|matrix` "
            "are recorded here." if not total and flt == RunFilter() else "No run matches these filters.",
            icon=":material/history:")


def _f(x):
    return None if x is None else float(x)


review_of = h.reviews_of([r["id"] for r in rows])

frame = pd.DataFrame([{
    "run": r["id"], "time": dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S"),
    "kind": f"device: {r['summary'].get('device')} ({r['summary'].get('accelerator')})" if r["kind"] == "device"
            else r["kind"], "from": r["origin"], "model": r["model_name"],
    "cell": f"{r['route'] or ''}-{r['recipe'] or ''}".strip("-") or "–",
    "verdict": tables.VERDICT_TEXT.get(r["verdict"], r["verdict"]), "size (KB)": (r["tflite_bytes"] or 0) / 1024 or None,
    "max abs error": _f(r["summary"].get("max_abs_error")), "top-1": _f(r["summary"].get("min_top1")),
    "latency (ms)": _f(r["summary"].get("latency_ms")), "author": author_label(r["author"]),
    "reviews": report_html.review_summary(review_of[r["id"]]), "note": r["note"]}
    for r in rows], dtype=object)
picked: list[str] = []
if rows:
    fmt = {k: tables._formatter(v) for k, v in {"size (KB)": ",.1f", "max abs error": ".2e", "top-1": ".1%",
                                                   "latency (ms)": ".4f"}.items()}
    # Keyed by the rows shown: another page, filter or a deletion starts a fresh selection, so a
    # selected index can never point at a different run.
    key = "hist_table_" + str(abs(hash(tuple(r["id"] for r in rows))))
    event = st.dataframe(frame.style.format(fmt), hide_index=True, key=key, on_select="rerun",
                         selection_mode="multi-row", placeholder="–",
                         column_config={"note": st.column_config.TextColumn(width="large")})
    picked = [rows[i]["id"] for i in event.selection.rows] if event else []
    st.caption("Select one run to open, annotate, report or delete it; two or more to compare them side by side.")
if picked:
    ss["history_compare"] = None          # a selection in the table replaces an opened ?runs= link
picked = picked or list(ss.get("history_compare") or [])

if len(picked) == 1:
    run = h.get(picked[0])
    st.subheader(f"Run {run['id']}: {run['model']['filename']} {run.get('cell') or ''}", divider="gray")
    a = st.columns([1, 1, 1, 1, 3], vertical_alignment="bottom")
    a[0].metric("Verdict", tables.VERDICT_TEXT.get(run["verdict"], run["verdict"]).upper())
    with a[1]:
        runs.copy_link(run["id"], key="hist_link")
    if a[2].button("Open on Compare", key="hist_open", icon=":material/compare_arrows:", disabled=not run["reports"]):
        runs.open_run(run)
        st.switch_page(state.PAGES["compare"])
    with a[3]:
        runs.report_download([run["id"]], key="hist_report")
    reviews.show(run, key="hist")
    reviews.note(run, key="hist")
    st.caption(f"Samples: {run['samples']['description']} ({run['samples']['count']}) · "
               + " · ".join(f"{k} {v}" for k, v in run["versions"].items()) + f" · {run['host_cpu']}")
    for cell, fail in (run.get("failed_cells") or {}).items():
        st.caption(f"{cell}: {fail['message']}")
    from pages import device_panel
    if run["kind"] == "device":
        st.caption(f"Ran on a visitor's device; the cell's run is {run.get('parent_run') or 'not recorded'}.")
        device_panel.show_result((run.get("extra") or {}).get("device") or {}, None, where="on that device")
    elif run.get("devices"):
        head = next((r for r in run["reports"] if r.get("cell") == run.get("cell")), run["reports"][0] if run["reports"] else {})
        device_panel.devices_table(run["id"], head)
elif len(picked) > 1:
    chosen = [r for r in (h.get(i) for i in picked) if r]
    st.subheader(f"{len(chosen)} runs side by side", divider="gray")
    labels, lines = report_html.side_by_side(chosen)
    table = []
    for name, vals, spec in lines:
        row = {"": name}
        for i, (label, v) in enumerate(zip(labels, vals)):
            text = ("—" if v is None else str(v)) if spec is None else tables.number(v, spec)
            d = report_html.delta(v, vals[0]) if i and spec else None
            row[label] = text + (f" ({'+' if d >= 0 else ''}{tables.number(d, spec)})" if d is not None else "")
        table.append(row)
    st.dataframe(pd.DataFrame(table), hide_index=True)
    st.caption("Deltas in brackets are against the first run.")
    b = st.columns([1, 1, 4], vertical_alignment="bottom")
    with b[0]:
        runs.copy_link([r["id"] for r in chosen], key="hist_link_many")
    with b[1]:
        runs.report_download([r["id"] for r in chosen], key="hist_report_many")
    overlays = report_html.overlaid_per_sample(chosen)
    if not overlays:
        st.info("These runs used different samples, so their output charts are not overlaid.", icon=":material/info:")
    cols = st.columns(2)
    by = {name: vals for name, vals, _ in lines}
    figures = [charts.runs_scatter_figure(ref, cands, name) for name, (ref, cands)
               in report_html.overlaid_outputs(chosen).items()]
    figures += [charts.runs_per_sample_figure(series, name) for name, series in overlays.items()]
    figures += [charts.runs_bar_figure(dict(zip(labels, by["TFLite bytes"])), "TFLite size", "bytes"),
                charts.runs_bar_figure(dict(zip(labels, by["latency median (ms)"])), "Latency (median)", "ms")]
    for i, fig in enumerate(figures):
        cols[i % 2].plotly_chart(fig, key=f"hist_chart_{i}")

# Delete is offered only for runs this user may change; the history refuses the others anyway.
mine = picked and all(can_change(who, Person.from_json(r["author"]) if r else None) for r in h.runs_by_id(picked))
# A confirmation already in the session is shown as it is: the history decides (and refuses a forged one).
if mine or (picked and ss.get("hist_confirm") == picked):
    if ss.get("hist_confirm") != picked:
        if st.button(f"Delete {len(picked)} run{'s' if len(picked) > 1 else ''}…", key="hist_delete",
                     icon=":material/delete:"):
            ss["hist_confirm"] = picked
            st.rerun()
    else:
        st.warning(f"Delete {', '.join(picked)}? They go to the trash; an admin can restore them.",
                   icon=":material/warning:")
        y, n, _ = st.columns([1, 1, 4])
        if y.button("Yes, delete", type="primary", key="hist_delete_yes"):
            ss["hist_confirm"] = None
            if reviews.write(lambda hh: [hh.delete(i, actor=who) for i in picked]):
                ss["history_compare"] = None
                ss["hist_deleted"] = f"Moved {len(picked)} run(s) to the trash."
                st.rerun()
        if n.button("Cancel", key="hist_delete_no"):
            ss["hist_confirm"] = None
            st.rerun()
if ss.get("hist_deleted"):
    st.success(ss.pop("hist_deleted"), icon=":material/delete:")
if who.admin:
    trash.show(h, who)
h.close()
