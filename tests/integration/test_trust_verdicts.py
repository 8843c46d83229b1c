"""Trust verdicts through the real probe: loopback TLS servers presenting chains minted here.

Each server is a genuine listener on 127.0.0.1 (FaultServer) with a Python ssl context, probed
by `run_probe` as the scheduler would, over the default loop and uvloop (see conftest). The
chains hang off the session's test PKI, whose root is the probe environment's only anchor.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshprobe.demo import pki
from meshprobe.model import CertRole, ProbeResult, Reason
from meshprobe.probes import ProbeEnv, run_probe
from tests import certkit
from tests.certkit import NOW
from tests.integration.faults import FaultServer, TestPki, echo, make_target

LOOPBACK = "127.0.0.1"


def server_context(
    tmp_path: Path, leaf: pki.Issued, chain: Sequence[pki.Issued], *, weak_keys: bool = False
) -> ssl.SSLContext:
    """A server context presenting `leaf` then `chain`; `weak_keys` lowers OpenSSL's security
    level so that the server agrees to serve a key we want meshprobe to refuse."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if weak_keys:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    cert_file, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert_file.write_bytes(leaf.cert_pem() + b"".join(c.cert_pem() for c in chain))
    key_file.touch(mode=0o600)
    key_file.write_bytes(leaf.key_pem())
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def probe(ctx: ssl.SSLContext, env: ProbeEnv, scheme: str = "https") -> ProbeResult:
    async with FaultServer(echo("cluster1"), tls=ctx) as server:
        path = "/v1/echo" if scheme == "https" else "/"
        result = await run_probe(make_target(server.url(scheme, path)), env)
        if not result.success:
            assert server.requests == []  # a refused chain is never sent a request
    return result


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_expired_extra_certificate_beside_a_valid_path_verifies(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path, scheme: str
) -> None:
    """A root migration: the server still sends an expired cross-certificate for its root."""
    retired = pki.make_root(
        "retired root", not_before=NOW - timedelta(days=4000), not_after=NOW - timedelta(days=30)
    )
    cross = certkit.ca(
        retired,
        "meshprobe test root",
        key=test_pki.root.key,
        not_before=NOW - timedelta(days=3000),
        not_after=NOW - timedelta(days=30),
    )
    assert cross.cert.subject == test_pki.root.cert.subject
    ctx = server_context(tmp_path, test_pki.leaf, [test_pki.intermediate, cross])
    result = await probe(ctx, env, scheme)
    assert result.success, result.detail
    assert result.tls is not None
    assert [c.extra for c in result.tls.chain] == [False, False, True]
    assert "ignored, not on the verified path" in result.tls.detail
    assert all(ts > NOW.timestamp() for ts in result.tls.earliest_expiry().values())
    assert result.tls.earliest_expiry()[CertRole.ROOT] == (
        test_pki.root.cert.not_valid_after_utc.timestamp()
    )


async def test_client_only_leaf_is_untrusted_with_an_eku_detail(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path
) -> None:
    """tls_untrusted, not tls_identity: the certificate is not a valid server credential at all
    (the fix is to reissue it with serverAuth), whereas tls_identity means a valid credential for
    the wrong name (the fix is routing or the expected name)."""
    leaf = certkit.leaf(
        test_pki.intermediate,
        "echo",
        dns=(),
        uris=["spiffe://cluster.local/ns/mesh/sa/echo"],
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    result = await probe(server_context(tmp_path, leaf, [test_pki.intermediate]), env)
    assert (result.success, result.reason) == (False, Reason.TLS_UNTRUSTED)
    assert "extendedKeyUsage [clientAuth] without serverAuth" in result.detail


async def test_rsa_1024_leaf_fails_naming_the_key(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    leaf = certkit.leaf(test_pki.intermediate, "weak.example", key=key, dns=("weak.example",))
    ctx = server_context(tmp_path, leaf, [test_pki.intermediate], weak_keys=True)
    result = await probe(ctx, env)
    assert (result.success, result.reason) == (False, Reason.TLS_UNTRUSTED)
    assert "leaf 'CN=weak.example' has a 1024-bit RSA key; at least 2048 required" in result.detail


async def test_san_less_leaf_fails_against_the_server_name(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path
) -> None:
    leaf = certkit.leaf(test_pki.intermediate, LOOPBACK, dns=())  # CN=127.0.0.1, no SAN
    result = await probe(server_context(tmp_path, leaf, [test_pki.intermediate]), env)
    assert (result.success, result.reason) == (False, Reason.TLS_IDENTITY)
    assert f"has no subjectAltName, so server name {LOOPBACK} cannot match" in result.detail
    assert result.tls is not None and result.tls.root is not None  # the chain itself verified


async def test_control_the_same_shapes_done_right_verify(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path
) -> None:
    """Guards the tests above: an RSA-2048 serverAuth leaf with the server name in its SAN, on
    the same servers, verifies."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = certkit.leaf(test_pki.intermediate, "echo", key=key, dns=(), ips=(LOOPBACK,))
    ctx = server_context(tmp_path, leaf, [test_pki.intermediate], weak_keys=True)
    result = await probe(ctx, env)
    assert result.success, result.detail


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_trust_domain_aliases_are_accepted_as_ours(
    env: ProbeEnv, test_pki: TestPki, scheme: str
) -> None:
    """A mesh mid-migration: a workload still carries an ID of the old trust domain. Foreign
    until `trust.trust_domain_aliases` names it, then ours; the daemon sets the env's field."""
    leaf = pki.make_leaf(
        test_pki.intermediate,
        None,
        uris=["spiffe://old.example/ns/a/sa/b"],
        ip_addresses=[LOOPBACK],
    )
    ctx = pki.server_ssl_context(leaf, [test_pki.intermediate])
    foreign = await probe(ctx, env, scheme)
    assert (foreign.success, foreign.reason) == (False, Reason.TLS_IDENTITY), foreign.detail
    assert "old.example" in foreign.detail
    env.trust_domain_aliases = frozenset({"old.example"})
    accepted = await probe(ctx, env, scheme)
    assert accepted.success, accepted.detail
