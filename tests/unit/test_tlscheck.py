from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshprobe.demo import pki
from meshprobe.model import CertRole, Reason
from meshprobe.trust.anchors import TrustAnchors, load_pem_bundle
from meshprobe.trust.names import summarize
from meshprobe.trust.verdict import assess_chain

SPIFFE = "spiffe://cluster.local/ns/production/sa/api-server"
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def web_leaf(inter: pki.Issued) -> pki.Issued:
    return pki.make_leaf(inter, "api.example.com", dns_names=["api.example.com", "*.api.example"])


@pytest.fixture(scope="module")
def mesh_leaf(inter: pki.Issued) -> pki.Issued:
    return pki.make_leaf(inter, None, uris=[SPIFFE])


def der(*issued: pki.Issued) -> list[bytes]:
    return [i.cert.public_bytes(serialization.Encoding.DER) for i in issued]


def fp(issued: pki.Issued) -> str:
    return issued.cert.fingerprint(hashes.SHA256()).hex()


def custom_leaf(
    issuer: pki.Issued, *, eku: Sequence[x509.ObjectIdentifier] | None, ca: bool = False
) -> pki.Issued:
    """A leaf shaped unlike pki.make_leaf: the EKU sets of ordinary web servers and oddities."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web.example")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("web.example")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return pki.Issued(builder.sign(issuer.key, hashes.SHA256()), key)


# --- good chains -----------------------------------------------------------------------------


def test_good_dns_chain_verifies(
    root: pki.Issued, inter: pki.Issued, web_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(web_leaf, inter),
        anchors=anchors,
        server_name="api.example.com",
        version="TLSv1.3",
        cipher="TLS_AES_128_GCM_SHA256",
    )
    assert rep.verified, rep.detail
    assert rep.reason is None
    assert [c.role for c in rep.chain] == [CertRole.LEAF, CertRole.INTERMEDIATE]
    assert rep.chain[0].fingerprint_sha256 == fp(web_leaf)
    assert rep.root is not None
    assert rep.root.fingerprint_sha256 == fp(root)
    assert rep.root.from_bundle and rep.root.role is CertRole.ROOT
    assert rep.identity == "api.example.com"
    assert (rep.version, rep.cipher) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")


def test_spiffe_only_leaf_verifies_without_hostname_check(
    inter: pki.Issued, mesh_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(mesh_leaf, inter),
        anchors=anchors,
        server_name="api-server.production.svc.cluster.local",
        expected_identity=SPIFFE,
        trust_domain="cluster.local",
    )
    assert rep.verified, rep.detail
    assert rep.identity == SPIFFE
    assert rep.chain[0].subject == ""
    assert rep.chain[0].uris == (SPIFFE,)


def test_server_sending_the_root_marks_it_not_from_bundle(
    root: pki.Issued, inter: pki.Issued, web_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(der(web_leaf, inter, root), anchors=anchors, server_name="api.example.com")
    assert rep.verified, rep.detail
    assert [c.role for c in rep.chain] == [CertRole.LEAF, CertRole.INTERMEDIATE, CertRole.ROOT]
    assert rep.root is not None and not rep.root.from_bundle
    assert rep.root.fingerprint_sha256 == fp(root)


@pytest.mark.parametrize(
    "eku",
    [[ExtendedKeyUsageOID.SERVER_AUTH], None, [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]],
)
def test_web_certs_without_client_auth_eku_verify(
    inter: pki.Issued, anchors: TrustAnchors, eku: list[x509.ObjectIdentifier] | None
) -> None:
    leaf = custom_leaf(inter, eku=eku)
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="web.example")
    assert rep.verified, rep.detail


def test_leaf_with_unrelated_eku_is_untrusted(inter: pki.Issued, anchors: TrustAnchors) -> None:
    leaf = custom_leaf(inter, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="web.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "serverAuth" in rep.detail


def test_ca_cert_presented_as_leaf_is_untrusted(inter: pki.Issued, anchors: TrustAnchors) -> None:
    leaf = custom_leaf(inter, eku=None, ca=True)
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="web.example")
    assert rep.reason is Reason.TLS_UNTRUSTED


def test_leaf_used_as_issuer_is_untrusted(inter: pki.Issued, anchors: TrustAnchors) -> None:
    fake_ca = pki.make_leaf(inter, "fake-ca", dns_names=["fake-ca.example"])
    leaf = pki.make_leaf(fake_ca, "victim.example", dns_names=["victim.example"])
    rep = assess_chain(der(leaf, fake_ca, inter), anchors=anchors, server_name="victim.example")
    assert not rep.verified
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "basicConstraints" in rep.detail


# --- untrusted ---------------------------------------------------------------------------------


def test_empty_chain_is_untrusted(anchors: TrustAnchors) -> None:
    rep = assess_chain([], anchors=anchors, server_name="x")
    assert not rep.verified and rep.reason is Reason.TLS_UNTRUSTED
    assert rep.chain == () and rep.root is None and rep.identity is None


def test_self_signed_is_untrusted_and_reported_as_root(anchors: TrustAnchors) -> None:
    leaf = pki.make_self_signed_leaf("self.example", dns_names=["self.example"])
    rep = assess_chain(der(leaf), anchors=anchors, server_name="self.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "test-bundle" in rep.detail
    assert rep.root is not None and rep.root.fingerprint_sha256 == fp(leaf)
    assert not rep.root.from_bundle
    assert rep.identity == "self.example"


def test_chain_from_another_ca_is_untrusted(anchors: TrustAnchors) -> None:
    other_root = pki.make_root("other mesh root")
    other_inter = pki.make_intermediate(other_root, "cluster2 intermediate")
    leaf = pki.make_leaf(other_inter, None, uris=[SPIFFE])
    rep = assess_chain(der(leaf, other_inter), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "'CN=other mesh root'" in rep.detail and "not in trust bundle" in rep.detail
    assert rep.root is None
    assert rep.identity == SPIFFE  # still reported, for the peer-info metric and logs
    # The server sending its own (foreign) root makes that root the reported one.
    rep = assess_chain(der(leaf, other_inter, other_root), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert rep.root is not None and rep.root.fingerprint_sha256 == fp(other_root)


def test_missing_intermediate_is_untrusted(mesh_leaf: pki.Issued, anchors: TrustAnchors) -> None:
    rep = assess_chain(der(mesh_leaf), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED


def test_empty_anchor_set_is_untrusted(inter: pki.Issued, mesh_leaf: pki.Issued) -> None:
    rep = assess_chain(der(mesh_leaf, inter), anchors=TrustAnchors((), "nothing"), server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "no trust anchors" in rep.detail


@pytest.mark.parametrize("garbage", [b"", b"garbage", b"\x30\x03\x02\x01\x00"])
def test_garbage_der_never_raises(garbage: bytes, anchors: TrustAnchors) -> None:
    rep = assess_chain([garbage], anchors=anchors, server_name="x")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "unparseable" in rep.detail and "#0" in rep.detail


def test_garbage_after_a_good_leaf(web_leaf: pki.Issued, anchors: TrustAnchors) -> None:
    rep = assess_chain([*der(web_leaf), b"\x00junk"], anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "#1" in rep.detail
    assert len(rep.chain) == 1 and rep.identity == "api.example.com"


# --- expiry ------------------------------------------------------------------------------------


def test_expired_leaf(inter: pki.Issued, anchors: TrustAnchors) -> None:
    leaf = pki.make_leaf(
        inter,
        "old.example",
        dns_names=["old.example"],
        not_before=NOW - timedelta(days=2),
        not_after=NOW - timedelta(days=1),
    )
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="old.example")
    assert rep.reason is Reason.TLS_EXPIRED
    assert "leaf 'CN=old.example' expired" in rep.detail


def test_not_yet_valid_leaf(
    inter: pki.Issued, mesh_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(mesh_leaf, inter), anchors=anchors, server_name=None, now=NOW - timedelta(days=1)
    )
    assert rep.reason is Reason.TLS_EXPIRED
    assert "not valid before" in rep.detail and SPIFFE in rep.detail


def test_expired_intermediate(root: pki.Issued, anchors: TrustAnchors) -> None:
    old_inter = pki.make_intermediate(
        root,
        "lapsed issuer",
        not_before=NOW - timedelta(days=400),
        not_after=NOW - timedelta(days=1),
    )
    leaf = pki.make_leaf(old_inter, None, uris=[SPIFFE])
    rep = assess_chain(der(leaf, old_inter), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_EXPIRED
    assert "intermediate 'CN=lapsed issuer' expired" in rep.detail


def test_expired_anchor_from_bundle() -> None:
    old_root = pki.make_root(
        "lapsed root", not_before=NOW - timedelta(days=3650), not_after=NOW - timedelta(days=1)
    )
    inter = pki.make_intermediate(old_root, "cluster1 intermediate")
    leaf = pki.make_leaf(inter, None, uris=[SPIFFE])
    anchors = TrustAnchors.from_pem(old_root.cert_pem(), source="old-bundle")
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_EXPIRED
    assert "root 'CN=lapsed root' expired" in rep.detail
    assert rep.root is not None and rep.root.from_bundle
    assert rep.root.fingerprint_sha256 == fp(old_root)


def test_naive_now_is_taken_as_utc(
    inter: pki.Issued, web_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    later = (NOW + timedelta(days=2)).replace(tzinfo=None)
    rep = assess_chain(der(web_leaf, inter), anchors=anchors, server_name=None, now=later)
    assert rep.reason is Reason.TLS_EXPIRED


def test_earliest_expiry_per_role(root: pki.Issued, anchors: TrustAnchors) -> None:
    inter = pki.make_intermediate(root, "short issuer", not_after=NOW + timedelta(days=30))
    leaf = pki.make_leaf(inter, None, uris=[SPIFFE], not_after=NOW + timedelta(hours=5))
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name=None)
    assert rep.verified, rep.detail
    assert rep.earliest_expiry() == {
        CertRole.LEAF: leaf.cert.not_valid_after_utc.timestamp(),
        CertRole.INTERMEDIATE: inter.cert.not_valid_after_utc.timestamp(),
        CertRole.ROOT: root.cert.not_valid_after_utc.timestamp(),
    }


# --- identity ----------------------------------------------------------------------------------


def test_spiffe_identity_mismatch(
    inter: pki.Issued, mesh_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(mesh_leaf, inter),
        anchors=anchors,
        server_name=None,
        expected_identity="spiffe://cluster.local/ns/production/sa/other",
    )
    assert rep.reason is Reason.TLS_IDENTITY
    assert SPIFFE in rep.detail
    assert rep.root is not None  # the chain did verify: the root is still known


@pytest.mark.parametrize(
    ("expected", "ok"),
    [
        ("api.example.com", True),
        ("API.Example.com.", True),
        ("x.api.example", True),
        ("a.b.api.example", False),
        ("api.example", False),
        ("other.example.com", False),
        (SPIFFE, False),
    ],
)
def test_dns_identity(
    inter: pki.Issued, web_leaf: pki.Issued, anchors: TrustAnchors, expected: str, ok: bool
) -> None:
    rep = assess_chain(
        der(web_leaf, inter), anchors=anchors, server_name="ignored", expected_identity=expected
    )
    assert rep.verified is ok, rep.detail
    assert rep.reason is (None if ok else Reason.TLS_IDENTITY)


def test_ip_identity_and_ip_server_name(inter: pki.Issued, anchors: TrustAnchors) -> None:
    leaf = pki.make_leaf(inter, "gw", ip_addresses=["127.0.2.1"])
    ok = assess_chain(der(leaf, inter), anchors=anchors, server_name="127.0.2.1")
    assert ok.verified, ok.detail
    ok = assess_chain(
        der(leaf, inter), anchors=anchors, server_name=None, expected_identity="127.0.2.1"
    )
    assert ok.verified, ok.detail
    bad = assess_chain(der(leaf, inter), anchors=anchors, server_name="127.0.1.1")
    assert bad.reason is Reason.TLS_IDENTITY


def test_hostname_mismatch_without_expected_identity(
    inter: pki.Issued, web_leaf: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(der(web_leaf, inter), anchors=anchors, server_name="evil.example.com")
    assert rep.reason is Reason.TLS_IDENTITY
    assert "evil.example.com" in rep.detail


def test_trust_domain_mismatch(inter: pki.Issued, anchors: TrustAnchors) -> None:
    foreign = "spiffe://cluster2.local/ns/production/sa/api-server"
    leaf = pki.make_leaf(inter, None, uris=[foreign])
    rep = assess_chain(
        der(leaf, inter), anchors=anchors, server_name=None, trust_domain="cluster.local"
    )
    assert rep.reason is Reason.TLS_IDENTITY
    assert "cluster.local" in rep.detail
    same = assess_chain(
        der(leaf, inter), anchors=anchors, server_name=None, trust_domain="Cluster2.local"
    )
    assert same.verified, same.detail


# --- rotation and anchors ------------------------------------------------------------------------


def test_bundle_with_two_roots_accepts_both(tmp_path: Path) -> None:
    old, new = pki.make_root("root 2024"), pki.make_root("root 2025")
    path = tmp_path / "ca-bundle.crt"
    pki.write_bundle(path, [old, new])
    anchors = TrustAnchors.from_file(path)
    assert anchors.source == str(path)
    assert anchors.fingerprints() == {fp(old), fp(new)}
    for r in (old, new):
        inter = pki.make_intermediate(r, f"issuer under {r.cert.subject.rfc4514_string()}")
        leaf = pki.make_leaf(inter, None, uris=[SPIFFE])
        rep = assess_chain(der(leaf, inter), anchors=anchors, server_name=None)
        assert rep.verified, rep.detail
        assert rep.root is not None and rep.root.fingerprint_sha256 == fp(r)


def test_from_pem_deduplicates(root: pki.Issued) -> None:
    anchors = TrustAnchors.from_pem(root.cert_pem() * 2, source="dup")
    assert anchors.roots == (root.cert,)


def test_from_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"absent\.pem: no such file"):
        TrustAnchors.from_file(tmp_path / "absent.pem")


def test_system_anchors_load_without_warnings() -> None:
    anchors = TrustAnchors.system()
    assert anchors.source.startswith("system:")
    assert len(anchors.fingerprints()) == len(anchors.roots)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"hello world", "no '-----BEGIN CERTIFICATE-----'"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "unparseable certificate",
        ),
    ],
)
def test_load_pem_bundle_errors(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        load_pem_bundle(data, source="trust.bundle_file")
    assert str(info.value).startswith("trust.bundle_file: ")


def test_load_pem_bundle_ok(root: pki.Issued, inter: pki.Issued) -> None:
    assert load_pem_bundle(root.cert_pem() + inter.cert_pem()) == [root.cert, inter.cert]


def test_summarize(inter: pki.Issued) -> None:
    leaf = pki.make_leaf(
        inter, "svc", dns_names=["svc.example"], ip_addresses=["10.0.0.1"], uris=[SPIFFE]
    )
    s = summarize(leaf.cert, CertRole.LEAF)
    assert s.subject == "CN=svc"
    assert s.issuer == "CN=cluster1 intermediate"
    assert s.not_after == leaf.cert.not_valid_after_utc.timestamp()
    assert s.not_before == leaf.cert.not_valid_before_utc.timestamp()
    assert s.fingerprint_sha256 == fp(leaf) and len(s.fingerprint_sha256) == 64
    assert s.fingerprint_sha256 == s.fingerprint_sha256.lower()
    assert (s.dns_names, s.uris, s.ip_addresses) == (("svc.example",), (SPIFFE,), ("10.0.0.1",))
    assert s.role is CertRole.LEAF and not s.from_bundle
