#!/usr/bin/env bash
# The side-by-side benchmark (bench/compare.py) from a fresh Debian 12 machine as root: installs
# Debian's prometheus-blackbox-exporter and the venv when missing, then runs it. Arguments go to
# compare.py (e.g. --quick, --skip churn, --rounds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus-blackbox-exporter >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus-blackbox-exporter >/dev/null
fi
. scripts/venv.sh
ensure_venv test,fast
exec .venv/bin/python bench/compare.py "$@"
