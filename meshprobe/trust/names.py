"""Whose certificate is this: server-name, expected-identity and SPIFFE trust-domain matching.

Kept apart from `tlscheck` because it answers a different question. `tlscheck` decides whether
a chain is a valid credential (path, validity, keys, usages); this module decides, for a chain
already known to be valid, whether it names the server we meant to reach. The answers map to
different reasons (`tls_untrusted`/`tls_expired` versus `tls_identity`) and to different fixes
(reissue the certificate versus fix routing or the expected name).

Names come from the subjectAltName only. The subject common name is never used, as in browsers
and Go: a leaf without a DNS or IP SAN cannot match a server name. The one allowance is the mesh
workload leaf that carries nothing but a `spiffe://` URI SAN: it is judged by the expected SPIFFE
ID and the trust domain instead, because its host name is never in the certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from meshprobe.model import CertRole, CertSummary

__all__ = [
    "accepted_domains",
    "clip",
    "identity_of",
    "identity_problem",
    "listed",
    "spiffe_ids",
    "summarize",
]

_SPIFFE = "spiffe://"
# A detail names a few SANs, enough to see what the certificate is for, and counts the rest: a
# leaf may carry thousands (one with 5,000 made a 54 KB detail, and a log line as long).
_LISTED = 5
_CLIPPED = 120  # characters of one name; a SAN may be as long as the certificate


def clip(text: str, limit: int = _CLIPPED) -> str:
    """`text` cut to `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listed(items: Sequence[str], limit: int = _LISTED) -> str:
    """A list for a detail, shown like Python's `repr` of a short list, with at most `limit`
    entries (each clipped) and a count of the rest: "['a', 'b', ... and 4,998 more]"."""
    shown = ", ".join(repr(clip(item)) for item in items[:limit])
    more = len(items) - limit
    if more > 0:
        shown += f", ... and {more:,} more"
    return f"[{shown}]"


def _general_names(cert: x509.Certificate) -> tuple[list[str], list[str], list[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], []
    except Exception:  # malformed extensions (duplicates, bad encodings): judged elsewhere
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


def spiffe_ids(leaf: CertSummary) -> list[str]:
    return [u for u in leaf.uris if u.lower().startswith(_SPIFFE)]


def _trust_domain(spiffe_id: str) -> str:
    return spiffe_id[len(_SPIFFE) :].split("/", 1)[0].lower()


def accepted_domains(trust_domain: str | None, aliases: Iterable[str]) -> frozenset[str]:
    """The trust domains whose SPIFFE IDs are ours (lower-cased); empty means "do not check"."""
    names = {a.lower() for a in aliases}
    if trust_domain is not None:
        names.add(trust_domain.lower())
    return frozenset(names)


def _describe_domains(trust_domain: str | None, domains: frozenset[str]) -> str:
    if trust_domain is not None and len(domains) == 1:
        return f"trust domain {trust_domain}"
    return "trust domains " + ", ".join(sorted(domains))


def _server_name_problem(server_name: str, leaf: CertSummary, label: str) -> str | None:
    label = clip(label)
    if leaf.dns_names or leaf.ip_addresses:
        if _name_matches(server_name, leaf):
            return None
        return (
            f"server name {server_name} not in leaf DNS SANs {listed(leaf.dns_names)} "
            f"or IP SANs {listed(leaf.ip_addresses)}"
        )
    if spiffe_ids(leaf):
        return None  # a mesh workload leaf: judged by its SPIFFE ID, see the module docstring
    if leaf.uris:
        return (
            f"{label} has no DNS or IP subjectAltName, only URIs {listed(leaf.uris)}: server name "
            f"{server_name} cannot match"
        )
    return (
        f"{label} has no subjectAltName, so server name {server_name} cannot match "
        "(the subject common name is not used, as in browsers and Go)"
    )


def identity_problem(
    leaf: CertSummary,
    label: str,
    *,
    server_name: str | None,
    expected_identity: str | None,
    trust_domain: str | None,
    trust_domain_aliases: Iterable[str] = (),
) -> str | None:
    """Why a valid leaf does not name the server we expect, or None when it does."""
    spiffe = spiffe_ids(leaf)
    if expected_identity is not None:
        if expected_identity.lower().startswith(_SPIFFE):
            if expected_identity not in spiffe:
                return f"expected {expected_identity}, leaf has URI SANs {listed(leaf.uris)}"
        elif not _name_matches(expected_identity, leaf):
            return (
                f"expected {expected_identity}, leaf has DNS SANs {listed(leaf.dns_names)} "
                f"and IP SANs {listed(leaf.ip_addresses)}"
            )
    elif server_name:
        problem = _server_name_problem(server_name, leaf, label)
        if problem is not None:
            return problem
    domains = accepted_domains(trust_domain, trust_domain_aliases)
    if domains:
        foreign = [s for s in spiffe if _trust_domain(s) not in domains]
        if foreign:
            where = _describe_domains(trust_domain, domains)
            return f"leaf SPIFFE ID {clip(foreign[0])} is outside {where}"
    return None


def identity_of(leaf: x509.Certificate | None, summary: CertSummary | None) -> str | None:
    """The leaf's SPIFFE ID, else its first DNS name, else its subject CN (for display only)."""
    if leaf is None or summary is None:
        return None
    spiffe = spiffe_ids(summary)
    if spiffe:
        return spiffe[0]
    if summary.dns_names:
        return summary.dns_names[0]
    try:
        cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    return str(cns[0].value) if cns else None
