"""The verdict on a presented TLS chain, shared by the `tls` and `https` probes.

The handshake itself is done with verification off, so that a broken chain still yields a chain to
report; the verdict is then reached here, in one place, with `cryptography.x509.verification`
(blackbox_exporter's tls.go plays the same role with Go's x509). Doing it ourselves lets us say
*why* a chain fails in a closed set of reasons (untrusted, expired, identity) instead of parsing
OpenSSL error strings, and lets us accept mesh workload certificates that carry only a SPIFFE URI.
"""

from __future__ import annotations

import ipaddress
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)

from meshprobe.model import CertRole, CertSummary, Reason, TLSReport

__all__ = ["TrustAnchors", "assess_chain", "load_pem_bundle", "summarize"]

_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"
_SYSTEM_FALLBACK = "/etc/ssl/certs/ca-certificates.crt"
_TLS_EKUS = frozenset(
    {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
)


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


def _general_names(cert: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], []
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    uris = [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return dns, uris, ips


def summarize(cert: x509.Certificate, role: CertRole, *, from_bundle: bool = False) -> CertSummary:
    """Reduce a certificate to the public facts we export and print."""
    dns, uris, ips = _general_names(cert)
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        role=role,
        dns_names=tuple(dns),
        uris=tuple(uris),
        ip_addresses=tuple(ips),
        from_bundle=from_bundle,
    )


@dataclass(frozen=True)
class TrustAnchors:
    """The roots we trust, with the verifier's Store built once per bundle change.

    Building the Store parses and indexes every root; doing that per probe would dominate the cost
    of a verification, so probes share one immutable instance and a reload swaps it wholesale.
    """

    roots: tuple[x509.Certificate, ...]
    source: str
    _store: Store | None = field(init=False, repr=False, compare=False)
    _fingerprints: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_store", Store(list(self.roots)) if self.roots else None)
        fps = frozenset(c.fingerprint(hashes.SHA256()).hex() for c in self.roots)
        object.__setattr__(self, "_fingerprints", fps)

    @classmethod
    def from_pem(cls, data: bytes, *, source: str) -> TrustAnchors:
        unique: dict[bytes, x509.Certificate] = {}
        for cert in load_pem_bundle(data, source=source):
            unique.setdefault(cert.fingerprint(hashes.SHA256()), cert)
        return cls(tuple(unique.values()), source)

    @classmethod
    def from_file(cls, path: str | Path) -> TrustAnchors:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ValueError(f"{p}: cannot read trust bundle: {exc.strerror or exc}") from exc
        return cls.from_pem(data, source=str(p))

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
            certs: dict[bytes, x509.Certificate] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                for block in _pem_blocks(data):
                    try:
                        cert = x509.load_pem_x509_certificate(block)
                    except ValueError:
                        continue
                    certs.setdefault(cert.fingerprint(hashes.SHA256()), cert)
            if certs:
                return cls(tuple(certs.values()), f"system:{candidate}")
        return cls((), "system:none")

    def fingerprints(self) -> frozenset[str]:
        return self._fingerprints


def _eku_permits_tls(
    _policy: Policy, _cert: x509.Certificate, ext: x509.ExtendedKeyUsage | None
) -> None:
    # No EKU at all means any usage (RFC 5280 4.2.1.12).
    if ext is not None and _TLS_EKUS.isdisjoint(ext):
        raise ValueError("extendedKeyUsage permits neither serverAuth nor clientAuth")


# Why a client verifier with adjusted extension policies:
# - `build_server_verifier` needs a DNS/IP subject to match, and an Istio/Linkerd workload leaf has
#   only a `spiffe://` URI SAN, so it can never pass; identity is checked by us afterwards instead.
# - `build_client_verifier` does not match a subject, but its webpki defaults demand the clientAuth
#   EKU, which rejects ordinary web servers (serverAuth only). So the EE policy accepts serverAuth,
#   clientAuth, anyExtendedKeyUsage or no EKU, and tolerates a missing SAN or AKI (SPIFFE leaves
#   and older servers vary). Everything else in the webpki EE defaults stays, notably that a leaf
#   must not assert basicConstraints.cA.
# - The CA policy stays webpki's (cA asserted, keyCertSign, path length, ...), so a leaf cannot
#   act as an issuer; only its EKU check is widened the same way, because web intermediates often
#   carry serverAuth alone.
_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_permits_tls)
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_permits_tls
)


