"""The daemon's listener with TLS, mTLS and basic auth: real sockets on loopback, both loops."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import aiohttp
import pytest
import yaml
from cryptography import x509
from structlog.testing import capture_logs

from meshprobe.config.settings import ConfigError, load_settings
from meshprobe.config.web import TLSServerConfig, WebConfig
from meshprobe.daemon.lifecycle import Daemon
from meshprobe.demo import pki
from meshprobe.web import auth as webauth
from meshprobe.web.listener import ListenerSecurity
from meshprobe.web.server import build_app, start_site
from tests.integration.daemonkit import signals
from tests.integration.weblistenerkit import (
    PASSWORD,
    USER,
    ListenerPki,
    bcrypt_hash,
    get,
    make_listener_pki,
    running_daemon,
)


@pytest.fixture
def tls(tmp_path: Path) -> ListenerPki:
    return make_listener_pki(tmp_path / "tls")


def url(daemon: Daemon, path: str, scheme: str = "https") -> str:
    return f"{scheme}://127.0.0.1:{daemon.port}{path}"


async def presented_leaf(
    daemon: Daemon, tls: ListenerPki, *, with_cert: bool = False
) -> x509.Certificate:
    """The certificate a new connection is served (the handshake completes, nothing is sent)."""
    ctx = tls.client_context(with_cert=with_cert)
    _, writer = await asyncio.open_connection("127.0.0.1", daemon.port, ssl=ctx)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_basic_auth_over_tls(tls: ListenerPki) -> None:
    web = {
        "tls_server_config": tls.tls_section(),
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
    }
    async with running_daemon(web) as daemon:
        ctx = tls.client_context()
        status, headers, _ = await get(url(daemon, "/metrics"), ssl_context=ctx)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        status, _, _ = await get(url(daemon, "/metrics"), ssl_context=ctx, auth=(USER, "wrong"))
        assert status == 401
        status, _, _ = await get(url(daemon, "/metrics"), ssl_context=ctx, auth=("root", PASSWORD))
        assert status == 401
        status, _, body = await get(url(daemon, "/metrics"), ssl_context=ctx, auth=(USER, PASSWORD))
        assert status == 200
        assert "meshprobe_build_info" in body
        # Closed without credentials: the status page, and paths that do not exist (401, not
        # 404: no enumeration), however the path is spelt.
        for path in ("/", "/v1/status", "/nope", "//metrics", "/%6detrics", "/metrics/"):
            status, _, _ = await get(url(daemon, path), ssl_context=ctx)
            assert status == 401, path
        # Open: the kubelet's probes and what peers in other clusters fetch.
        for path in ("/healthz", "/readyz", "/v1/identity", "/v1/echo"):
            status, _, _ = await get(url(daemon, path), ssl_context=ctx)
            assert status == 200, path


async def test_plain_http_to_the_tls_listener_fails(tls: ListenerPki) -> None:
    async with running_daemon({"tls_server_config": tls.tls_section()}) as daemon:
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/healthz", scheme="http"))
        # And a client that does not trust the listener's CA does not get through either.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(url(daemon, "/healthz"), ssl_context=ssl.create_default_context())
        status, _, _ = await get(url(daemon, "/healthz"), ssl_context=tls.client_context())
        assert status == 200


async def test_mtls_required(tls: ListenerPki) -> None:
    web = {
        "tls_server_config": tls.tls_section(
            client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(tls.client_ca_file)
        )
    }
    async with running_daemon(web) as daemon:
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/metrics"), ssl_context=tls.client_context())
        # Without a certificate nothing is served, not even /healthz (kubelet probes need
        # VerifyClientCertIfGiven or a tcpSocket probe; see the README).
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/healthz"), ssl_context=tls.client_context())
        status, _, body = await get(
            url(daemon, "/metrics"), ssl_context=tls.client_context(with_cert=True)
        )
        assert status == 200 and "meshprobe_build_info" in body
        # A client certificate from a CA the listener does not trust is refused.
        stranger = pki.make_leaf(pki.make_root("someone else"), "prometheus")
        tls.client_cert_file.write_bytes(stranger.cert_pem())
        tls.client_key_file.write_bytes(stranger.key_pem())
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/metrics"), ssl_context=tls.client_context(with_cert=True))


async def test_verify_client_cert_if_given_keeps_probes_open(tls: ListenerPki) -> None:
    web = {
        "tls_server_config": tls.tls_section(
            client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(tls.client_ca_file)
        ),
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
    }
    async with running_daemon(web) as daemon:
        status, _, _ = await get(url(daemon, "/healthz"), ssl_context=tls.client_context())
        assert status == 200
        ctx = tls.client_context(with_cert=True)
        status, _, _ = await get(url(daemon, "/metrics"), ssl_context=ctx)
        assert status == 401  # a certificate alone is not a password
        status, _, _ = await get(url(daemon, "/metrics"), ssl_context=ctx, auth=(USER, PASSWORD))
        assert status == 200


async def test_rotated_files_are_served_to_new_connections(tls: ListenerPki) -> None:
    web = {
        "tls_server_config": tls.tls_section(
            client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(tls.client_ca_file)
        )
    }
    async with running_daemon(web) as daemon:
        assert daemon.web is not None and daemon.web.tls is not None
        before = await presented_leaf(daemon, tls)
        assert daemon.web.tls.check() is None  # unchanged files: nothing rebuilt
        rotated = tls.issue_server()
        assert daemon.web.tls.check() is True
        after = await presented_leaf(daemon, tls)
        assert after.serial_number == rotated.cert.serial_number != before.serial_number

        # Half a rotation (a new certificate, the old key) keeps serving the last good pair.
        tls.cert_file.write_bytes(pki.make_leaf(tls.server_root, "x").cert_pem())
        assert daemon.web.tls.check() is False
        assert (await presented_leaf(daemon, tls)).serial_number == rotated.cert.serial_number

        # The client CA rotates too: the old scrapers' certificates stop working.
        tls.issue_server()
        with_cert = tls.client_context(with_cert=True)
        status, _, _ = await get(url(daemon, "/healthz"), ssl_context=with_cert)
        assert status == 200  # accepted while its CA is trusted
        pki.write_bundle(tls.client_ca_file, [pki.make_root("new scrapers")])
        assert daemon.web.tls.check() is True
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/healthz"), ssl_context=tls.client_context(with_cert=True))


async def test_the_watch_task_picks_up_rotations(
    tls: ListenerPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("meshprobe.daemon.lifecycle.FILES_PERIOD", 0.05)
    async with running_daemon({"tls_server_config": tls.tls_section()}) as daemon:
        rotated = tls.issue_server()
        async with asyncio.timeout(10):
            while (await presented_leaf(daemon, tls)).serial_number != rotated.cert.serial_number:
                signals(daemon).listener_files_checked.clear()
                await signals(daemon).listener_files_checked.wait()


async def test_sighup_applies_new_users_and_keeps_restart_only_tls(
    tls: ListenerPki, tmp_path: Path
) -> None:
    config = tmp_path / "meshprobe.yaml"

    def write(users: dict[str, str], client_auth: str = "NoClientCert") -> None:
        section = {"tls_server_config": tls.tls_section(), "basic_auth_users": users}
        if client_auth != "NoClientCert":
            section["tls_server_config"].update(
                client_auth_type=client_auth, client_ca_file=str(tls.client_ca_file)
            )
        config.write_text(
            yaml.safe_dump({"cluster": "cluster1", "listen": "127.0.0.1:0", "web": section})
        )

    write({USER: bcrypt_hash(PASSWORD)})
    daemon = Daemon(load_settings(config, environ={}), config_path=config, environ={})
    await daemon.start()
    try:
        ctx = tls.client_context()
        write({"other": bcrypt_hash("new-secret")}, client_auth="RequireAndVerifyClientCert")
        assert daemon.reload()
        status, _, _ = await get(url(daemon, "/metrics"), ssl_context=ctx, auth=(USER, PASSWORD))
        assert status == 401
        status, _, _ = await get(
            url(daemon, "/metrics"), ssl_context=ctx, auth=("other", "new-secret")
        )
        assert status == 200  # and no client certificate needed: that takes a restart
        # A reload whose certificate does not load changes nothing, and says so.
        tls.key_file.write_bytes(b"not a key")
        assert not daemon.reload()
        assert daemon.status.config_reload_success is False
        status, _, _ = await get(
            url(daemon, "/metrics"), ssl_context=ctx, auth=("other", "new-secret")
        )
        assert status == 200
    finally:
        await daemon.stop()


async def test_web_config_file_and_response_headers(tls: ListenerPki, tmp_path: Path) -> None:
    web_file = tmp_path / "web.yml"
    # Relative names: resolved against the web config file's directory.
    web_file.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "tls/tls.crt", "key_file": "tls/tls.key"},
                "http_server_config": {
                    "headers": {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "deny"}
                },
                "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
            }
        )
    )
    async with running_daemon(web_config_path=web_file) as daemon:
        ctx = tls.client_context()
        status, headers, _ = await get(url(daemon, "/metrics"), ssl_context=ctx)
        assert status == 401 and headers["X-Frame-Options"] == "deny"
        status, headers, _ = await get(
            url(daemon, "/metrics"), ssl_context=ctx, auth=(USER, PASSWORD)
        )
        assert status == 200  # a streamed response gets them too
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_request_limits() -> None:
    async with running_daemon() as daemon:
        base = url(daemon, "/healthz", scheme="http")
        status, _, _ = await get(base)
        assert status == 200
        status, _, _ = await get(base, headers={"X-Big": "a" * 9000})
        assert status in (400, 431)
        many = {f"X-H{i}": "1" for i in range(80)}
        status, _, _ = await get(base, headers=many)
        assert status in (400, 431)
        status, _, _ = await get(base + "?" + "q" * 9000)
        assert status in (400, 414)


async def test_middleware_answers_429_while_verifications_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The middleware on its own (no daemon): with the one bcrypt worker held busy and the
    queue full, a further guess is turned away at once instead of waiting in line."""
    monkeypatch.setattr(webauth, "MAX_PENDING", 1)
    release = threading.Event()
    entered = asyncio.Event()
    loop = asyncio.get_running_loop()

    def held(_self: webauth.BasicAuth, _stored: bytes | None, _password: bytes) -> bool:
        loop.call_soon_threadsafe(entered.set)
        release.wait(10)
        return False

    monkeypatch.setattr(webauth.BasicAuth, "_check", held)
    security = ListenerSecurity(
        WebConfig.model_validate({"basic_auth_users": {USER: bcrypt_hash(PASSWORD)}})
    )
    app = build_app(cluster="c1", identity=dict, middlewares=[security.middleware])
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        closed = f"http://127.0.0.1:{port}/v1/status"
        first = asyncio.create_task(get(closed, auth=(USER, "guess-1")))
        await entered.wait()
        status, headers, _ = await get(closed, auth=(USER, "guess-2"))
        assert status == 429 and headers["Retry-After"] == "1"
        status, _, _ = await get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200  # open paths never queue behind bcrypt
        release.set()
        status, _, _ = await first
        assert status == 401
    finally:
        release.set()
        await runner.cleanup()
        security.close()


