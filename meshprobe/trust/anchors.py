"""The roots we trust: a bundle read from PEM, its unusable certificates set aside with a reason.

Each source of roots (the bundle file, the trust ConfigMap, a target's own `ca_file`, the system
store) becomes one `TrustAnchors`; the chain verdict (`verdict`) and the identity document read
them. A certificate that cannot act as a root (not a CA, expired, a key too weak, inconsistent with
itself) is skipped and counted instead of failing the whole bundle: a bundle during a rotation
often carries one stale root.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

from meshprobe.model import CertRole, CertSummary
from meshprobe.trust.diagnose import self_signed
from meshprobe.trust.names import summarize
from meshprobe.trust.pem import read_pem_file, shown

__all__ = ["SkippedRoot", "TrustAnchors", "load_pem_bundle"]

log = structlog.get_logger(__name__)

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"
_SYSTEM_FALLBACK = "/etc/ssl/certs/ca-certificates.crt"
_NOTED_EXTRAS = 3  # extra certificates named in a verified chain's detail; the rest counted


def load_pem_bundle(data: bytes, *, source: str = "bundle") -> list[x509.Certificate]:
    """Parse a PEM bundle strictly: a half-broken trust bundle is a config error, not a subset."""
    if not data.strip():
        raise ValueError(f"{source}: empty, expected one or more PEM certificates")
    if _PEM_BEGIN not in data:
        raise ValueError(f"{source}: no '-----BEGIN CERTIFICATE-----' block found")
    try:
        with warnings.catch_warnings():
            # Old roots with non-positive serials still anchor real chains; don't warn on load.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"{source}: unparseable certificate: {exc}") from exc
    return certs


def _pem_blocks(data: bytes) -> Iterable[bytes]:
    start = data.find(_PEM_BEGIN)
    while start != -1:
        end = data.find(_PEM_END, start)
        if end == -1:
            return
        end += len(_PEM_END)
        yield data[start:end]
        start = data.find(_PEM_BEGIN, end)


@dataclass(frozen=True, slots=True)
class SkippedRoot:
    """A bundle certificate we could not use as an anchor, and why (public data only)."""

    subject: str
    fingerprint_sha256: str
    reason: str


def _unusable(cert: x509.Certificate) -> str | None:
    """Why a parsed certificate cannot anchor anything; the verifier would raise on it later."""
    try:
        _ = cert.extensions  # parses every extension: duplicates, bad name constraints, bad AKI
    except Exception as exc:
        return f"extensions cannot be parsed: {exc}"
    try:
        cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"public key cannot be loaded: {exc}"
    try:
        cert.subject.rfc4514_string()
    except ValueError as exc:
        return f"subject cannot be read: {exc}"
    return _self_inconsistent(cert)


def _self_inconsistent(cert: x509.Certificate) -> str | None:
    """A self-signed root whose authorityKeyIdentifier names another key than its own: broken
    issuance (RFC 5280 4.2.1.1), never a rollover (a rollover cross-certificate is not
    self-signed). The cheap checks come first; the signature is verified only on a mismatch."""
    if cert.issuer != cert.subject:
        return None
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return None
    if aki.key_identifier is None or aki.key_identifier == ski.digest or not self_signed(cert):
        return None
    return (
        "self-signed, but its authorityKeyIdentifier does not match its own "
        "subjectKeyIdentifier (RFC 5280 4.2.1.1)"
    )


def _sort_usable(
    certs: Iterable[x509.Certificate],
) -> tuple[dict[bytes, x509.Certificate], list[SkippedRoot]]:
    """Usable certificates by fingerprint (duplicates dropped) and the skipped ones."""
    unique: dict[bytes, x509.Certificate] = {}
    skipped: list[SkippedRoot] = []
    for cert in certs:
        fp = cert.fingerprint(hashes.SHA256())
        if fp in unique or any(s.fingerprint_sha256 == fp.hex() for s in skipped):
            continue
        reason = _unusable(cert)
        if reason is None:
            unique[fp] = cert
            continue
        try:
            subject = cert.subject.rfc4514_string()
        except ValueError:
            subject = "(unreadable subject)"
        skipped.append(SkippedRoot(subject, fp.hex(), reason))
    return unique, skipped


@dataclass(frozen=True)
class TrustAnchors:
    """The roots we trust, with the verifier's Store built once per bundle change.

    Building the Store parses and indexes every root; doing that per probe would dominate the cost
    of a verification, so probes share one immutable instance and a reload swaps it wholesale.
    `skipped_roots` are bundle certificates that parsed as PEM but cannot be used (hostile or
    malformed extensions); the loaders leave them out, log them once, and keep the rest.
    """

    roots: tuple[x509.Certificate, ...]
    source: str
    skipped_roots: tuple[SkippedRoot, ...] = ()
    _store: Store | None = field(init=False, repr=False, compare=False)
    _fingerprints: frozenset[str] = field(init=False, repr=False, compare=False)
    _by_subject: dict[x509.Name, tuple[x509.Certificate, ...]] = field(
        init=False, repr=False, compare=False
    )
    # Summaries made once per load, keyed by object identity: the verifier hands back the very
    # Certificate objects of the Store, so a verdict need not fingerprint or summarize its anchor.
    _summaries: dict[int, CertSummary] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_store", Store(list(self.roots)) if self.roots else None)
        summaries = {id(c): summarize(c, CertRole.ROOT, from_bundle=True) for c in self.roots}
        object.__setattr__(self, "_summaries", summaries)
        fps = frozenset(s.fingerprint_sha256 for s in summaries.values())
        object.__setattr__(self, "_fingerprints", fps)
        by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for root in self.roots:
            by_subject.setdefault(root.subject, []).append(root)
        index = {name: tuple(certs) for name, certs in by_subject.items()}
        object.__setattr__(self, "_by_subject", index)

    @property
    def skipped(self) -> int:
        """How many bundle certificates were left out (for a metric)."""
        return len(self.skipped_roots)

    @classmethod
    def usable(cls, certs: Iterable[x509.Certificate], *, source: str) -> TrustAnchors:
        """Anchors from parsed certificates: duplicates dropped, unusable ones skipped and logged
        in one warning. Never raises on a certificate's content."""
        with warnings.catch_warnings():
            # Old roots with non-positive serials still anchor real chains (the OS bundle has
            # some): cryptography warns on parsing them, and stderr is not the place.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            unique, skipped = _sort_usable(certs)
        if skipped:
            log.warning(
                "trust bundle certificates skipped",
                source=source,
                skipped=len(skipped),
                kept=len(unique),
                certificates=[
                    f"{s.subject} ({s.fingerprint_sha256[:16]}): {s.reason}" for s in skipped
                ],
            )
        return cls(tuple(unique.values()), source, tuple(skipped))

    @classmethod
    def from_pem(cls, data: bytes, *, source: str) -> TrustAnchors:
        """A bundle from PEM: unparseable PEM, or no usable certificate at all, is an error."""
        anchors = cls.usable(load_pem_bundle(data, source=source), source=source)
        if not anchors.roots:
            reasons = "; ".join(f"{s.subject}: {s.reason}" for s in anchors.skipped_roots)
            raise ValueError(f"{source}: no usable certificate ({reasons})")
        return anchors

    @classmethod
    def from_file(cls, path: str | Path) -> TrustAnchors:
        """Roots from a PEM file, read with the size and file-type checks of `pemfile`."""
        return cls.from_pem(read_pem_file(str(path)), source=shown(str(path)))

    @classmethod
    def system(cls) -> TrustAnchors:
        """The OS bundle, tolerant of entries cryptography refuses (we'd rather lose one root
        than the whole web PKI because a distribution ships an odd legacy certificate)."""
        paths = ssl.get_default_verify_paths()
        for candidate in (paths.cafile, paths.openssl_cafile, _SYSTEM_FALLBACK):
            if not candidate:
                continue
            try:
                data = Path(candidate).read_bytes()
            except OSError:
                continue
            certs: list[x509.Certificate] = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                for block in _pem_blocks(data):
                    try:
                        certs.append(x509.load_pem_x509_certificate(block))
                    except ValueError:
                        continue
            if certs:
                return cls.usable(certs, source=f"system:{candidate}")
        return cls((), "system:none")

    def fingerprints(self) -> frozenset[str]:
        return self._fingerprints

    def summary_of(self, root: x509.Certificate) -> CertSummary:
        """The summary of one of our roots (as the verifier returns it), from_bundle=True."""
        found = self._summaries.get(id(root))
        return found if found is not None else summarize(root, CertRole.ROOT, from_bundle=True)

    def issuers_named(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The roots whose subject is `name` (candidate issuers, signatures not checked)."""
        return self._by_subject.get(name, ())
