"""meshprobe as a mesh client: a client certificate against real STRICT-mTLS servers on loopback.

Each side's refusal must be named: the server refusing us (no certificate, one from another root,
an expired one), in TLS 1.2 (alert inside the handshake) and TLS 1.3 (alert after our handshake
is done), versus our refusal of the server's chain. Rotated files are used from the next probe,
a half-written key keeps the pair in use. Every test runs on asyncio and uvloop (conftest).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from structlog.testing import capture_logs

from meshprobe.demo import pki
from meshprobe.model import Reason, Target
from meshprobe.probes import ProbeEnv, run_probe
from tests.integration.daemonkit import probed_daemon, samples, scrape_daemon
from tests.integration.faults import SPIFFE_ID, TestPki, make_target
from tests.integration.mtlsserver import MTLSServer

CLIENT_ID = "spiffe://cluster.local/ns/meshprobe/sa/meshprobe"
ROTATED_ID = "spiffe://cluster.local/ns/meshprobe/sa/meshprobe-rotated"
CASES = [
    pytest.param((scheme, version), id=f"{scheme}-{name}")
    for scheme in ("https", "tls")
    for version, name in ((ssl.TLSVersion.TLSv1_2, "tls1.2"), (ssl.TLSVersion.TLSv1_3, "tls1.3"))
]


def client(issuer: pki.Issued, spiffe: str = CLIENT_ID, **window: datetime) -> pki.Issued:
    return pki.make_leaf(issuer, None, uris=[spiffe], **window)


def write_pair(directory: Path, leaf: pki.Issued, chain: pki.Issued) -> tuple[Path, Path]:
    cert, key = directory / "cert-chain.pem", directory / "key.pem"
    cert.write_bytes(leaf.cert_pem() + chain.cert_pem())
    key.write_bytes(leaf.key_pem())
    return cert, key


def target_for(srv: MTLSServer, scheme: str, pair: tuple[Path, Path] | None) -> Target:
    tls: dict[str, object] = {"identity": SPIFFE_ID}
    if pair is not None:
        tls |= {"cert_file": str(pair[0]), "key_file": str(pair[1])}
    return make_target(srv.url(scheme), tls=tls, timeout=3.0)


Case = tuple[str, ssl.TLSVersion]
ServerFactory = Callable[[ssl.TLSVersion], MTLSServer]


@pytest.fixture
def server_factory(test_pki: TestPki) -> ServerFactory:
    def make(version: ssl.TLSVersion) -> MTLSServer:
        return MTLSServer(test_pki.leaf, [test_pki.intermediate], test_pki.root, version=version)

    return make


@pytest.mark.parametrize("case", CASES)
async def test_a_certificate_from_the_shared_root_is_accepted_and_the_server_judged(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
    case: Case,
) -> None:
    scheme, version = case
    pair = write_pair(tmp_path, client(test_pki.intermediate), test_pki.intermediate)
    with server_factory(version) as srv:
        result = await run_probe(target_for(srv, scheme, pair), env)
        assert result.success, result.detail
        assert srv.accepted.get(timeout=5) == CLIENT_ID
    assert result.tls is not None and result.tls.verified
    assert result.tls.identity == SPIFFE_ID  # the server's mesh identity, judged by us
    assert result.tls.root is not None
    assert result.tls.root.fingerprint_sha256 == test_pki.root.cert.fingerprint(SHA256()).hex()


@pytest.mark.parametrize("case", CASES)
async def test_without_a_certificate_the_server_refuses_and_the_detail_says_so(
    env: ProbeEnv,
    server_factory: ServerFactory,
    case: Case,
) -> None:
    scheme, version = case
    with server_factory(version) as srv:
        result = await run_probe(target_for(srv, scheme, None), env)
        assert srv.refused.get(timeout=5)
    assert (result.success, result.reason) == (False, Reason.TLS_HANDSHAKE), result.detail
    assert result.detail.startswith("the server refused"), result.detail
    assert "we presented none" in result.detail


@pytest.mark.parametrize("case", CASES)
async def test_a_certificate_from_another_root_is_refused_by_the_server(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
    case: Case,
) -> None:
    scheme, version = case
    foreign = client(test_pki.other_intermediate)
    pair = write_pair(tmp_path, foreign, test_pki.other_intermediate)
    with server_factory(version) as srv:
        result = await run_probe(target_for(srv, scheme, pair), env)
        assert srv.refused.get(timeout=5)
    assert (result.success, result.reason) == (False, Reason.TLS_HANDSHAKE), result.detail
    assert result.detail.startswith(f"the server refused our client certificate {CLIENT_ID}")
    assert "unknown_ca" in result.detail


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_an_expired_certificate_is_refused_as_expired(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
    scheme: str,
) -> None:
    now = datetime.now(UTC)
    old = client(
        test_pki.intermediate,
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(hours=1),
    )
    pair = write_pair(tmp_path, old, test_pki.intermediate)
    with server_factory(ssl.TLSVersion.TLSv1_3) as srv:
        result = await run_probe(target_for(srv, scheme, pair), env)
    assert result.reason is Reason.TLS_HANDSHAKE, result.detail
    assert (
        "certificate_expired" in result.detail and "refused our client certificate" in result.detail
    )


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_our_refusal_of_the_server_is_told_apart_from_its_refusal_of_us(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path, scheme: str
) -> None:
    pair = write_pair(tmp_path, client(test_pki.intermediate), test_pki.intermediate)
    untrusted = MTLSServer(test_pki.other_leaf, [test_pki.other_intermediate], test_pki.root)
    with untrusted as srv:
        result = await run_probe(target_for(srv, scheme, pair), env)
    assert result.reason is Reason.TLS_UNTRUSTED, result.detail
    assert result.detail.startswith("we refused the server:"), result.detail


@pytest.mark.parametrize(
    "rotation",
    [(s, h) for s in ("https", "tls") for h in ("atomic rename", "in-place rewrite")],
    ids=lambda r: f"{r[0]}-{r[1].replace(' ', '-')}",
)
async def test_rotated_files_are_used_from_the_next_probe(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
    rotation: tuple[str, str],
) -> None:
    scheme, how = rotation
    cert, key = write_pair(tmp_path, client(test_pki.intermediate), test_pki.intermediate)
    target = target_for(server := server_factory(ssl.TLSVersion.TLSv1_3), scheme, (cert, key))
    with server as srv:
        assert (await run_probe(target, env)).success
        assert srv.accepted.get(timeout=5) == CLIENT_ID
        rotated = client(test_pki.intermediate, ROTATED_ID)
        if how == "atomic rename":  # a Secret volume: new files, then one rename each
            staging = tmp_path / "staging"
            staging.mkdir()
            new_cert, new_key = write_pair(staging, rotated, test_pki.intermediate)
            os.replace(new_key, key)
            os.replace(new_cert, cert)
        else:  # Istio's OUTPUT_CERTS: the same files rewritten
            cert.write_bytes(rotated.cert_pem() + test_pki.intermediate.cert_pem())
            key.write_bytes(rotated.key_pem())
        result = await run_probe(target, env)
        assert result.success, result.detail
        assert srv.accepted.get(timeout=5) == ROTATED_ID
    source = env.clients.source(str(cert), str(key))
    assert source.reload_success and source.pair is not None
    assert source.pair.identity == ROTATED_ID


async def test_a_half_written_key_keeps_the_pair_in_use(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
) -> None:
    cert, key = write_pair(tmp_path, client(test_pki.intermediate), test_pki.intermediate)
    target = target_for(server := server_factory(ssl.TLSVersion.TLSv1_3), "https", (cert, key))
    with server as srv:
        assert (await run_probe(target, env)).success
        assert srv.accepted.get(timeout=5) == CLIENT_ID
        rotated = client(test_pki.intermediate, ROTATED_ID)
        cert.write_bytes(rotated.cert_pem() + test_pki.intermediate.cert_pem())
        key.write_bytes(rotated.key_pem()[:60])  # the writer is half-way through the key
        result = await run_probe(target, env)
        assert result.success, result.detail
        assert srv.accepted.get(timeout=5) == CLIENT_ID  # still the old, matching pair
        source = env.clients.source(str(cert), str(key))
        assert not source.reload_success
        assert source.error is not None and "private key" in source.error
        key.write_bytes(rotated.key_pem())  # the write completes
        assert (await run_probe(target, env)).success
        assert srv.accepted.get(timeout=5) == ROTATED_ID
    assert source.reload_success and source.error is None


async def test_a_pair_that_was_never_good_probes_without_and_says_why(
    env: ProbeEnv,
    test_pki: TestPki,
    tmp_path: Path,
    server_factory: ServerFactory,
) -> None:
    cert, key = write_pair(tmp_path, client(test_pki.intermediate), test_pki.intermediate)
    key.write_bytes(client(test_pki.intermediate).key_pem())  # someone else's key
    with server_factory(ssl.TLSVersion.TLSv1_3) as srv:
        result = await run_probe(target_for(srv, "tls", (cert, key)), env)
    assert result.reason is Reason.TLS_HANDSHAKE, result.detail
    assert "we presented none (ours is unusable:" in result.detail
    assert "is not the key of the certificate" in result.detail


async def test_the_daemon_exports_its_client_certificate_and_a_failing_reload(
    test_pki: TestPki, tmp_path: Path, server_factory: ServerFactory
) -> None:
    """`defaults.tls` gives every https and tls target the pair; its expiry and reload health are
    instance metrics, and a broken rewrite is logged once while the old pair keeps working."""
    leaf = client(test_pki.intermediate)
    cert, key = write_pair(tmp_path, leaf, test_pki.intermediate)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(test_pki.root.cert_pem())
    with server_factory(ssl.TLSVersion.TLSv1_3) as srv:
        config = {
            "cluster": "cluster1",
            "listen": "127.0.0.1:0",
            "defaults": {
                "interval": "1s",
                "timeout": "900ms",
                "tls": {"cert_file": str(cert), "key_file": str(key)},
            },
            "trust": {"bundle_file": str(bundle)},
            "targets": [
                {"name": "mesh/https", "url": srv.url("https"), "tls": {"identity": SPIFFE_ID}},
                {"name": "mesh/tls", "url": srv.url("tls"), "tls": {"identity": SPIFFE_ID}},
            ],
        }
        names = ["mesh/https", "mesh/tls"]
        async with probed_daemon(tmp_path / "config.yaml", config) as (daemon, rounds):
            assert all(rounds.last[n].success for n in names), rounds.last
            text = await scrape_daemon(daemon)
            labels = {"source_cluster": "cluster1", "cert_file": str(cert)}
            expiry = leaf.cert.not_valid_after_utc.timestamp()
            assert samples(text, "meshprobe_client_cert_expiry_timestamp_seconds") == [
                (labels, expiry)
            ]
            assert samples(text, "meshprobe_client_cert_reload_success") == [(labels, 1.0)]
            with capture_logs() as logs:
                key.write_bytes(leaf.key_pem()[:50])  # half-written
                await rounds.wait(names, at_least=3)
            assert all(rounds.last[n].success for n in names), rounds.last
            text = await scrape_daemon(daemon)
            assert samples(text, "meshprobe_client_cert_reload_success") == [(labels, 0.0)]
            assert samples(text, "meshprobe_client_cert_expiry_timestamp_seconds") == [
                (labels, expiry)
            ]
            rejected = [e for e in logs if e["event"].startswith("client certificate rejected")]
            assert len(rejected) == 1, rejected
            assert "BEGIN" not in repr(rejected)  # the file is named, its content never shown
