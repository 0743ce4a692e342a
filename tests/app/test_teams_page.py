"""Sign-in on the pages (AppTest with [auth] secrets and a seeded st.user): the gate, who may change what
on History, and a forged delete confirmation refused by the history, not only by the hidden button."""
from __future__ import annotations

import logging

import pytest
from apptest_helpers import APP, assert_clean, go
from lab_helpers import fake_run
from streamlit.testing.v1 import AppTest

from tflite_lab.history import History, RunFilter
from tflite_lab.people import Person

AUTH = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "c" * 40, "client_id": "lab",
        "client_secret": "s", "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration"}
ANA = {"is_logged_in": True, "email": "ana@example.org", "name": "Ana", "sub": "sub-ana"}
BOB = {"is_logged_in": True, "email": "bob@example.org", "name": "Bob", "sub": "sub-bob"}
ROOT = {"is_logged_in": True, "email": "root@example.org", "name": "Root", "sub": "sub-root"}


@pytest.fixture(autouse=True)
def admins(monkeypatch):
    monkeypatch.setenv("TFLITE_LAB_ADMINS", "root@example.org")


def app_as(user: dict | None, auth: dict | None = None, **params) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.secrets["auth"] = AUTH if auth is None else auth
    at.user = user if user is not None else {"is_logged_in": False}
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


@pytest.fixture
def ana_run():
    with History() as h:
        return h.record(fake_run("ana's note", Person("ana@example.org", "Ana", "sub-ana")))


def _show(at: AppTest, run_id: str) -> AppTest:
    go(at, "history")
    at.session_state["history_compare"] = [run_id]
    return at.run()


def test_require_login_shows_only_the_sign_in_page(monkeypatch, ana_run):
    monkeypatch.setenv("TFLITE_LAB_REQUIRE_LOGIN", "1")
    anon = app_as(None, run=ana_run)
    assert_clean(anon)
    assert [t.value for t in anon.title] == ["TFLite Lab"] and anon.button(key="gate_login_").label == "Log in"
    assert "lab_reports" not in anon.session_state or not anon.session_state["lab_reports"]
    assert not anon.dataframe and ana_run not in str([c.value for c in anon.code])
    signed = app_as(ANA)
    assert_clean(signed)
    assert "Model" in [t.value for t in signed.title]
    assert any(m.value.startswith("Signed in as **Ana**") for m in signed.sidebar.markdown)


def test_bad_cookie_secret_is_one_clear_line(capsys):
    at = app_as(ANA, auth={**AUTH, "cookie_secret": ""})
    assert [e.value for e in at.error][0].startswith("Sign-in is configured but [auth] cookie_secret is missing")
    assert not at.exception and "Model" not in [t.value for t in at.title]
    short = app_as(ANA, auth={**AUTH, "cookie_secret": "abc"})
    assert "is 3 characters; use at least 32" in short.error[0].value


def test_colleague_reviews_but_cannot_change_and_a_forged_delete_is_refused(ana_run, caplog):
    bob = _show(app_as(BOB), ana_run)
    assert_clean(bob)
    assert any(c.value.startswith("By **Ana \\(ana@example\\.org\\)**") for c in bob.caption)
    assert not [b for b in bob.button if b.key in ("hist_delete", "FormSubmitter:hist_edit-Save note")]
    assert not [t for t in bob.text_area if t.key == f"hist_note_{ana_run}"]
    bob.selectbox(key="hist_review_verdict").set_value("approved")
    bob.text_input(key="hist_review_text").set_value("<script>x</script> fine")
    bob.button(key="FormSubmitter:hist_review-Add review").click().run()
    assert_clean(bob)
    with History() as h:
        (review,) = h.reviews(ana_run)
        assert review["author"] == {"email": "bob@example.org", "name": "Bob", "subject": "sub-bob"}
        assert h.count(RunFilter(review="approved by me", me=Person("bob@example.org", "Bob", "sub-bob"))) >= 1
    # His own review he may delete; Ana sees it but has no delete for it.
    ana = _show(app_as(ANA), ana_run)
    assert not [b for b in ana.button if b.key == f"hist_review_del_{review['id']}"]
    bob.button(key=f"hist_review_del_{review['id']}")           # there for Bob, and he may edit it
    bob.selectbox(key=f"hist_review_edit_verdict_{review['id']}").set_value("changes requested")
    bob.text_area(key=f"hist_review_edit_text_{review['id']}").set_value("on second thought: int8")
    bob.button(key=f"FormSubmitter:hist_review_edit_form_{review['id']}-Save review").click().run()
    assert_clean(bob)
    with History() as h:
        assert [(r["verdict"], r["text"]) for r in h.reviews(ana_run)] == [
            ("changes requested", "on second thought: int8")]
    assert not [s for s in ana.selectbox if s.key == f"hist_review_edit_verdict_{review['id']}"]
    # A crafted rerun: the confirmation put in the session as if Bob had pressed a Delete he never saw.
    caplog.set_level(logging.WARNING, "tflite_lab.people")
    bob.session_state["hist_confirm"] = [ana_run]
    bob.run()
    bob.button(key="hist_delete_yes").click().run()
    assert any("Only Ana or an admin can change run" in e.value for e in bob.error)
    assert "refused: bob@example.org" in caplog.text
    with History() as h:
        assert h.get(ana_run)["note"] == "ana's note"
    admin = _show(app_as(ROOT), ana_run)
    admin.button(key=f"hist_review_del_{review['id']}").click().run()         # an admin may delete any review
    with History() as h:
        assert h.reviews(ana_run) == []
    assert admin.text_area(key=f"hist_note_{ana_run}").value == "ana's note"
    admin.button(key="hist_delete").click().run()
    admin.button(key="hist_delete_yes").click().run()
    assert_clean(admin)
    with History() as h:
        assert h.get(ana_run) is None and h.get(ana_run, trash=True)["deleted_by"] == "Root"


def test_unreadable_secrets_file_stops_every_page(tmp_path, monkeypatch):
    from streamlit import config
    bad = tmp_path / "secrets.toml"
    bad.write_text('[auth\ncookie_secret = "x"\n')
    before = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(bad)])
    try:
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        assert at.error and at.error[0].value.startswith("The secrets cannot be read (Error parsing secrets file")
        assert not at.exception and "Model" not in [t.value for t in at.title]
    finally:
        config.set_option("secrets.files", before)
