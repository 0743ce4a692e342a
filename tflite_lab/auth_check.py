"""``python -m tflite_lab.auth_check [SECRETS.toml ...]``: the sign-in configuration checked before the server
starts (scripts/run.sh runs it), so a missing cookie secret is one line at start-up, not a surprise at the
first visit. The pages check the same rules again (``people.auth_config_problem``) on every run.

Reads Streamlit's default places, a later file's sections replacing an earlier's as in Streamlit: ``~/.streamlit/secrets.toml``, then
``.streamlit/secrets.toml`` in the working directory (or the files given). Exit 0 when sign-in is off or
usable, 2 with ``error: ...`` on stderr otherwise.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from .people import auth_config_problem, login_required


def default_files() -> list[Path]:
    return [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]


def problem(files: list[Path]) -> str | None:
    """What stops sign-in from working, in one line (None: sign-in is off or usable)."""
    auth = None
    for f in files:
        try:
            data = tomllib.loads(f.read_text())
        except FileNotFoundError:
            continue
        except (OSError, tomllib.TOMLDecodeError) as e:
            return f"{f} cannot be read as TOML ({' '.join(str(e).split())}); fix it or move it away."
        if "auth" in data:          # a later file's [auth] replaces an earlier one whole, as Streamlit merges
            auth = data["auth"]
    if auth is None:
        return ("TFLITE_LAB_REQUIRE_LOGIN=1 but no secrets.toml has an [auth] section: configure sign-in "
                "(see the README's Sign-in section) or unset it.") if login_required() else None
    return auth_config_problem(auth)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    found = problem([Path(a) for a in args] or default_files())
    if found:
        print(f"error: {found}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
