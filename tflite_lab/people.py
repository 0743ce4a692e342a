"""People: who made a run or a review, who is an admin, and who may change what.

The dashboard builds a ``Person`` from the identity provider's claims (``st.user``), the CLI from
``--author`` / ``TFLITE_LAB_AUTHOR`` or the OS user. Only the email, name, subject and groups are
ever read from the claims, so an identity provider's tokens can never reach the history or a log.

The rule (``check_change``): a run, its note and a review may be changed or deleted by their author
or an admin; everyone may view and review. The history calls it right before every write, so a
forged request from a page is refused there, not only by hiding a button.
"""
from __future__ import annotations

import getpass
import logging
import os
import re
from dataclasses import dataclass, field

from .errors import TFLiteLabError

_LOG = logging.getLogger("tflite_lab.people")
REVIEW_VERDICTS = ("approved", "changes requested", "comment")
# Claims an identity provider may put groups in (Keycloak and Entra "groups", some "roles").
GROUP_CLAIMS = ("groups", "roles")


class PermissionDenied(TFLiteLabError):
    """Someone tried to change or delete what only its author or an admin may."""


@dataclass(frozen=True)
class Person:
    """An identity as the history stores it (never a token)."""

    email: str = ""
    name: str = ""
    subject: str = ""
    groups: tuple[str, ...] = field(default=(), compare=False)

    @property
    def label(self) -> str:
        return self.name or self.email or self.subject or "unknown"

    def to_json(self) -> dict:
        return {"email": self.email, "name": self.name, "subject": self.subject}

    @staticmethod
    def from_json(d: dict | None) -> "Person | None":
        if not d or not any(d.get(k) for k in ("email", "name", "subject")):
            return None
        return Person(str(d.get("email") or ""), str(d.get("name") or ""), str(d.get("subject") or ""))

    @staticmethod
    def from_claims(claims) -> "Person | None":
        """The signed-in user from OIDC claims (``st.user`` or a dict); None when nobody is signed in."""
        get = claims.get if hasattr(claims, "get") else (lambda k, d=None: d)
        if not get("is_logged_in", bool(get("sub") or get("email"))):
            return None
        groups = []
        for claim in GROUP_CLAIMS:
            value = get(claim)
            groups += [value] if isinstance(value, str) else [str(v) for v in (value or [])]
        return Person(email=str(get("email") or ""), name=str(get("name") or ""), subject=str(get("sub") or ""),
                      groups=tuple(groups))


# Who a run made by a visitor who did not sign in is recorded as: nobody's to change but the admins'
# (no email, no subject), and not mistaken for a run from before sign-in.
ANONYMOUS = Person(name="anonymous visitor")


def cli_person(author: str | None = None) -> Person:
    """The CLI's author: ``--author``, else ``TFLITE_LAB_AUTHOR``, else the OS user.

    ``Name <email>`` (as git writes it) or an email is matched by email to the signed-in user on the
    dashboard, so a colleague's CLI run is theirs to edit there; a bare name is nobody's but the admins'.
    """
    given = (author or os.environ.get("TFLITE_LAB_AUTHOR") or "").strip()
    m = re.fullmatch(r"(.*?)\s*<([^<>\s]+@[^<>\s]+)>", given)
    if m:
        return Person(email=m.group(2).lower(), name=m.group(1).strip() or m.group(2))
    if given:
        return Person(email=given.lower() if "@" in given else "", name=given)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Person(name=user, subject=f"os:{user}")


def admin_emails() -> set[str]:
    """``TFLITE_LAB_ADMINS``: a comma-separated list of emails."""
    return {e.strip().lower() for e in os.environ.get("TFLITE_LAB_ADMINS", "").split(",") if e.strip()}


def admin_groups() -> set[str]:
    """``TFLITE_LAB_ADMIN_GROUPS``: identity-provider groups (or roles) whose members are admins."""
    return {g.strip() for g in os.environ.get("TFLITE_LAB_ADMIN_GROUPS", "").split(",") if g.strip()}


@dataclass(frozen=True)
class Actor:
    """Who is acting, and with which rights. ``person`` None: an anonymous visitor."""

    person: Person | None
    admin: bool = False

    @property
    def label(self) -> str:
        return self.person.label if self.person else "an anonymous visitor"


def signed_in(person: Person | None) -> Actor:
    """A dashboard visitor: an admin by email or group, else a colleague; anonymous when None."""
    if person is None:
        return Actor(None)
    admin = bool(person.email and person.email.lower() in admin_emails()) or bool(set(person.groups) & admin_groups())
    return Actor(person, admin)


