#!/usr/bin/env bash
# LiteRT.js for the browser target and "Run on this device": the npm packages pinned by
# web/package-lock.json, installed with `npm ci` (Debian's npm when it is missing).
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q npm
fi
# npm keeps its own copy of the lock in node_modules: equal means installed already.
if [ -f node_modules/.package-lock.json ] && \
   python3 -c 'import json,sys; a,b=(json.load(open(p))["packages"] for p in sys.argv[1:]); a.pop("",None); sys.exit(a!=b)' \
     package-lock.json node_modules/.package-lock.json; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
