"""Per-certificate rules: a server certificate's usages, key strength, serial, SAN criticality."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from meshprobe.demo import pki
from meshprobe.model import Reason
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.verdict import assess_chain
from tests import certkit
from tests.certkit import der

SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
SPIFFE = "spiffe://cluster.local/ns/mesh/sa/echo"


def judge(leaf: pki.Issued, inter: pki.Issued, anchors: TrustAnchors, **kw: Any) -> Any:
    kw.setdefault("server_name", "web.example")
    return assess_chain(der(leaf, inter), anchors=anchors, **kw)


# -- extended key usage ------------------------------------------------------------------------


def test_client_only_leaf_is_not_a_server(inter: pki.Issued, anchors: TrustAnchors) -> None:
    rep = judge(certkit.leaf(inter, eku=[CLIENT]), inter, anchors)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert (
        "leaf 'CN=web.example' has extendedKeyUsage [clientAuth] without serverAuth" in rep.detail
    )


def test_client_only_spiffe_leaf_fails_even_with_the_right_identity(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter, None, dns=(), uris=[SPIFFE], eku=[CLIENT], san_critical=True)
    rep = judge(leaf, inter, anchors, expected_identity=SPIFFE, trust_domain="cluster.local")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "[clientAuth]" in rep.detail


@pytest.mark.parametrize(
    "eku",
    [
        [SERVER, CLIENT],  # an X.509-SVID
        [SERVER],  # an ordinary web server
        [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE],
        None,  # no EKU: any usage (RFC 5280 4.2.1.12)
    ],
)
def test_leaves_usable_as_servers_verify(
    inter: pki.Issued, anchors: TrustAnchors, eku: list[x509.ObjectIdentifier] | None
) -> None:
    rep = judge(certkit.leaf(inter, eku=eku), inter, anchors)
    assert rep.verified, rep.detail


def test_critical_eku_is_accepted_for_svids(inter: pki.Issued, anchors: TrustAnchors) -> None:
    eku = x509.ExtendedKeyUsage([SERVER, CLIENT])
    rep = judge(certkit.leaf(inter, eku=None, extensions=[(eku, True)]), inter, anchors)
    assert rep.verified, rep.detail


def test_intermediate_limited_to_client_auth_cannot_vouch_for_a_server(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    client_ca = certkit.ca(root, "client-only CA", eku=[CLIENT])
    rep = judge(certkit.leaf(client_ca), client_ca, anchors)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "'CN=client-only CA' has extendedKeyUsage [clientAuth]" in rep.detail


# -- keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_key", "expected"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "has a 1024-bit RSA key; at least 2048"),
        (lambda: ec.generate_private_key(ec.SECP192R1()), "has an EC key on secp192r1"),
        (lambda: dsa.generate_private_key(1024), "has a DSA key"),
    ],
    ids=["rsa-1024", "p-192", "dsa"],
)
def test_weak_leaf_keys_fail_and_are_named(
    inter: pki.Issued, anchors: TrustAnchors, make_key: Any, expected: str
) -> None:
    rep = judge(certkit.leaf(inter, key=make_key()), inter, anchors)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert f"leaf 'CN=web.example' {expected}" in rep.detail


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(65537, 2048),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate,
    ],
    ids=["rsa-2048", "p-384", "ed25519"],
)
def test_strong_leaf_keys_verify(inter: pki.Issued, anchors: TrustAnchors, make_key: Any) -> None:
    rep = judge(certkit.leaf(inter, key=make_key()), inter, anchors)
    assert rep.verified, rep.detail


def test_weak_leaf_key_is_named_even_when_the_ca_is_unknown(anchors: TrustAnchors) -> None:
    other = pki.make_intermediate(pki.make_root("other root"), "other intermediate")
    weak = certkit.leaf(other, key=rsa.generate_private_key(65537, 1024))
    rep = judge(weak, other, anchors)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "1024-bit RSA key" in rep.detail and "'CN=other root'" in rep.detail


# -- structure -------------------------------------------------------------------------------------


def test_zero_serial_leaf_fails(inter: pki.Issued, anchors: TrustAnchors) -> None:
    zero = certkit.with_serial_zero(certkit.leaf(inter).cert, inter.key)
    rep = assess_chain(der(zero, inter), anchors=anchors, server_name="web.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "leaf 'CN=web.example' has serial number 0" in rep.detail


def test_empty_subject_needs_a_critical_san(inter: pki.Issued, anchors: TrustAnchors) -> None:
    loose = certkit.leaf(inter, None, dns=(), uris=[SPIFFE], san_critical=False)
    rep = judge(loose, inter, anchors, expected_identity=SPIFFE)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "empty subject and a non-critical subjectAltName" in rep.detail
    strict = certkit.leaf(inter, None, dns=(), uris=[SPIFFE], san_critical=True)
    assert judge(strict, inter, anchors, expected_identity=SPIFFE).verified


def test_critical_san_with_a_subject_is_accepted(inter: pki.Issued, anchors: TrustAnchors) -> None:
    # Istio marks the SAN critical even when it also sets a CN (dual-use certificates).
    rep = judge(certkit.leaf(inter, san_critical=True), inter, anchors)
    assert rep.verified, rep.detail


def test_non_critical_policy_constraints_on_an_intermediate_fail(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    pc = x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0)
    loose = certkit.ca(root, "loose CA", extensions=[(pc, False)])
    rep = judge(certkit.leaf(loose), loose, anchors)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "intermediate 'CN=loose CA' has a non-critical policyConstraints" in rep.detail
    # (A critical one is refused too, by cryptography, as an unsupported critical extension.)
    plain = certkit.ca(root, "plain CA")
    assert judge(certkit.leaf(plain), plain, anchors).verified
