# Sourced by the other scripts: make .venv (Debian's python3 needs python3-venv for that) and
# install the package with the given extras into it.
ensure_venv() {
    local extras=$1
    local py=${PYTHON:-python3}
    if [ ! -x .venv/bin/python ]; then
        if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        fi
        "$py" -m venv .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]"
}
