"""Certificates `meshprobe.demo.pki` will not make: weak keys, odd usages, SHA-1 signatures,
malformed extensions. Everything is minted in the test that uses it; nothing is stored.

cryptography's builder refuses to sign with SHA-1 and to repeat an extension, so those two are
made by editing the DER of a certificate it did build (a few TLV helpers) and signing the edited
to-be-signed bytes with the issuer's key, which yields a correctly signed, hostile certificate.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshprobe.demo import pki

NOW = datetime.now(UTC)
ECDSA_SHA1 = bytes.fromhex("300906072a8648ce3d0401")  # AlgorithmIdentifier ecdsa-with-SHA1
_PLACEHOLDER_OID = bytes.fromhex("06032a0304")  # 1.2.3.4, as long as 2.5.29.17 (SAN)
_SAN_OID = bytes.fromhex("0603551d11")
BOTH_EKUS = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def der(*certs: x509.Certificate | pki.Issued) -> list[bytes]:
    return [(c.cert if isinstance(c, pki.Issued) else c).public_bytes(Encoding.DER) for c in certs]


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def leaf(
    issuer: pki.Issued,
    cn: str | None = "web.example",
    *,
    key: Any = None,
    dns: Sequence[str] = ("web.example",),
    uris: Sequence[str] = (),
    ips: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = BOTH_EKUS,
    san_critical: bool = False,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> pki.Issued:
    """A leaf under `issuer` with exactly the shape asked for (`key` any private key)."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn) if cn is not None else x509.Name([]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(hours=1))
        .not_valid_after(not_after or NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=san_critical)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return pki.Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def ca(
    issuer: pki.Issued | None,
    cn: str,
    *,
    key: Any = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> pki.Issued:
    """A CA (self-signed when `issuer` is None) with optional EKU and extra extensions."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    sign_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(issuer.cert.subject if issuer is not None else name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - timedelta(hours=1))
        .not_valid_after(not_after or NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return pki.Issued(builder.sign(sign_key, hashes.SHA256()), key)


# -- DER surgery -----------------------------------------------------------------------------------


def _read(data: bytes, at: int) -> tuple[int, int]:
    """(start of content, end of element) of the TLV starting at `at`."""
    length = data[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


def _children(element: bytes) -> list[bytes]:
    start, end = _read(element, 0)
    out, at = [], start
    while at < end:
        _, stop = _read(element, at)
        out.append(element[at:stop])
        at = stop
    return out


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _sign(tbs: bytes, algorithm: bytes, key: Any) -> x509.Certificate:
    sha1 = algorithm == ECDSA_SHA1
    digest = hashes.SHA1() if sha1 else hashes.SHA256()  # SHA-1: the hostile input under test
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), digest)
    else:
        signature = key.sign(tbs, ec.ECDSA(digest))
    with warnings.catch_warnings():  # a zero serial is the point of one of these
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(
            _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))
        )


def sha1_signed(cert: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """`cert` re-signed by `issuer_key` with ECDSA-with-SHA1 (its TBS says so too)."""
    parts = _children(cert.tbs_certificate_bytes)
    parts[2] = ECDSA_SHA1
    return _sign(_tlv(0x30, b"".join(parts)), ECDSA_SHA1, issuer_key)


def with_serial_zero(cert: x509.Certificate, issuer_key: Any) -> x509.Certificate:
    """`cert` with serial number 0 (which RFC 5280 forbids and the builder refuses), re-signed."""
    parts = _children(cert.tbs_certificate_bytes)
    parts[1] = bytes.fromhex("020100")
    algorithm = _children(cert.public_bytes(Encoding.DER))[1]
    return _sign(_tlv(0x30, b"".join(parts)), algorithm, issuer_key)


def with_duplicate_san(issuer: pki.Issued) -> x509.Certificate:
    """A correctly signed leaf carrying two subjectAltName extensions (RFC 5280 4.2 forbids)."""
    san = x509.SubjectAlternativeName([x509.DNSName("web.example")])
    twin = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), san.public_bytes())
    made = leaf(issuer, extensions=[(twin, False)])
    tbs = made.cert.tbs_certificate_bytes
    assert tbs.count(_PLACEHOLDER_OID) == 1
    algorithm = _children(made.cert.public_bytes(Encoding.DER))[1]
    return _sign(tbs.replace(_PLACEHOLDER_OID, _SAN_OID), algorithm, issuer.key)


def bad_name_constraints() -> tuple[x509.ExtensionType, bool]:
    """A nameConstraints extension permitting an iPAddress that is not in CIDR form."""
    value = bytes.fromhex("3008a006300487027f00")
    return x509.UnrecognizedExtension(x509.oid.ExtensionOID.NAME_CONSTRAINTS, value), True


def many_roots(count: int, *, label: str = "bulk root") -> list[x509.Certificate]:
    """`count` distinct self-signed CA roots, fast: one key for all (a signature per root, no key
    generation), distinct subjects and serials, one validity window so only fingerprints order
    them. A real bundle never shares a key like this; nothing here checks that."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = NOW - timedelta(hours=1), NOW + timedelta(days=3650)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    usage = pki.ca_key_usage()
    roots = []
    for i in range(count):
        subject = name(f"{label} {i:05d}")
        roots.append(
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(ski, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256())
        )
    return roots


def pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in certs)
