"""The verdict on a presented TLS chain, shared by the `tls` and `https` probes.

The handshake itself is done with verification off, so that a broken chain still yields a chain to
report; the verdict is then reached here, in one place, with `cryptography.x509.verification`
(blackbox_exporter's tls.go plays the same role with Go's x509). Doing it ourselves lets us say
*why* a chain fails in a closed set of reasons (untrusted, expired, identity) instead of parsing
OpenSSL error strings, and lets us accept mesh workload certificates that carry only a SPIFFE URI.

The verifier builds the path and judges validity on that path only: a server may send extra
certificates (an old cross-certificate during a root migration) that are reported, never failed
on. When no path verifies, `tlsdiagnose` names the cause. Per-certificate rules (keys, usages)
live in `tlspolicy`, name and SPIFFE matching in `tlsnames`.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder, Store

from meshprobe.model import CertRole, CertSummary, Reason, TLSReport
from meshprobe.trust.diagnose import diagnose, extension_error, self_signed, window_problem
from meshprobe.trust.names import clip, identity_of, identity_problem, summarize
from meshprobe.trust.pem import read_pem_file, shown
from meshprobe.trust.policy import CA_POLICY, EE_POLICY, cert_label, issuer_problems, leaf_problems

__all__ = ["SkippedRoot", "TrustAnchors", "assess_chain", "load_pem_bundle", "summarize"]

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


def _parse(
    chain_der: Sequence[bytes],
) -> tuple[list[x509.Certificate], list[CertSummary], str | None]:
    certs: list[x509.Certificate] = []
    summaries: list[CertSummary] = []
    for index, der in enumerate(chain_der):
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
            if index == 0:
                role = CertRole.LEAF
            else:
                role = CertRole.ROOT if self_signed(cert) else CertRole.INTERMEDIATE
            summary = summarize(cert, role)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            detail = f"certificate #{index} in the presented chain is unparseable: {exc}"
            return certs, summaries, detail
        certs.append(cert)
        summaries.append(summary)
    return certs, summaries, None


def _ignored_note(extras: Sequence[CertSummary], at: datetime) -> str:
    """Names the first few extras only: a server may send hundreds."""
    if not extras:
        return ""
    notes = []
    for s in extras[:_NOTED_EXTRAS]:
        problem = window_problem(s, at)
        notes.append(clip(problem if problem is not None else cert_label(s), 200))
    if len(extras) > _NOTED_EXTRAS:
        notes.append(f"and {len(extras) - _NOTED_EXTRAS:,} more")
    return f" (ignored, not on the verified path: {'; '.join(notes)})"


def assess_chain(
    chain_der: Sequence[bytes],
    *,
    anchors: TrustAnchors,
    server_name: str | None,
    expected_identity: str | None = None,
    trust_domain: str | None = None,
    trust_domain_aliases: frozenset[str] = frozenset(),
    now: datetime | None = None,
    version: str | None = None,
    cipher: str | None = None,
) -> TLSReport:
    """Judge a chain as presented by a server (leaf first); never raises on hostile input.

    Reasons are checked in a fixed order so each failure has one stable label: a credential that
    is not acceptable (untrusted, or expired on the only path there is) before identity (a name in
    an untrusted cert proves nothing). SPIFFE IDs in `trust_domain` or any of
    `trust_domain_aliases` are ours.
    """
    at = now if now is not None else datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)

    def report(
        reason: Reason | None,
        detail: str,
        chain: tuple[CertSummary, ...] = (),
        root: CertSummary | None = None,
        identity: str | None = None,
    ) -> TLSReport:
        return TLSReport(reason is None, reason, detail, chain, root, identity, version, cipher)

    if not chain_der:
        return report(Reason.TLS_UNTRUSTED, "server presented no certificate")
    try:
        with warnings.catch_warnings():
            # cryptography warns, on load and on access, about a non-positive serial: a rule of
            # ours judges it on the leaf, and a warning per probe would only flood the log.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs, summaries, error = _parse(chain_der)
            identity = identity_of(certs[0] if certs else None, summaries[0] if summaries else None)
            if error is not None:
                return report(Reason.TLS_UNTRUSTED, error, tuple(summaries), identity=identity)
            chain = tuple(summaries)
            sent_root = next((s for s in chain if s.role is CertRole.ROOT), None)
            if sent_root is None and self_signed(certs[0]):
                sent_root = summarize(certs[0], CertRole.ROOT)
            try:
                return _judge(
                    certs,
                    chain,
                    anchors=anchors,
                    at=at,
                    sent_root=sent_root,
                    identity=identity,
                    server_name=server_name,
                    expected_identity=expected_identity,
                    trust_domain=trust_domain,
                    trust_domain_aliases=trust_domain_aliases,
                    version=version,
                    cipher=cipher,
                )
            except Exception as exc:  # a verdict for every input, even one that trips a bug
                detail = f"the presented chain could not be judged: {type(exc).__name__}: {exc}"
                return report(Reason.TLS_UNTRUSTED, detail, chain, sent_root, identity)
    except Exception as exc:  # the same, before the chain could even be summarized
        detail = f"the presented chain could not be read: {type(exc).__name__}: {exc}"
        return report(Reason.TLS_UNTRUSTED, detail)


def _judge(
    certs: list[x509.Certificate],
    chain: tuple[CertSummary, ...],
    *,
    anchors: TrustAnchors,
    at: datetime,
    sent_root: CertSummary | None,
    identity: str | None,
    server_name: str | None,
    expected_identity: str | None,
    trust_domain: str | None,
    trust_domain_aliases: frozenset[str],
    version: str | None,
    cipher: str | None,
) -> TLSReport:
    def report(
        reason: Reason | None,
        detail: str,
        root: CertSummary | None,
        reported: tuple[CertSummary, ...] = chain,
    ) -> TLSReport:
        return TLSReport(reason is None, reason, detail, reported, root, identity, version, cipher)

    leaf, leaf_label = certs[0], cert_label(chain[0])
    malformed = extension_error(leaf)
    if malformed is not None:
        return report(
            Reason.TLS_UNTRUSTED, f"{leaf_label} has malformed extensions: {malformed}", sent_root
        )
    problems = leaf_problems(leaf, chain[0], leaf_label)

    if anchors._store is None:
        detail = f"no trust anchors loaded from {anchors.source}"
        if anchors.skipped:
            skipped = "; ".join(f"{s.subject!r}: {s.reason}" for s in anchors.skipped_roots[:3])
            detail += f" (skipped at load as unusable: {skipped})"
        return report(Reason.TLS_UNTRUSTED, "; ".join([*problems, detail]), sent_root)

    verifier = (
        PolicyBuilder()
        .store(anchors._store)
        .time(at)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )
    try:
        path = verifier.verify(leaf, certs[1:]).chain
    except Exception as exc:  # VerificationError, or anything odd in hostile input: a verdict
        found = diagnose(certs, chain, anchors=anchors, at=at, error=exc)
        if problems:  # the leaf is unacceptable whatever the path: say that first
            detail = "; ".join(problems) + f"; and: {found.detail}"
            return report(Reason.TLS_UNTRUSTED, detail, sent_root)
        root = found.anchor if found.reason is Reason.TLS_EXPIRED else sent_root
        return report(found.reason, found.detail, root)

    # The verifier returns the objects it was given: presented ones, then one of our roots.
    by_id = {id(c): s for c, s in zip(certs, chain, strict=True)}
    anchor_summary = anchors.summary_of(path[-1])
    if any(s.fingerprint_sha256 == anchor_summary.fingerprint_sha256 for s in chain):
        anchor_summary = replace(anchor_summary, from_bundle=False)  # the server sent it too
    path_summaries = [by_id.get(id(c)) or anchor_summary for c in path]
    on_path = {s.fingerprint_sha256 for s in path_summaries}
    reported = tuple(
        s if s.fingerprint_sha256 in on_path else replace(s, extra=True) for s in chain
    )
    for index, (cert, summary) in enumerate(zip(path, path_summaries, strict=True)):
        if index == 0:
            continue  # the leaf: judged above
        label = cert_label(summary)
        malformed = extension_error(cert)  # the verifier's own parser is more lenient than ours
        if malformed is not None:
            problems.append(f"{label} has malformed extensions: {malformed}")
            continue
        problems += issuer_problems(cert, label, anchor=index == len(path) - 1)
    if problems:
        return report(Reason.TLS_UNTRUSTED, "; ".join(problems), anchor_summary, reported)
    problem = identity_problem(
        chain[0],
        leaf_label,
        server_name=server_name,
        expected_identity=expected_identity,
        trust_domain=trust_domain,
        trust_domain_aliases=trust_domain_aliases,
    )
    if problem is not None:
        return report(Reason.TLS_IDENTITY, problem, anchor_summary, reported)
    extras = [s for s in reported if s.extra]
    return report(None, "verified" + _ignored_note(extras, at), anchor_summary, reported)
