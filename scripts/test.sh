#!/usr/bin/env bash
# One command for every test: installs what the tests need (pinned packages, Debian's chromium), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
bash scripts/web_deps.sh
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
# Two processes, one file each at a time: most tests wait on worker processes, browsers and
# subprocesses, so two keep both cores busy. Timing-sensitive checks compare within one test.
exec .venv/bin/python -m pytest -q -rfEx --durations=15 -n 2 --dist loadgroup "$@"
