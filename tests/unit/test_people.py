"""Teams in the run history: authors, reviews, the permission rule and the trash, on hand-made runs
(no conversion); the migration of a history from schema 4 (reviewer tags) keeps every run."""
from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from lab_helpers import fake_run

from tflite_lab import people
from tflite_lab.history import BEFORE_SIGN_IN, SCHEMA_VERSION, History, RunFilter
from tflite_lab.people import Actor, PermissionDenied, Person

ANA = Person("ana@example.org", "Ana", "sub-ana")
BOB = Person("bob@example.org", "Bob", "sub-bob")
ADMIN = Person("root@example.org", "Root", "sub-root")


@pytest.fixture(autouse=True)
def admins(monkeypatch):
    monkeypatch.setenv("TFLITE_LAB_ADMINS", " Root@example.org ,other@example.org")
    monkeypatch.setenv("TFLITE_LAB_ADMIN_GROUPS", "lab-admins")


@pytest.fixture
def h(tmp_path):
    with History(tmp_path / "h.sqlite") as hist:
        yield hist


def test_claims_become_a_person_without_tokens_and_admins_by_email_or_group():
    claims = {"is_logged_in": True, "email": "ana@example.org", "name": "Ana", "sub": "sub-ana",
              "access_token": "secret-token", "id_token": "eyJ.secret", "groups": ["staff"]}
    p = Person.from_claims(claims)
    assert p == ANA and p.groups == ("staff",)
    assert "secret" not in json.dumps(p.to_json())
    assert Person.from_claims({"is_logged_in": False}) is None
    assert not people.signed_in(p).admin
    assert people.signed_in(Person("ROOT@example.org", "R", "x")).admin
    assert people.signed_in(Person.from_claims({"is_logged_in": True, "sub": "c", "roles": "lab-admins"})).admin
    assert people.signed_in(None) == Actor(None)


def test_cli_author_from_flag_env_or_os_user(monkeypatch):
    assert people.cli_person("Ana@Example.org") == Person("ana@example.org", "Ana@Example.org", "")
    assert people.cli_person("Ana Lima <Ana@Example.org>") == Person("ana@example.org", "Ana Lima", "")
    monkeypatch.setenv("TFLITE_LAB_AUTHOR", "ci-bot")
    assert people.cli_person() == Person("", "ci-bot", "")
    monkeypatch.delenv("TFLITE_LAB_AUTHOR")
    assert people.cli_person().subject.startswith("os:") and people.owner().admin


def test_only_author_or_admin_changes_a_run_and_refusals_are_logged(h, caplog):
    run = h.record(fake_run("first", ANA))
    ana, bob, admin = (people.signed_in(p) for p in (ANA, BOB, ADMIN))
    assert h.get(run)["author"] == ANA.to_json()
    caplog.set_level(logging.WARNING, "tflite_lab.people")
    with pytest.raises(PermissionDenied, match="Only Ana or an admin can change run"):
        h.update(run, actor=bob, note="forged")
    with pytest.raises(PermissionDenied):
        h.delete(run, actor=bob)
    with pytest.raises(PermissionDenied, match="Sign in"):
        h.update(run, actor=Actor(None), note="anon")
    assert "refused: bob@example.org" in caplog.text
    assert h.get(run)["note"] == "first"                     # nothing written by the refused calls
    # Same person by subject even if the email changed; by email when a side has no subject (the CLI).
    assert h.update(run, actor=people.signed_in(Person("new@example.org", "Ana", "sub-ana")), note="mine")
    assert h.update(run, actor=Actor(Person("ana@example.org", "Ana", "")), note="from cli")
    assert h.update(run, actor=admin, note="admin") and h.get(run)["note"] == "admin"
    assert h.update("nosuchid", actor=admin, note="x") is False
    anon = h.record(fake_run("anonymous", people.ANONYMOUS))  # nobody's: no email, no subject
    assert h.get(anon)["author"]["name"] == "anonymous visitor"
    with pytest.raises(PermissionDenied):
        h.update(anon, actor=people.signed_in(Person("", "anonymous visitor", "")), note="x")
    old = h.record(fake_run("before sign-in"))                # no author: only admins may change it
    with pytest.raises(PermissionDenied, match="Only an admin"):
        h.update(old, actor=ana, note="x")


