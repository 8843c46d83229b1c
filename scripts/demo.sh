#!/usr/bin/env bash
# Installs meshprobe into a venv and runs the embedded demo: two simulated clusters on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv fast
exec .venv/bin/meshprobe demo "$@"