async def test_reload_keeps_the_running_client_auth_and_its_ca(tls: ListenerPki) -> None:
    mtls = tls.tls_section(
        client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(tls.client_ca_file)
    )
    async with running_daemon({"tls_server_config": mtls}) as daemon:
        assert daemon.web is not None and daemon.web.tls is not None
        kept = daemon.web.tls.update(TLSServerConfig.model_validate(tls.tls_section()))
        assert kept == [
            "web.tls_server_config.client_auth_type",
            "web.tls_server_config.client_ca_file",
        ]
        # Still mTLS, still against the CA it started with, until a restart.
        ctx = tls.client_context(with_cert=True)
        status, _, _ = await get(url(daemon, "/healthz"), ssl_context=ctx)
        assert status == 200
        with pytest.raises(aiohttp.ClientError):
            await get(url(daemon, "/healthz"), ssl_context=tls.client_context())


async def test_basic_auth_without_tls_is_warned_about() -> None:
    with capture_logs() as logs:
        async with running_daemon({"basic_auth_users": {USER: bcrypt_hash(PASSWORD)}}) as daemon:
            status, _, _ = await get(url(daemon, "/metrics", scheme="http"), auth=(USER, PASSWORD))
            assert status == 200
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert any("plain HTTP listener" in w for w in warnings), warnings
    assert not any("$2b$" in str(e) for e in logs)  # no hash in any log line


async def test_a_certificate_that_does_not_load_stops_the_start_cleanly(tls: ListenerPki) -> None:
    tls.key_file.write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as info:
        async with running_daemon({"tls_server_config": tls.tls_section()}):
            pass
    [issue] = info.value.errors
    assert issue.path == "web.tls_server_config.key_file"
    assert "no usable PEM private key" in issue.reason
    assert "bm90IGEga2V5" not in issue.reason  # the file's content is never repeated