def test_reviews_in_order_filters_and_their_own_permissions(h):
    a, b, c = (h.record(fake_run(author=p)) for p in (ANA, BOB, None))
    ana, bob, admin = (people.signed_in(p) for p in (ANA, BOB, ADMIN))
    first = h.add_review(a, actor=bob, verdict="changes requested", text="int8 <b>please</b>")
    h.add_review(a, actor=bob, verdict="approved", text="now fine")
    h.add_review(b, actor=ana, verdict="comment", text="looks odd")
    with pytest.raises(PermissionDenied, match="Sign in to review"):
        h.add_review(a, actor=Actor(None), verdict="approved")
    with pytest.raises(Exception, match="Unknown review verdict"):
        h.add_review(a, actor=ana, verdict="lgtm")
    got = h.get(a)["reviews"]
    assert [r["verdict"] for r in got] == ["changes requested", "approved"] and got[0]["author"] == BOB.to_json()
    assert got[0]["text"] == "int8 <b>please</b>"
    ids = lambda flt: {r["id"] for r in h.runs(flt)}  # noqa: E731
    assert ids(RunFilter(review="awaiting review")) == {b, c}
    assert ids(RunFilter(review="approved")) == {a}
    assert ids(RunFilter(review="approved by me", me=BOB)) == {a}
    assert ids(RunFilter(review="approved by me", me=ANA)) == set()
    assert ids(RunFilter(author="ana@example.org")) == {a} and ids(RunFilter(author=BEFORE_SIGN_IN)) == {c}
    assert ids(RunFilter(search="looks ODD")) == {b} and ids(RunFilter(search="Bob")) == {a, b}    # his run, his reviews
    assert h.authors() == ["ana@example.org", "bob@example.org", BEFORE_SIGN_IN]
    with pytest.raises(PermissionDenied):
        h.update_review(first, actor=ana, verdict="approved", text="forged")
    assert h.update_review(first, actor=bob, verdict="comment", text="int8 <b>please</b> (edited)")
    assert h.reviews(a)[0]["verdict"] == "comment" and h.reviews(a)[0]["text"].endswith("(edited)")
    assert h.update_review(first, actor=admin, verdict="changes requested", text="int8 <b>please</b>")
    with pytest.raises(PermissionDenied):
        h.delete_review(first, actor=ana)
    assert h.delete_review(first, actor=bob) and len(h.reviews(a)) == 1
    assert not h.delete_review(first, actor=admin)


def test_trash_keeps_files_until_emptied_and_only_admins_restore(h, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    own, shared = store / "own.tflite", store / "shared.npz"
    for f in (own, shared, own.with_suffix(".json")):
        f.write_bytes(b"x")
    outside = tmp_path / "user.npz"
    outside.write_bytes(b"mine")
    a = h.record(fake_run(author=ANA, artifacts={"tflite": [str(own)], "samples": [str(shared), str(outside)]}))
    b = h.record(fake_run(author=BOB, artifacts={"samples": [str(shared)]}))
    ana, bob, admin = (people.signed_in(p) for p in (ANA, BOB, ADMIN))
    with pytest.raises(PermissionDenied):
        h.delete(a, actor=bob)
    assert h.delete(a, actor=ana)
    assert h.get(a) is None and h.get(a, trash=True)["deleted_by"] == "Ana"
    assert {r["id"] for r in h.runs()} == {b} and [r["id"] for r in h.runs(RunFilter(trash=True))] == [a]
    assert own.exists() and h.runs_by_id([a]) == [None]
    with pytest.raises(PermissionDenied, match="Only an admin can restore"):
        h.restore(a, actor=ana)
    with pytest.raises(PermissionDenied):
        h.empty_trash(actor=ana, store_root=store)
    assert h.restore(a, actor=admin) and h.get(a)["author"] == ANA.to_json() and own.exists()
    assert not h.restore(a, actor=admin)                      # not in the trash any more
    h.add_review(a, actor=bob, verdict="approved")
    assert h.delete(a, actor=admin)
    purged, removed = h.empty_trash(actor=admin, store_root=store)
    assert purged == [a] and sorted(removed) == sorted([str(own), str(own.with_suffix(".json"))])
    assert shared.exists() and outside.exists()               # used by b; outside the store
    assert h.get(a, trash=True) is None and h.db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0] == 0


def test_migration_from_schema_4_keeps_runs_and_turns_tags_into_reviews(tmp_path):
    path = tmp_path / "v4.sqlite"
    History(path, schema_version=4).close()
    ids = [f"v4run{i:03d}" for i in range(12)]
    tags = {ids[2]: "ana", ids[5]: "Bob B."}
    created = {run_id: 1_700_000_000.0 + i for i, run_id in enumerate(ids)}
    with sqlite3.connect(path) as c:           # rows as schema 4 wrote them, reviewer tags included
        for i, run_id in enumerate(ids):
            c.execute("INSERT INTO runs (id, created_at, kind, origin, model_name, model_sha256, route, recipe, "
                      "verdict, summary, note, reviewer, parent_run) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      (run_id, created[run_id], "convert", "cli", "m.keras", "ab" * 32, "saved_model", "none", "pass",
                       "{}", f"note {i}", tags.get(run_id, ""), None))
            c.execute("INSERT INTO run_data VALUES (?, ?)", (run_id, json.dumps({"samples": {}, "model": {}})))
            c.execute("INSERT INTO run_reports VALUES (?, 0, 'saved_model-none', ?)",
                      (run_id, json.dumps({"cell": "saved_model-none"})))
    with History(path) as h:
        assert h.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert "reviewer" not in {r[1] for r in h.db.execute("PRAGMA table_info(runs)")}
        assert h.count() == 12
        for i, run_id in enumerate(ids):
            got = h.get(run_id)
            assert got["note"] == f"note {i}" and got["author"] is None and got["reports"][0]["cell"] == "saved_model-none"
        tagged = h.get(ids[2])["reviews"]
        assert [(r["author"], r["verdict"], r["created_at"]) for r in tagged] == [
            ({"email": "", "name": "ana", "subject": ""}, "comment", created[ids[2]])]
        assert h.get(ids[5])["reviews"][0]["author"]["name"] == "Bob B." and h.get(ids[0])["reviews"] == []
        assert {r["id"] for r in h.runs(RunFilter(search="bob b."))} == {ids[5]}
        assert h.count(RunFilter(author=BEFORE_SIGN_IN)) == 12
        assert h.update(ids[2], actor=people.owner(), note="edited after migration")


