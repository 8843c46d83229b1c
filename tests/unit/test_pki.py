from __future__ import annotations

import ipaddress
import socket
import ssl
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshprobe.demo import pki


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_root("meshprobe test root")


@pytest.fixture(scope="module")
def inter(root: pki.Issued) -> pki.Issued:
    return pki.make_intermediate(root, "cluster1 intermediate")


def _ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def test_root_is_a_critical_ca_valid_for_years(root: pki.Issued) -> None:
    cert = root.cert
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and isinstance(bc.value, x509.BasicConstraints) and bc.value.ca
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign and ku.value.crl_sign
    _ext(cert, x509.SubjectKeyIdentifier)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    now = datetime.now(UTC)
    assert cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc > now + timedelta(days=365 * 9)


def test_root_honours_explicit_validity() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    end = datetime(2021, 1, 1, tzinfo=UTC)
    cert = pki.make_root("old", not_before=start, not_after=end).cert
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == end


def test_intermediate_chains_to_root(root: pki.Issued, inter: pki.Issued) -> None:
    cert = inter.cert
    cert.verify_directly_issued_by(root.cert)
    assert cert.issuer == root.cert.subject
    bc = _ext(cert, x509.BasicConstraints).value
    assert isinstance(bc, x509.BasicConstraints) and bc.ca and bc.path_length == 0
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    ski = _ext(root.cert, x509.SubjectKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    assert isinstance(ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ski.digest


def test_intermediate_path_length_none(root: pki.Issued) -> None:
    bc = _ext(pki.make_intermediate(root, "x", path_length=None).cert, x509.BasicConstraints)
    assert isinstance(bc.value, x509.BasicConstraints) and bc.value.path_length is None


def test_spiffe_leaf_has_empty_subject_and_critical_san(inter: pki.Issued) -> None:
    spiffe = "spiffe://cluster.local/ns/prod/sa/api"
    cert = pki.make_leaf(inter, None, uris=[spiffe]).cert
    assert len(cert.subject) == 0
    san = _ext(cert, x509.SubjectAlternativeName)
    assert san.critical
    assert isinstance(san.value, x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]
    eku = _ext(cert, x509.ExtendedKeyUsage).value
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = _ext(cert, x509.BasicConstraints).value
    assert isinstance(bc, x509.BasicConstraints) and not bc.ca
    cert.verify_directly_issued_by(inter.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(hours=24) < lifetime <= timedelta(hours=25)


def test_named_leaf_has_noncritical_dns_and_ip_sans(inter: pki.Issued) -> None:
    cert = pki.make_leaf(
        inter, "api.example", dns_names=["api.example"], ip_addresses=["127.0.1.1", "::1"]
    ).cert
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "api.example"
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert isinstance(san.value, x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["api.example"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.1.1"),
        ipaddress.ip_address("::1"),
    ]


def test_leaf_without_subject_or_san_is_refused(inter: pki.Issued) -> None:
    with pytest.raises(ValueError, match="SAN"):
        pki.make_leaf(inter, None)


def test_self_signed_leaf(root: pki.Issued) -> None:
    cert = pki.make_self_signed_leaf("self.example", dns_names=["self.example"]).cert
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    bc = _ext(cert, x509.BasicConstraints).value
    assert isinstance(bc, x509.BasicConstraints) and not bc.ca
    with pytest.raises(Exception):  # noqa: B017 - any failure: it was not signed by the root
        cert.verify_directly_issued_by(root.cert)


def test_key_pem_is_unencrypted_pkcs8_matching_the_cert(inter: pki.Issued) -> None:
    pem = inter.key_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert key.public_key() == inter.cert.public_key()
    assert x509.load_pem_x509_certificate(inter.cert_pem()) == inter.cert


def test_write_bundle_roundtrip(tmp_path: Path, root: pki.Issued) -> None:
    other = pki.make_root("other root")
    path = tmp_path / "ca-bundle.crt"
    pki.write_bundle(path, [root, other])
    assert x509.load_pem_x509_certificates(path.read_bytes()) == [root.cert, other.cert]


def test_server_context_presents_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root: pki.Issued, inter: pki.Issued
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    leaf = pki.make_leaf(inter, "svc.example", dns_names=["svc.example"])
    server_ctx = pki.server_ssl_context(leaf, [inter])
    assert list(tmp_path.iterdir()) == []  # key material removed right after loading

    client_ctx = ssl.create_default_context(cadata=root.cert_pem().decode())
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True) as s:
                s.sendall(b"ok")
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        # The client trusts only the root: the handshake succeeds only if the intermediate is sent.
        with client_ctx.wrap_socket(a, server_hostname="svc.example") as c:
            assert c.recv(2) == b"ok"
            der = c.getpeercert(binary_form=True)
            assert der is not None
            assert x509.load_der_x509_certificate(der) == leaf.cert
    finally:
        thread.join(5)
        b.close()
    assert errors == []
