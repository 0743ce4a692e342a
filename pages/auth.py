"""Sign-in on the pages: Streamlit's ``st.login`` (OpenID Connect, configured in ``[auth]`` of
.streamlit/secrets.toml), who is acting, and the sign-in gate of TFLITE_LAB_REQUIRE_LOGIN=1.

Without an ``[auth]`` section the dashboard is one user's on their own machine: they act as the
database owner (an admin), as the CLI does.
"""
from __future__ import annotations

import sys

import streamlit as st

from tflite_lab import people


def auth_section() -> dict | None:
    """``[auth]`` of the secrets, None when sign-in is not configured (or the secrets cannot be read:
    ``gate`` stops every page then)."""
    return _read_secrets()[0]


def _read_secrets() -> tuple[dict | None, str | None]:
    """([auth] or None, why the secrets cannot be read or None)."""
    try:
        return (dict(st.secrets["auth"]) if "auth" in st.secrets else None), None
    except FileNotFoundError as e:      # Streamlit's StreamlitSecretNotFoundError: no file, or one it cannot parse
        if str(e).startswith("No secrets found"):
            return None, None
        return None, " ".join(str(e).split())


def person() -> people.Person | None:
    """The signed-in user (email, name, subject, groups from the claims; never a token)."""
    if auth_section() is None:
        return None
    return people.Person.from_claims(st.user)


def actor() -> people.Actor:
    """Who acts in this session: the signed-in user (admin by TFLITE_LAB_ADMINS or group), an anonymous
    visitor, or without sign-in configured the database owner."""
    if auth_section() is None:
        return people.owner()
    return people.signed_in(person())


def author() -> people.Person:
    """Who a run made in this session is recorded as (``people.ANONYMOUS`` when nobody signed in)."""
    return actor().person or people.ANONYMOUS


_WARNED: set[str] = set()


def gate() -> None:
    """Stop the script with one line when sign-in is misconfigured, and show only the sign-in page to an
    anonymous visitor when TFLITE_LAB_REQUIRE_LOGIN=1 (every page and ``?run=`` link goes through here)."""
    section, unreadable = _read_secrets()
    problem = _problem(section, unreadable)
    if problem:
        if problem not in _WARNED:          # once per server process, on its log: one line, no traceback
            _WARNED.add(problem)
            print(f"error: {problem}", file=sys.stderr)
        _only(lambda: st.error(problem, icon=":material/lock:"), "Sign-in misconfigured")
    if section is not None and people.login_required() and not st.user.is_logged_in:
        _only(lambda: _sign_in_page(section), "Sign in")


def _problem(section: dict | None, unreadable: str | None) -> str | None:
    if unreadable:      # it may hold an [auth]: fail closed rather than serve without sign-in
        return f"The secrets cannot be read ({unreadable}); fix the file."
    if section is not None:
        return people.auth_config_problem(section)
    if people.login_required():
        return ("TFLITE_LAB_REQUIRE_LOGIN=1 but .streamlit/secrets.toml has no [auth] section: configure sign-in "
                "(see the README's Sign-in section) or unset it.")
    return None


def _only(page, title: str) -> None:
    """Run just this page and stop, whatever the URL: every page's path (a bookmarked /history, a
    permalink) shows this one, so nothing else (nor the pages/ folder, which Streamlit lists when no
    navigation runs) is reachable and no "Page not found" greets a visitor who has not signed in."""
    from pages.state import PAGES
    paths = ["signin", *PAGES]
    st.navigation([st.Page(page, title=title, url_path=path, default=i == 0) for i, path in enumerate(paths)],
                  position="hidden").run()
    st.stop()


def _sign_in_page(section: dict) -> None:
    st.title("TFLite Lab")
    st.info("Sign in with your organisation's account to see the runs and convert models.", icon=":material/lock:")
    login_buttons(section, key="gate")


def login_buttons(section: dict, key: str) -> None:
    providers = [k for k, v in section.items() if hasattr(v, "keys")]
    for name in providers or [None]:
        label = "Log in" if name is None else f"Log in with {name}"
        if st.button(label, key=f"{key}_login_{name or ''}", icon=":material/login:", type="primary"):
            st.login(name) if name else st.login()


def sidebar() -> None:
    """Who is signed in, and Log in / Log out (nothing without sign-in configured)."""
    section = auth_section()
    if section is None:
        return
    p = person()
    if p is None:
        st.caption("Not signed in: you can look, but reviews and changes need an account.")
        login_buttons(section, key="sidebar")
        return
    who = actor()
    st.markdown(f"Signed in as **{md_text(p.name or p.email)}**"
                + (f"  \n{md_text(p.email)}" if p.name and p.email else "")
                + ("  \n:material/shield_person: admin" if who.admin else ""))
    if st.button("Log out", key="sidebar_logout", icon=":material/logout:"):
        st.logout()


def md_text(text: str) -> str:
    """User-given text (a name, an email) inside markdown, shown as typed: its markdown characters escaped."""
    return "".join("\\" + ch if ch in "\\`*_{}[]()#+-.!<>|~$:" else ch for ch in str(text))