def test_report_shows_author_and_reviews_escaped(h):
    from tflite_lab.report_html import render_report
    evil = Person("eve@example.org", "Eve <script>alert(1)</script>", "sub-eve")
    a = h.record(fake_run("n", evil, failed_cells={"saved_model-none": {"message": "x", "kind": "ConversionError"}},
                          reports=[]))
    h.add_review(a, actor=people.signed_in(BOB), verdict="changes requested", text="<img src=x onerror=alert(2)>")
    b = h.record(fake_run("other", ANA, reports=[]))
    html = render_report([h.get(a), h.get(b)])
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "Eve &lt;script&gt;alert(1)&lt;/script&gt; (eve@example.org)" in html
    assert "changes requested</b> by Bob (bob@example.org)" in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "changes requested by Bob (bob@example.org)" in html and "awaiting review" in html   # side by side


def test_auth_config_problems_are_one_line_each(monkeypatch):
    good = {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "x" * 32, "client_id": "c",
            "client_secret": "s", "server_metadata_url": "https://idp/.well-known/openid-configuration"}
    assert people.auth_config_problem(good) is None
    assert "cookie_secret is missing" in people.auth_config_problem({**good, "cookie_secret": ""})
    assert "must be this app's address ending in /oauth2callback" in people.auth_config_problem(
        {**good, "redirect_uri": "http://localhost:8501/"})
    assert "[auth] in .streamlit/secrets.toml lacks client_secret" in people.auth_config_problem(
        {k: v for k, v in good.items() if k != "client_secret"})
    providers = {"redirect_uri": good["redirect_uri"], "cookie_secret": good["cookie_secret"],
                 "google": {"client_id": "c", "client_secret": "s", "server_metadata_url": "u"},
                 "keycloak": {"client_id": "c", "client_secret": "s"}}
    assert "[auth.keycloak] in .streamlit/secrets.toml lacks server_metadata_url" in people.auth_config_problem(providers)
    for bad in ({**good, "cookie_secret": ""}, {**good, "redirect_uri": ""}):
        assert "\n" not in people.auth_config_problem(bad)
    monkeypatch.setenv("TFLITE_LAB_REQUIRE_LOGIN", "1")
    assert people.login_required()
    monkeypatch.setenv("TFLITE_LAB_REQUIRE_LOGIN", "0")
    assert not people.login_required()


def test_start_up_check_reads_secrets_files(tmp_path, monkeypatch, capsys):
    from tflite_lab import auth_check
    monkeypatch.delenv("TFLITE_LAB_REQUIRE_LOGIN", raising=False)
    assert auth_check.main([str(tmp_path / "none.toml")]) == 0            # no file, no [auth]: sign-in off
    monkeypatch.setenv("TFLITE_LAB_REQUIRE_LOGIN", "1")
    assert auth_check.main([str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.startswith("error: TFLITE_LAB_REQUIRE_LOGIN=1 but no secrets.toml")
    base, local = tmp_path / "home.toml", tmp_path / "local.toml"
    base.write_text('[auth]\nredirect_uri = "http://h/oauth2callback"\nclient_id = "c"\nclient_secret = "s"\n'
                    'server_metadata_url = "u"\n')
    assert auth_check.main([str(base)]) == 2
    err = capsys.readouterr().err
    assert "cookie_secret is missing" in err and len(err.strip().splitlines()) == 1
    local.write_text(base.read_text() + f'cookie_secret = "{"z" * 40}"\n')
    assert auth_check.main([str(base), str(local)]) == 0
    assert auth_check.main([str(local), str(base)]) == 2                 # the later [auth] replaces the earlier whole
    local.write_text("[auth\n")
    assert auth_check.main([str(base), str(local)]) == 2 and "cannot be read as TOML" in capsys.readouterr().err