def _self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _label(s: CertSummary) -> str:
    name = s.subject or next(iter(s.uris + s.dns_names + s.ip_addresses), "") or "(empty subject)"
    return f"{s.role.value} {name!r}"


def _window_problem(s: CertSummary, ts: float) -> str | None:
    if ts > s.not_after:
        return f"{_label(s)} expired at {_iso(s.not_after)}"
    if ts < s.not_before:
        return f"{_label(s)} not valid before {_iso(s.not_before)}"
    return None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dns_match(pattern: str, name: str) -> bool:
    p = pattern.lower().rstrip(".")
    n = name.lower().rstrip(".")
    if p.startswith("*."):
        suffix = p[1:]  # ".example.com"; a wildcard covers exactly one label, never a bare TLD
        head = n[: -len(suffix)]
        return suffix.count(".") >= 2 and n.endswith(suffix) and bool(head) and "." not in head
    return p == n


def _name_matches(name: str, leaf: CertSummary) -> bool:
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return any(_dns_match(d, name) for d in leaf.dns_names)
    return any(ipaddress.ip_address(a) == ip for a in leaf.ip_addresses)


def _spiffe_ids(leaf: CertSummary) -> list[str]:
    return [u for u in leaf.uris if u.lower().startswith("spiffe://")]


def _trust_domain(spiffe_id: str) -> str:
    return spiffe_id[len("spiffe://") :].split("/", 1)[0].lower()


def _identity_problem(
    leaf: CertSummary,
    server_name: str | None,
    expected_identity: str | None,
    trust_domain: str | None,
) -> str | None:
    spiffe = _spiffe_ids(leaf)
    if expected_identity is not None:
        if expected_identity.lower().startswith("spiffe://"):
            if expected_identity not in spiffe:
                return f"expected {expected_identity}, leaf has URI SANs {list(leaf.uris)}"
        elif not _name_matches(expected_identity, leaf):
            return (
                f"expected {expected_identity}, leaf has DNS SANs {list(leaf.dns_names)} "
                f"and IP SANs {list(leaf.ip_addresses)}"
            )
    elif (
        server_name
        and (leaf.dns_names or leaf.ip_addresses)
        and not _name_matches(server_name, leaf)
    ):
        return (
            f"server name {server_name} not in leaf DNS SANs {list(leaf.dns_names)} "
            f"or IP SANs {list(leaf.ip_addresses)}"
        )
    if trust_domain is not None:
        want = trust_domain.lower()
        foreign = [s for s in spiffe if _trust_domain(s) != want]
        if foreign:
            return f"leaf SPIFFE ID {foreign[0]} is outside trust domain {trust_domain}"
    return None


def _identity_of(leaf: x509.Certificate | None, summary: CertSummary | None) -> str | None:
    if leaf is None or summary is None:
        return None
    spiffe = _spiffe_ids(summary)
    if spiffe:
        return spiffe[0]
    if summary.dns_names:
        return summary.dns_names[0]
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


def _anchors_for(cert: x509.Certificate, anchors: TrustAnchors) -> list[x509.Certificate]:
    found = []
    for root in anchors.roots:
        if root.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        found.append(root)
    return found


