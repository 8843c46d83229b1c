"""Credentials in a target's URL and headers reach the target's own origin and nothing else: not a
log line, not a traceback, not an endpoint of ours, not `meshprobe check`'s errors, not the other
origin a redirect points to. A real `meshprobe run` process with real servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.integration import faults
from tests.integration.daemonkit import write_config
from tests.integration.faults import FaultServer, Reply, Request, refused_port

MESHPROBE = [sys.executable, "-m", "meshprobe"]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MESHPROBE_")}
PASSWORD = "pw-Zq8v1kS3"
TOKEN = "tok-7Hc2pQx9"
SECRETS = (PASSWORD, TOKEN, base64.b64encode(f"probe:{PASSWORD}".encode()).decode())


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} shows {leaked}"


async def test_credentials_stay_with_their_origin(tmp_path: Path) -> None:
    other = FaultServer(faults.http())  # another origin (another port)
    async with other:

        def respond(request: Request) -> Reply:
            if request.path == "/start":
                return Reply(status=302, headers=(("Location", f"{other.url()}final"),))
            return Reply()

        async with FaultServer(faults.http(respond)) as own:
            with refused_port() as dead, refused_port() as dead_peer:
                config = {
                    "cluster": "cluster1",
                    "listen": "127.0.0.1:0",
                    "log_format": "json",
                    "defaults": {"interval": "100ms", "timeout": "100ms"},
                    "targets": [
                        {
                            "name": "secret/redirect",
                            "url": f"http://probe:{PASSWORD}@{own.host}:{own.port}/start",
                            "headers": {"X-Api-Key": TOKEN},
                            "follow_redirects": True,
                        },
                        {
                            "name": "secret/dead",
                            "url": f"http://probe:{PASSWORD}@127.0.0.1:{dead}/",
                            "headers": {"X-Api-Key": TOKEN},
                        },
                    ],
                    "peers": [
                        {"cluster": "cluster2", "url": f"http://p:{PASSWORD}@127.0.0.1:{dead_peer}"}
                    ],
                }
                path = write_config(tmp_path / "meshprobe.yaml", config)
                logs, endpoints = await run_until_failing_is_logged(path, other)
    for line in logs:
        assert_no_secret(line, "the log")
    for name, body in endpoints.items():
        assert_no_secret(body, name)
    assert "secret/dead" in endpoints["/v1/status"]  # the status page shows the edges ...
    assert "***@127.0.0.1" in endpoints["/v1/status"]  # ... with their URLs redacted
    events = {json.loads(line)["event"] for line in logs}
    assert {"probe failing", "peer unreachable or invalid"} <= events
    # The credentials did reach the target's own origin, and only there.
    first = next(r for r in own.requests if r.path == "/start")
    assert first.headers["x-api-key"] == TOKEN
    assert first.headers["authorization"] == f"Basic {SECRETS[2]}"
    assert other.requests, "the redirect was followed"
    for request in other.requests:
        assert "x-api-key" not in request.headers and "authorization" not in request.headers


async def run_until_failing_is_logged(
    path: Path, redirected_to: FaultServer
) -> tuple[list[str], dict[str, str]]:
    """Run the daemon until it has logged the failing target and the unreachable peer and a
    redirect reached the other origin, read every endpoint, stop it with SIGTERM; returns its log
    lines and the endpoints' bodies."""
    proc = await asyncio.create_subprocess_exec(
        *MESHPROBE, "run", "--config", str(path), stderr=subprocess.PIPE, env=ENV
    )
    assert proc.stderr is not None
    lines: list[str] = []
    wanted = {"probe failing", "peer unreachable or invalid"}
    port = None
    try:
        async with asyncio.timeout(20):
            while wanted or port is None:
                raw = await proc.stderr.readline()
                assert raw, "meshprobe exited early:\n" + "".join(lines)
                line = raw.decode()
                lines.append(line)
                event = json.loads(line)
                wanted.discard(event["event"])
                if event["event"] == "meshprobe started":
                    port = int(event["listen"].rsplit(":", 1)[1])
            await redirected_to.requested.wait()
        endpoints: dict[str, str] = {}
        async with aiohttp.ClientSession() as session:
            names = ["/", "/metrics", "/healthz", "/readyz", "/v1/identity", "/v1/echo"]
            names.append("/v1/status")
            async with session.get(f"http://127.0.0.1:{port}/v1/status") as resp:
                names += [f"/v1/status/edges/{e['id']}" for e in (await resp.json())["edges"]]
            for name in names:
                async with session.get(f"http://127.0.0.1:{port}{name}") as resp:
                    endpoints[name] = f"{resp.status} {dict(resp.headers)} {await resp.text()}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = await proc.communicate()
        del rest
    remaining = (await proc.stderr.read()).decode() if not proc.stderr.at_eof() else ""
    lines.extend(remaining.splitlines())
    return lines, endpoints


def test_check_never_prints_url_credentials(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "cluster: c1\n"
        "targets:\n"
        f"  - {{name: a, url: 'http://probe:{PASSWORD}@example.invalid:99999/'}}\n"
        f"  - {{name: b, url: 'tcp://probe:{PASSWORD}@example.invalid'}}\n"
        f"  - {{name: c, url: 'http://probe:{PASSWORD}@h/', headers: {{Authorization: x}}}}\n"
        "peers:\n"
        f"  - {{cluster: c2, url: 'http://p:{PASSWORD}@example.invalid:0'}}\n"
    )
    out = subprocess.run(
        [*MESHPROBE, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert out.returncode == 2
    for field in ("targets.0.url", "targets.1.url", "targets.2.headers", "peers.0.url"):
        assert f"{field}:" in out.stderr, out.stderr
    assert "bad port" in out.stderr and "***@" in out.stderr
    assert_no_secret(out.stdout + out.stderr, "meshprobe check")


def test_tracebacks_in_json_logs_carry_no_frame_locals() -> None:
    """A probe that fails unexpectedly is logged with its traceback; the frames' locals (request
    headers, URL credentials) must not be in it."""
    code = (
        "import structlog\n"
        "from meshprobe.daemon.logsetup import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "def probe():\n"
        f"    headers = {{'Authorization': 'Bearer {TOKEN}'}}\n"
        "    raise ValueError('boom')\n"
        "try:\n"
        "    probe()\n"
        "except ValueError:\n"
        "    structlog.get_logger().exception('probe failed unexpectedly')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stderr.splitlines()
    event = json.loads(line)
    assert event["exception"][0]["exc_type"] == "ValueError"  # the traceback is there ...
    assert_no_secret(line, "the traceback")  # ... without the locals
