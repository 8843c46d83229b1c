"""Real X.509 material for `meshprobe demo` and the tests.

The demo and the tests must exercise the same verifier the daemon uses against a live mesh, so we
mint genuine chains shaped like the ones Istio and Linkerd issue (a long-lived root, a per-cluster
intermediate, short-lived workload leaves that may carry only a SPIFFE URI SAN) instead of mocking
the verdict. EC P-256 keys keep generation in the low milliseconds so tests can mint freely.
"""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "make_intermediate",
    "make_leaf",
    "make_root",
    "make_self_signed_leaf",
    "server_ssl_context",
    "write_bundle",
]

_SKEW = timedelta(hours=1)  # backdate so a freshly minted cert is valid on a slightly-behind clock


@dataclass(frozen=True)
class Issued:
    """A certificate together with its private key, so it can both serve and sign."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cn(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(
    not_before: datetime | None, not_after: datetime | None, lifetime: timedelta
) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = not_before if not_before is not None else now - _SKEW
    end = not_after if not_after is not None else now + lifetime
    return start, end


def ca_key_usage() -> x509.KeyUsage:
    """A CA's key usage: sign certificates and CRLs (and, as webpki wants, digital signatures)."""
    return _key_usage(ca=True)


def _leaf_key_usage() -> x509.KeyUsage:
    return _key_usage(ca=False)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    window: tuple[datetime, datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _aki(issuer: Issued) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def make_root(
    common_name: str, *, not_before: datetime | None = None, not_after: datetime | None = None
) -> Issued:
    """A self-signed trust anchor, long-lived like Istio's self-signed root or Linkerd's anchor."""
    key = _new_key()
    name = _cn(common_name)
    cert = (
        _builder(name, name, key.public_key(), _window(not_before, not_after, timedelta(days=3650)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def make_intermediate(
    issuer: Issued,
    common_name: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    path_length: int | None = 0,
) -> Issued:
    """A signing CA under `issuer`, the shape of Istio's per-cluster cacerts or Linkerd's issuer."""
    key = _new_key()
    cert = (
        _builder(
            _cn(common_name),
            issuer.cert.subject,
            key.public_key(),
            _window(not_before, not_after, timedelta(days=365)),
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(_aki(issuer), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def _san(
    dns_names: Sequence[str], ip_addresses: Sequence[str], uris: Sequence[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return names


def make_leaf(
    issuer: Issued,
    common_name: str | None,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    uris: Sequence[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A workload or web server certificate usable on both ends of mTLS.

    With `common_name=None` the subject is empty and the SAN is marked critical (RFC 5280 4.2.1.6),
    which is exactly what Istio workload certificates look like: a lone SPIFFE URI SAN.
    """
    names = _san(dns_names, ip_addresses, uris)
    if common_name is None and not names:
        raise ValueError("a leaf with an empty subject needs at least one SAN")
    key = _new_key()
    subject = _cn(common_name) if common_name is not None else x509.Name([])
    builder = (
        _builder(
            subject,
            issuer.cert.subject,
            key.public_key(),
            _window(not_before, not_after, timedelta(days=1)),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(_aki(issuer), critical=False)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=common_name is None
        )
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def make_self_signed_leaf(
    common_name: str, *, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()
) -> Issued:
    """A server certificate signed by its own key: the classic `tls_untrusted` case."""
    key = _new_key()
    name = _cn(common_name)
    builder = (
        _builder(name, name, key.public_key(), _window(None, None, timedelta(days=30)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    names = _san(dns_names, ip_addresses, ())
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(key, hashes.SHA256()), key)


def server_ssl_context(leaf: Issued, chain: Sequence[Issued] = ()) -> ssl.SSLContext:
    """A TLS server context presenting `leaf` then `chain` in order.

    `ssl` can only load keys from files, so they live in a private temporary directory for the
    duration of one `load_cert_chain` call and are removed right after.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="meshprobe-pki-") as tmp:
        cert_file = Path(tmp) / "chain.pem"
        key_file = Path(tmp) / "key.pem"
        cert_file.write_bytes(leaf.cert_pem() + b"".join(c.cert_pem() for c in chain))
        key_file.touch(mode=0o600)
        key_file.write_bytes(leaf.key_pem())
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def write_bundle(path: Path, roots: Sequence[Issued]) -> None:
    """Write a PEM trust bundle, the format of Istio's root-cert.pem and Linkerd's ca-bundle.crt."""
    path.write_bytes(b"".join(r.cert_pem() for r in roots))