def assess_chain(
    chain_der: Sequence[bytes],
    *,
    anchors: TrustAnchors,
    server_name: str | None,
    expected_identity: str | None = None,
    trust_domain: str | None = None,
    now: datetime | None = None,
    version: str | None = None,
    cipher: str | None = None,
) -> TLSReport:
    """Judge a chain as presented by a server (leaf first); never raises on hostile input.

    Reasons are checked in a fixed order so each failure has one stable label: expired before
    untrusted (an expired cert is the more actionable cause), untrusted before identity (a name
    in an untrusted cert proves nothing).
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

    certs: list[x509.Certificate] = []
    summaries: list[CertSummary] = []
    for index, der in enumerate(chain_der):
        try:
            cert = x509.load_der_x509_certificate(bytes(der))
            if index == 0:
                role = CertRole.LEAF
            else:
                role = CertRole.ROOT if _self_signed(cert) else CertRole.INTERMEDIATE
            summary = summarize(cert, role)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            return report(
                Reason.TLS_UNTRUSTED,
                f"certificate #{index} in the presented chain is unparseable: {exc}",
                tuple(summaries),
                identity=_identity_of(
                    certs[0] if certs else None, summaries[0] if summaries else None
                ),
            )
        certs.append(cert)
        summaries.append(summary)

    chain = tuple(summaries)
    leaf, leaf_summary = certs[0], summaries[0]
    identity = _identity_of(leaf, leaf_summary)
    presented_fps = {s.fingerprint_sha256 for s in chain}
    sent_root = next((s for s in chain if s.role is CertRole.ROOT), None)
    if sent_root is None and _self_signed(leaf):
        sent_root = summarize(leaf, CertRole.ROOT)

    ts = at.timestamp()
    problems = [p for p in (_window_problem(s, ts) for s in chain) if p is not None]
    if problems:
        return report(Reason.TLS_EXPIRED, "; ".join(problems), chain, sent_root, identity)

    if anchors._store is None:
        detail = f"no trust anchors loaded from {anchors.source}"
        return report(Reason.TLS_UNTRUSTED, detail, chain, sent_root, identity)

    verifier = (
        PolicyBuilder()
        .store(anchors._store)
        .time(at)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(leaf, certs[1:])
    except Exception as exc:  # VerificationError, or anything odd in hostile input: a verdict
        # The verifier reports an expired anchor as a generic failure; name it when that is why.
        issuers = [
            summarize(r, CertRole.ROOT, from_bundle=True)
            for c in certs
            for r in _anchors_for(c, anchors)
        ]
        lapsed = [(r, _window_problem(r, ts)) for r in issuers]
        if issuers and all(problem is not None for _, problem in lapsed):
            root, problem = lapsed[0]
            detail = f"{problem} (trust bundle {anchors.source})"
            return report(Reason.TLS_EXPIRED, detail, chain, root, identity)
        detail = f"{exc} (trust bundle {anchors.source})"
        if not issuers:  # the usual CA-drift case: say which issuer we do not know
            top = next((s for s in reversed(chain) if s.role is not CertRole.ROOT), chain[0])
            if top.role is CertRole.LEAF:  # only the leaf came: an intermediate is missing
                detail = (
                    f"chain incomplete: the server sent no issuer for {_label(top)} and "
                    f"{top.issuer!r} is not in the trust bundle (missing intermediate?): {detail}"
                )
            else:
                detail = f"issuer {top.issuer!r} of {_label(top)} not in trust bundle: {detail}"
        return report(Reason.TLS_UNTRUSTED, detail, chain, sent_root, identity)

    anchor = verified.chain[-1]
    anchor_summary = summarize(
        anchor,
        CertRole.ROOT,
        from_bundle=anchor.fingerprint(hashes.SHA256()).hex() not in presented_fps,
    )
    problem = _identity_problem(leaf_summary, server_name, expected_identity, trust_domain)
    if problem is not None:
        return report(Reason.TLS_IDENTITY, problem, chain, anchor_summary, identity)
    return report(None, "verified", chain, anchor_summary, identity)