def owner(author: str | None = None) -> Actor:
    """The database owner: the CLI, and the dashboard without sign-in (one user on their machine).
    Whoever can write the history file can change anything in it anyway."""
    return Actor(cli_person(author), admin=True)


def same_person(a: Person | None, b: Person | None) -> bool:
    """Same subject when both have one, else the same email; nobody owns a run made before sign-in."""
    if a is None or b is None:
        return False
    if a.subject and b.subject:
        return a.subject == b.subject
    return bool(a.email and b.email and a.email.lower() == b.email.lower())


def can_change(actor: Actor, author: Person | None) -> bool:
    return actor.admin or same_person(actor.person, author)


def check_change(actor: Actor, author: Person | None, what: str) -> None:
    """Refuse (and log) a change to ``what`` by anyone but its author or an admin.

    Raises:
        PermissionDenied: with a one-line message naming the author.
    """
    if can_change(actor, author):
        return
    _LOG.warning("refused: %s tried to change %s (author: %s)", _who(actor), what,
                 author.label if author else "before sign-in")
    raise PermissionDenied(f"Only {author.label if author else 'an admin'} or an admin can change {what}; "
                           f"you are signed in as {actor.label}." if actor.person else
                           f"Sign in to change {what}: only its author or an admin can.")


def check_admin(actor: Actor, what: str) -> None:
    if actor.admin:
        return
    _LOG.warning("refused: %s tried to %s (admins only)", _who(actor), what)
    raise PermissionDenied(f"Only an admin can {what}; you are {actor.label}.")


def check_review(actor: Actor, verdict: str) -> None:
    if actor.person is None:
        _LOG.warning("refused: an anonymous visitor tried to review a run")
        raise PermissionDenied("Sign in to review a run.")
    if verdict not in REVIEW_VERDICTS:
        raise TFLiteLabError(f"Unknown review verdict '{verdict}'. Use one of: {', '.join(REVIEW_VERDICTS)}.")


def _who(actor: Actor) -> str:
    p = actor.person
    return f"{p.email or p.name} ({p.subject})" if p else "anonymous"


def author_label(author: dict | None) -> str:
    """How a stored author reads: 'Ana (ana@example.org)', 'ana', or 'before sign-in'."""
    p = Person.from_json(author)
    if p is None:
        return "before sign-in"
    if p.name and p.email and p.name != p.email:
        return f"{p.name} ({p.email})"
    return p.label


AUTH_FIELDS = ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url")
MIN_COOKIE_SECRET = 32


def auth_config_problem(section) -> str | None:
    """What is wrong with ``[auth]`` of .streamlit/secrets.toml, in one line (None: usable).

    The cookie secret signs the sign-in cookie: without one, or a short one, anyone could forge who
    they are, so the dashboard refuses to start its pages rather than fall back.
    """
    section = dict(section or {})
    providers = {k: dict(v) for k, v in section.items() if hasattr(v, "keys")}
    secret = str(section.get("cookie_secret") or "")
    if not secret:
        return ("Sign-in is configured but [auth] cookie_secret is missing in .streamlit/secrets.toml: set it to a "
                "long random string, e.g. the output of python -c \"import secrets; print(secrets.token_hex(32))\".")
    if len(secret) < MIN_COOKIE_SECRET:
        return (f"[auth] cookie_secret in .streamlit/secrets.toml is {len(secret)} characters; use at least "
                f"{MIN_COOKIE_SECRET} random ones (python -c \"import secrets; print(secrets.token_hex(32))\").")
    if not str(section.get("redirect_uri") or "").endswith("/oauth2callback"):
        return ("[auth] redirect_uri in .streamlit/secrets.toml must be this app's address ending in /oauth2callback, "
                f"e.g. http://localhost:8501/oauth2callback; got '{section.get('redirect_uri') or ''}'.")
    for name, p in (providers.items() if providers else [("auth", section)]):
        missing = [f for f in ("client_id", "client_secret", "server_metadata_url") if not p.get(f)]
        if missing:
            where = "[auth]" if name == "auth" else f"[auth.{name}]"
            return f"{where} in .streamlit/secrets.toml lacks {', '.join(missing)}: see the README's Sign-in section."
    return None


def login_required() -> bool:
    """``TFLITE_LAB_REQUIRE_LOGIN=1``: every page, permalink and report needs a signed-in user."""
    return os.environ.get("TFLITE_LAB_REQUIRE_LOGIN", "").strip().lower() in ("1", "true", "yes", "on")
