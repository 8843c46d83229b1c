#!/usr/bin/env bash
# The whole test suite from a fresh Debian 12 machine (run as root): installs what the tests need
# (Debian's prometheus + alertmanager for promtool and the end-to-end stack, blackbox_exporter for
# the benchmark smoke tests, haproxy as the east-west gateway of the mTLS end-to-end test, chromium
# + chromedriver for the status page's browser tests, a venv with the package and its test
# extras), then runs lint, types and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
    || ! command -v prometheus-blackbox-exporter >/dev/null \
    || ! [ -x /usr/sbin/haproxy ] \
    || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager prometheus-blackbox-exporter haproxy \
        chromium chromium-driver >/dev/null
fi

. scripts/venv.sh
ensure_venv test,fast

.venv/bin/ruff check meshprobe tests bench scripts
.venv/bin/ruff format --check meshprobe tests bench scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache  # the layer contracts in pyproject.toml
exec .venv/bin/pytest -q "$@"
