"""Teams in Chromium: sign-in through a real OpenID Connect provider (oidc-provider-mock on 127.0.0.1),
TFLITE_LAB_REQUIRE_LOGIN=1, two colleagues and an admin, a run's author, reviews, refused changes and the
trash; authors and reviews survive a server restart. Its own server, history and store."""
from __future__ import annotations

import json
import re
import threading
import urllib.request

import pytest
from e2e_helpers import ARTIFACTS, ROOT, click_until, free_port, start_server, stop_server, wait_healthy
from playwright.sync_api import expect

from lab_helpers import run_cli

pytestmark = pytest.mark.e2e
LOAD_MS = 60_000
USERS = {"ana": ("ana@example.org", "Ana Lima"), "bob": ("bob@example.org", "Bob Stone"),
         "root": ("root@example.org", "Root Admin")}


@pytest.fixture(scope="module")
def provider():
    """oidc-provider-mock on loopback with the three users (claims put in through its HTTP API)."""
    import oidc_provider_mock
    import werkzeug.serving
    server = werkzeug.serving.make_server("127.0.0.1", 0, oidc_provider_mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    for sub, (email, name) in USERS.items():
        req = urllib.request.Request(f"{url}/users/{sub}", method="PUT", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"email": email, "name": name, "email_verified": True}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 204
    try:
        yield url
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def lab(provider, tmp_path_factory):
    """What the server and the CLI share (its own history and store), and the server's start/stop."""
    d = tmp_path_factory.mktemp("teams")
    port = free_port()
    secrets = d / "secrets.toml"
    secrets.write_text(f'''[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "{"k" * 48}"
client_id = "tflite-lab"
client_secret = "not-so-secret"
server_metadata_url = "{provider}/.well-known/openid-configuration"
''')
    env = {"TFLITE_LAB_HOME": str(d / "home"), "TFLITE_LAB_CACHE": str(d / "home" / "store"),
           "TFLITE_LAB_REQUIRE_LOGIN": "1", "TFLITE_LAB_ADMINS": "root@example.org",
           "STREAMLIT_SECRETS_FILES": str(secrets)}
    state = {"env": env, "url": f"http://127.0.0.1:{port}", "proc": None, "starts": 0}

    def start():
        state["starts"] += 1
        state["proc"] = start_server(port, ARTIFACTS / f"teams-server-{state['starts']}.log", env=env)
        wait_healthy(state["url"], state["proc"])

    def stop():
        stop_server(state["proc"])
    ARTIFACTS.mkdir(exist_ok=True)
    start()
    state["start"], state["stop"] = start, stop
    try:
        yield state
    finally:
        stop()


def signed_in(browser, lab, user: str):
    """A fresh browser session signed in as ``user`` through the provider's authorize form."""
    context = browser.new_context(viewport={"width": 1440, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(LOAD_MS)
    page.goto(lab["url"])
    page.get_by_role("button", name="Log in").click()
    page.locator("input[name=sub]").fill(user)
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_text(f"Signed in as {USERS[user][1]}")).to_be_visible(timeout=LOAD_MS)
    return context, page


def history_json(lab, *args):
    p = run_cli("history", *args, env=lab["env"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def ana_run(lab) -> str:
    """Ana's run, made with the CLI into the history and store the server uses."""
    p = run_cli("convert", ROOT / "sample_models" / "digits_cnn.keras", "--num-samples", 8, "--no-latency",
                "--optimize", "dynamic", "--json", "--author", "Ana Lima <ana@example.org>", env=lab["env"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)["run_id"]


def test_teams_sign_in_author_review_permissions_trash_and_restart(browser, lab, ana_run):
    run_id = ana_run
    tflite = history_json(lab, "show", run_id, "--json")["artifacts"]["tflite"][0]
    assert history_json(lab, "--json")["runs"][0]["author"] == {"email": "ana@example.org", "name": "Ana Lima",
                                                                 "subject": ""}

    # Anonymous: only the sign-in page, whatever the link.
    context = browser.new_context()
    anon = context.new_page()
    for path in ("/", "/history", f"/?run={run_id}", f"/?runs={run_id}"):
        anon.goto(lab["url"] + path)
        expect(anon.get_by_text("Sign in with your organisation's account")).to_be_visible(timeout=LOAD_MS)
        expect(anon.get_by_role("heading", name="Compare")).to_have_count(0)
        assert run_id not in anon.content() and "History" not in anon.locator("body").inner_text()
        expect(anon.get_by_text("Page not found")).to_have_count(0)     # a bookmarked /history: no error first
    anon.screenshot(path=str(ARTIFACTS / "teams-anonymous.png"))
    context.close()

    # Ana: her run on Compare and History says she made it; she may edit its note.
    context, ana = signed_in(browser, lab, "ana")
    ana.goto(f"{lab['url']}/?run={run_id}")
    expect(ana.get_by_role("heading", name="Compare", exact=True).first).to_be_visible(timeout=LOAD_MS)
    expect(ana.get_by_text("By Ana Lima (ana@example.org)")).to_be_visible(timeout=LOAD_MS)
    ana.goto(f"{lab['url']}/?runs={run_id}")
    expect(ana.get_by_text("By Ana Lima (ana@example.org)")).to_be_visible(timeout=LOAD_MS)
    expect(ana.get_by_role("button", name="Save note")).to_be_visible(timeout=LOAD_MS)
    expect(ana.get_by_role("button", name="Delete 1 run…")).to_be_visible(timeout=LOAD_MS)
    context.close()

    # Bob: may review, may not delete or edit the note (no control), and the admin-only trash is not there.
    context, bob = signed_in(browser, lab, "bob")
    bob.goto(f"{lab['url']}/?runs={run_id}")
    expect(bob.get_by_text("By Ana Lima (ana@example.org)")).to_be_visible(timeout=LOAD_MS)
    expect(bob.get_by_role("button", name="Add review")).to_be_visible()
    for control in ("Save note", "Delete 1 run…"):
        expect(bob.get_by_role("button", name=control)).to_have_count(0)
    expect(bob.get_by_text("Trash (")).to_have_count(0)
    bob.get_by_label("Comment").fill("<b>int8</b> next, please")
    bob.get_by_role("button", name="Add review").click()
    expect(bob.get_by_text("approved by Bob Stone (bob@example.org)")).to_be_visible(timeout=LOAD_MS)
    expect(bob.get_by_text("<b>int8</b> next, please")).to_be_visible()        # shown as text, not markup
    bob.screenshot(path=str(ARTIFACTS / "teams-colleague.png"))
    context.close()
    reviews = history_json(lab, "show", run_id, "--json")["reviews"]
    assert [(r["verdict"], r["author"]["email"], r["text"]) for r in reviews] == [
        ("approved", "bob@example.org", "<b>int8</b> next, please")]

    # The admin deletes it (to the trash: files kept), then restores it with its files.
    context, root = signed_in(browser, lab, "root")
    root.goto(f"{lab['url']}/?runs={run_id}")
    yes = root.get_by_role("button", name="Yes, delete")
    click_until(root, root.get_by_role("button", name="Delete 1 run…"), yes)
    click_until(root, yes, root.get_by_text("Moved 1 run(s) to the trash"))
    assert [r["id"] for r in history_json(lab, "trash", "--json")["runs"]] == [run_id]
    assert __import__("os").path.exists(tflite)
    click_until(root, root.get_by_text("Trash (1 run)"), root.get_by_text("Runs to restore"))
    restore = root.get_by_role("button", name="Restore")
    # its pill under "Runs to restore": Restore is enabled once the pick has reached the server
    click_until(root, root.get_by_role("button", name=run_id, exact=True), restore.and_(root.locator(":enabled")))
    restore.click()
    expect(root.get_by_text(f"Restored {run_id}.")).to_be_visible(timeout=LOAD_MS)
    root.screenshot(path=str(ARTIFACTS / "teams-admin.png"))
    context.close()
    assert history_json(lab, "trash", "--json")["total"] == 0 and __import__("os").path.exists(tflite)

    # After a restart, author and review are still there.
    lab["stop"]()
    lab["start"]()
    context, bob = signed_in(browser, lab, "bob")
    bob.goto(f"{lab['url']}/?runs={run_id}")
    expect(bob.get_by_text("By Ana Lima (ana@example.org)")).to_be_visible(timeout=LOAD_MS)
    expect(bob.get_by_text("approved by Bob Stone (bob@example.org)")).to_be_visible()
    context.close()


def test_forged_clicks_on_controls_bob_does_not_have_change_nothing(browser, lab, ana_run):
    """Bob's browser adds clicks to its own rerun message (the websocket, rewritten on the way out): on Add
    review, which he has (so the forgery reaches the server), and on Delete, Yes, delete and Save note,
    which he has not. Only the review is written; the run stays with its note."""
    from streamlit.elements.lib.utils import _compute_element_id      # the id Streamlit gives a keyed widget
    from streamlit.proto.BackMsg_pb2 import BackMsg
    forged: list[tuple[str, str]] = []

    def route(ws):
        server = ws.connect_to_server()

        def to_server(message):
            if forged and isinstance(message, bytes):
                msg = BackMsg()
                msg.ParseFromString(message)
                if msg.WhichOneof("type") == "rerun_script":
                    state = msg.rerun_script
                    for kind, key in forged:
                        w = state.widget_states.widgets.add()
                        w.id = _compute_element_id(kind, key, active_script_hash=state.page_script_hash)
                        w.trigger_value = True
                    forged.clear()
                    message = msg.SerializeToString()
            server.send(message)
        ws.on_message(to_server)
        server.on_message(lambda m: ws.send(m))

    if ana_run in [r["id"] for r in history_json(lab, "trash", "--json")["runs"]]:
        assert run_cli("history", "restore", ana_run, env=lab["env"]).returncode == 0   # the test above stopped midway
    before = history_json(lab, "show", ana_run, "--json")
    context, bob = signed_in(browser, lab, "bob")
    bob.route_web_socket(re.compile(r".*/_stcore/stream$"), route)
    bob.goto(f"{lab['url']}/?runs={ana_run}")
    expect(bob.get_by_text("By Ana Lima (ana@example.org)")).to_be_visible(timeout=LOAD_MS)
    forged += [("form_submit_button", "FormSubmitter:hist_review-Add review"), ("button", "hist_delete"),
               ("button", "hist_delete_yes"), ("form_submit_button", "FormSubmitter:hist_edit-Save note")]
    bob.get_by_text("Descending").click()             # any rerun carries the forged clicks
    expect(bob.get_by_text("approved by Bob Stone (bob@example.org)")).to_have_count(len(before["reviews"]) + 1,
                                                                                      timeout=LOAD_MS)
    context.close()
    after = history_json(lab, "show", ana_run, "--json")
    assert len(after["reviews"]) == len(before["reviews"]) + 1          # the forgery did reach the server
    assert after["note"] == before["note"] and history_json(lab, "trash", "--json")["total"] == 0
