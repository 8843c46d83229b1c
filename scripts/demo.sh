#!/usr/bin/env bash
# Installs meshprobe into a venv and runs the embedded demo: two simulated clusters on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[fast]'
exec .venv/bin/meshprobe demo "$@"
