#!/usr/bin/env bash
# Runs the dashboard on http://localhost:8501 (installs the pinned packages on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
bash scripts/web_deps.sh
.venv/bin/python -m tflite_lab.auth_check      # a broken [auth] (e.g. no cookie_secret): one line, no server
exec .venv/bin/python -m streamlit run app.py --server.headless true "$@"
