"""A run's people on the pages: its author, its reviews (under the verdict, History and Compare), the review
form, and the note that only its author or an admin may edit. Every write goes through the history,
which checks the permission again right before writing (a forged rerun is refused there)."""
from __future__ import annotations

import datetime as dt

import streamlit as st

from pages import auth, runs
from pages.auth import md_text
from tflite_lab.errors import HistoryError
from tflite_lab.people import REVIEW_VERDICTS, PermissionDenied, Person, author_label, can_change

ICONS = {"approved": ":material/check_circle:", "changes requested": ":material/change_circle:",
         "comment": ":material/chat:"}


def show(run: dict, key: str) -> None:
    """Author, reviews (oldest first) and, for a signed-in user, the review form."""
    st.caption(f"By **{md_text(author_label(run.get('author')))}**"
               + (" (recorded before sign-in)" if not run.get("author") else ""))
    who = auth.actor()
    for r in run.get("reviews") or []:
        when = dt.datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M")
        line, edit, remove = st.columns([12, 1, 1], vertical_alignment="center")
        # Text is shown as text, never markdown: a review is user-given.
        line.markdown(f"{ICONS.get(r['verdict'], '')} **{r['verdict']}** by {md_text(author_label(r.get('author')))}"
                      f" · {when}")
        if r["text"]:
            line.text(r["text"])
        if not can_change(who, Person.from_json(r.get("author"))):
            continue
        if remove.button("", key=f"{key}_review_del_{r['id']}", icon=":material/delete:", type="tertiary",
                         help="Delete this review"):
            if write(lambda h, rid=r["id"]: h.delete_review(rid, actor=who)):
                st.rerun()
        if who.person is not None and auth.auth_section() is not None:
            _edit_form(edit, r, who, key)
    if not run.get("reviews"):
        st.caption("No review yet.")
    if who.person is None or auth.auth_section() is None:
        return
    with st.form(f"{key}_review", clear_on_submit=True):
        c = st.columns([1, 3], vertical_alignment="bottom")
        verdict = c[0].selectbox("Review", REVIEW_VERDICTS, key=f"{key}_review_verdict")
        text = c[1].text_input("Comment", key=f"{key}_review_text", placeholder="what you checked, what to change")
        if st.form_submit_button("Add review", icon=":material/rate_review:"):
            if write(lambda h: h.add_review(run["id"], actor=who, verdict=verdict, text=text)):
                st.rerun()


def _edit_form(where, r: dict, who, key: str) -> None:
    with where.popover("", icon=":material/edit:", key=f"{key}_review_edit_{r['id']}", help="Edit this review"):
        with st.form(f"{key}_review_edit_form_{r['id']}"):
            at = REVIEW_VERDICTS.index(r["verdict"]) if r["verdict"] in REVIEW_VERDICTS else 0
            verdict = st.selectbox("Review", REVIEW_VERDICTS, index=at, key=f"{key}_review_edit_verdict_{r['id']}")
            text = st.text_area("Comment", value=r["text"], key=f"{key}_review_edit_text_{r['id']}")
            if st.form_submit_button("Save review", icon=":material/save:"):
                if write(lambda h: h.update_review(r["id"], actor=who, verdict=verdict, text=text)):
                    st.rerun()


def show_recorded(run_id: str | None, key: str) -> None:
    """``show`` for a run of this session by its id (Compare): nothing when it was not recorded."""
    if not run_id:
        return
    try:
        with runs.history() as h:
            found = h.runs_by_id([run_id])[0]
            if found is None:
                return
            found["reviews"] = h.reviews(run_id)
    except HistoryError:
        return
    show(found, key)


def note(run: dict, key: str) -> None:
    """The note: an edit form for its author or an admin, plain text for everyone else."""
    who = auth.actor()
    if not can_change(who, Person.from_json(run.get("author"))):
        if run["note"]:
            st.text(f"Note: {run['note']}")
        return
    with st.form(f"{key}_edit"):
        text = st.text_area("Note", value=run["note"], key=f"{key}_note_{run['id']}")
        if st.form_submit_button("Save note", icon=":material/save:"):
            if write(lambda h: h.update(run["id"], actor=who, note=text)):
                st.rerun()


def write(change) -> bool:
    """Run one change on the history; a refusal or an unreadable history is shown, not raised."""
    try:
        with runs.history() as h:
            change(h)
        return True
    except PermissionDenied as e:
        st.error(e.user_message, icon=":material/block:")
    except HistoryError as e:
        st.error(e.user_message, icon=":material/error:")
    return False
