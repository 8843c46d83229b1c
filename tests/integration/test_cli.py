"""The command line as a user runs it: real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.daemonkit import write_config

MESHPROBE = [sys.executable, "-m", "meshprobe"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROBE_")}


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHPROBE, *args], capture_output=True, text=True, timeout=timeout, env=ENV, check=False
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("meshprobe ")


def test_check_names_every_bad_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "defaults: {interval: 10 parsecs}\n"
        "colour: blue\n"
        "targets:\n"
        "  - {name: a, url: 'ftp://example.invalid/x'}\n"
    )
    out = run("check", "--config", str(path))
    assert out.returncode == 2
    lines = out.stderr
    assert "cluster:" in lines  # missing
    assert "defaults.interval:" in lines and "10 parsecs" in lines
    assert "colour:" in lines and "unknown key" in lines
    assert "targets.0.url:" in lines and "ftp" in lines


def test_check_accepts_a_valid_file_with_a_summary(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "ok.yaml",
        {
            "cluster": "c1",
            "targets": [
                {"name": "a/b", "url": "http://127.0.0.1:1/"},
                {"name": "a/b", "cluster": "c2", "url": "tcp://h:1"},
            ],
        },
    )
    out = run("check", "--config", str(path))
    assert out.returncode == 0, out.stderr
    assert "config OK" in out.stdout and "1 local, 1 remote" in out.stdout


def test_run_refuses_an_invalid_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("cluster: c1\ntargets: [{name: a, url: 'gopher://x:1'}]\n")
    out = run("run", "--config", str(path))
    assert out.returncode == 2
    assert "targets.0.url:" in out.stderr


def test_run_reloads_on_sighup_and_stops_on_sigterm_within_5s(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "c.yaml",
        {
            "cluster": "c1",
            "listen": "127.0.0.1:0",
            "log_format": "json",
            "defaults": {"interval": "50ms", "timeout": "50ms"},
            # A hanging-free target set: a refused port fails fast and keeps the loop busy.
            "targets": [{"name": "a/b", "url": "tcp://127.0.0.1:9"}],
        },
    )
    proc = subprocess.Popen(
        [*MESHPROBE, "run", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert proc.stderr is not None
        events = []
        for line in proc.stderr:
            event = json.loads(line)
            events.append(event)
            if event["event"] == "meshprobe started":
                break
        proc.send_signal(signal.SIGHUP)
        for line in proc.stderr:
            event = json.loads(line)
            if event["event"] == "config reloaded":
                break
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - began < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize("mismatch", [False, True])
def test_demo_runs_two_clusters_and_shows_trust(mismatch: bool) -> None:
    args = ["demo", "--duration", "3", "--interval", "200ms", "--listen", "127.0.1.1:0"]
    out = run(*args, *(["--ca-mismatch"] if mismatch else []))
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 8 and cols[1] in ("cluster1", "cluster2"):
            rows[(cols[0], cols[1])] = cols
    assert ("demo/echo", "cluster1") in rows and ("demo/echo", "cluster2") in rows
    assert "metrics: http://127.0.1.1:" in out.stdout
    for (name, cluster), cols in rows.items():
        trust = cols[7]
        tls = name != "demo/echo"
        if mismatch and cluster == "cluster2" and tls:
            assert trust == "tls_untrusted", cols
            assert cols[6] == "0%"
        else:
            assert cols[6] == "100%", cols
            assert trust == ("ok" if tls else "-"), cols
