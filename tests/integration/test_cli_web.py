"""`--web.config.file` on the command line: check, run, and their errors, as a user meets them."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from meshprobe.demo import pki
from tests.integration.test_cli import ENV, MESHPROBE, run
from tests.integration.weblistenerkit import PASSWORD, USER, bcrypt_hash, make_listener_pki


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_loads_the_web_config_file_and_names_no_hash(tmp_path: Path) -> None:
    tls = make_listener_pki(tmp_path / "tls")
    hashed = bcrypt_hash(PASSWORD)
    web = write(
        tmp_path / "web.yml",
        {
            # Relative to the web config file, as exporter-toolkit resolves them.
            "tls_server_config": {"cert_file": "tls/tls.crt", "key_file": "tls/tls.key"},
            "basic_auth_users": {USER: hashed},
        },
    )
    config = write(tmp_path / "c.yaml", {"cluster": "c1"})
    out = run("check", "--config", str(config), "--web.config.file", str(web))
    assert out.returncode == 0, out.stderr
    assert "listener: TLS TLS12+, basic auth for prometheus" in out.stdout
    assert hashed not in out.stdout + out.stderr
    # Half a rotation on disk: check loads the pair and says which field is wrong.
    tls.key_file.write_bytes(pki.make_leaf(tls.server_root, "another").key_pem())
    out = run("check", "--config", str(config), "--web.config.file", str(web))
    assert out.returncode == 2
    assert f"config invalid: {web}" in out.stderr
    assert "tls_server_config.key_file: the key in" in out.stderr
    assert "Traceback" not in out.stderr


def test_section_and_flag_together_are_refused(tmp_path: Path) -> None:
    web = write(tmp_path / "web.yml", {"basic_auth_users": {USER: bcrypt_hash(PASSWORD)}})
    config = write(
        tmp_path / "c.yaml",
        {"cluster": "c1", "web": {"basic_auth_users": {"other": bcrypt_hash("x")}}},
    )
    for command in ("check", "run"):
        out = run(command, "--config", str(config), "--web.config.file", str(web))
        assert out.returncode == 2
        assert "web: the config has a web section and --web.config.file" in out.stderr


def test_run_serves_tls_with_basic_auth_from_the_web_config_file(tmp_path: Path) -> None:
    tls = make_listener_pki(tmp_path / "tls")
    web = write(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": "tls/tls.crt", "key_file": "tls/tls.key"},
            "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
        },
    )
    config = write(
        tmp_path / "c.yaml", {"cluster": "c1", "listen": "127.0.0.1:0", "log_format": "json"}
    )
    proc = subprocess.Popen(
        [*MESHPROBE, "run", "--config", str(config), "--web.config.file", str(web)],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stderr is not None
        started = next(
            event
            for event in (json.loads(line) for line in proc.stderr)
            if event["event"] == "meshprobe started"
        )
        assert started["web"] == "listener: TLS TLS12+, basic auth for prometheus"
        base = f"https://{started['listen']}"
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, context=ctx, timeout=10) as resp:
            assert resp.status == 200
            assert b"meshprobe_build_info" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/metrics", context=ctx, timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
