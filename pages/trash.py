"""The trash on the History page (admins only): deleted runs, restored with their files or deleted for good."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from pages import reviews
from tflite_lab.history import RunFilter
from tflite_lab.people import author_label


def show(h, who) -> None:
    rows = h.runs(RunFilter(trash=True), limit=1000)
    # Keyed: its label counts the runs, and a message above it comes and goes; it stays open through both.
    with st.expander(f"Trash ({len(rows)} run{'s' if len(rows) != 1 else ''})", icon=":material/delete:",
                     key="hist_trash"):
        if not rows:
            st.caption("Deleted runs land here with their files; restore them or empty the trash.")
            return
        frame = pd.DataFrame([{"run": r["id"], "model": r["model_name"], "author": author_label(r["author"]),
                               "deleted": dt.datetime.fromtimestamp(r["deleted_at"]).strftime("%Y-%m-%d %H:%M"),
                               "by": r["deleted_by"]} for r in rows])
        st.dataframe(frame, hide_index=True, key="trash_table")
        picked = st.pills("Runs to restore", [r["id"] for r in rows], selection_mode="multi", key="trash_pick") or []
        a, b, _ = st.columns([1, 1, 3])
        if a.button("Restore", key="trash_restore", icon=":material/restore_from_trash:", disabled=not picked):
            if reviews.write(lambda hh: [hh.restore(i, actor=who) for i in picked]):
                st.session_state["hist_deleted"] = f"Restored {', '.join(picked)}."
                st.rerun()
        if b.button("Empty trash", key="trash_empty", icon=":material/delete_forever:"):
            st.session_state["trash_confirm"] = True
        if st.session_state.get("trash_confirm"):
            st.warning(f"Delete {len(rows)} run(s) for good, with the store files no other run uses?",
                       icon=":material/warning:")
            if st.button("Yes, empty the trash", type="primary", key="trash_empty_yes"):
                st.session_state["trash_confirm"] = False
                out = {}
                if reviews.write(lambda hh: out.update(done=hh.empty_trash(actor=who))):
                    ids, removed = out["done"]
                    st.session_state["hist_deleted"] = (f"Deleted {len(ids)} run(s) for good and {len(removed)} "
                                                        "store file(s) no other run used.")
                    st.rerun()
