"""Why no path verified: the cause named, so that a detail read at night says what to fix.

cryptography's verifier reports that path building failed, often as "candidates exhausted" with
the last error it met, which for an expired intermediate or a SHA-1 signature names neither the
certificate nor the rule. So on a failure only (never on the verified hot path) we rebuild the
candidate paths by name (leaf, presented intermediates, bundle roots) and judge each rule by rule:
validity, signature algorithm, signature, issuer keys, malformed extensions. Then:
- a candidate path whose only faults are validity windows: `tls_expired` naming those
  certificates (the fix is a renewal; the extra certificates a server may send play no part);
- a candidate path with other faults: `tls_untrusted` naming them;
- no candidate path reaches the bundle: `tls_untrusted` naming the issuer we do not know (CA
  drift, a missing intermediate), and a bundle certificate of that name skipped at load, if any.
The search is bounded: hostile chains are built to make path building explode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from meshprobe.model import CertRole, CertSummary, Reason
from meshprobe.trust.names import summarize
from meshprobe.trust.policy import cert_label, issuer_problems, signature_problem

if TYPE_CHECKING:
    from meshprobe.trust.anchors import TrustAnchors

__all__ = ["Diagnosis", "diagnose", "extension_error", "self_signed", "window_problem"]

_MAX_DEPTH = 8  # certificates in one candidate path, anchor included
_MAX_STEPS = 64  # path-building steps per diagnosis
_MAX_PATHS = 8
_MAX_ERROR = 300  # characters of the verifier's own message kept in a detail

_Node = tuple[x509.Certificate, CertSummary]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    reason: Reason
    detail: str
    anchor: CertSummary | None  # the bundle root of the judged path, when one was found


def extension_error(cert: x509.Certificate) -> str | None:
    """Why the certificate's extensions cannot be parsed (duplicates, bad encodings), if so."""
    try:
        _ = cert.extensions
    except Exception as exc:  # DuplicateExtension, ValueError, TypeError from the parsers
        return str(exc) or type(exc).__name__
    return None


def self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_problem(s: CertSummary, at: datetime) -> str | None:
    ts = at.timestamp()
    if ts > s.not_after:
        return f"{cert_label(s)} expired at {_iso(s.not_after)}"
    if ts < s.not_before:
        return f"{cert_label(s)} not valid before {_iso(s.not_before)}"
    return None


class _Search:
    """Depth-first candidate paths from the leaf to any bundle root, by subject/issuer name."""

    def __init__(
        self, certs: Sequence[x509.Certificate], chain: Sequence[CertSummary], anchors: TrustAnchors
    ) -> None:
        bundled = anchors.fingerprints()
        self.anchors = anchors
        self.pool: list[_Node] = [
            (c, s)
            for c, s in zip(certs[1:], chain[1:], strict=True)
            if s.fingerprint_sha256 not in bundled
        ]
        self.paths: list[list[_Node]] = []
        self.longest: list[_Node] = [(certs[0], chain[0])]
        self.steps = 0
        self._roots: dict[bytes, CertSummary] = {}

    def _root(self, cert: x509.Certificate) -> CertSummary:
        key = cert.tbs_certificate_bytes
        if key not in self._roots:
            self._roots[key] = summarize(cert, CertRole.ROOT, from_bundle=True)
        return self._roots[key]

    def walk(self, path: list[_Node]) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS or len(self.paths) >= _MAX_PATHS:
            return
        if len(path) > len(self.longest):
            self.longest = path
        cert = path[-1][0]
        for root in _likely_issuers(cert, self.anchors.issuers_named(cert.issuer)):
            self.paths.append([*path, (root, self._root(root))])
        if len(path) + 1 >= _MAX_DEPTH:
            return
        named = [n[0] for n in self.pool if n[0].subject == cert.issuer]
        likely = _likely_issuers(cert, named)
        for node in self.pool:
            if any(node[0] is c for c in likely) and all(node[1] is not p[1] for p in path):
                self.walk([*path, node])


def _likely_issuers(
    cert: x509.Certificate, named: Sequence[x509.Certificate]
) -> Sequence[x509.Certificate]:
    """Of the certificates named as `cert`'s issuer, those whose key verifies its signature;
    all of them when none does (or the algorithm is refused), so the fault can still be named."""
    if len(named) < 2 or signature_problem(cert, "") is not None:
        return named
    verified = []
    for issuer in named:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        verified.append(issuer)
    return verified or named


def _faults(path: list[_Node], at: datetime) -> tuple[list[str], list[str]]:
    """(validity problems, every other problem) of one candidate path."""
    validity = [p for _, s in path if (p := window_problem(s, at)) is not None]
    other: list[str] = []
    for (cert, summary), (issuer, issuer_summary) in pairwise(path):
        label = cert_label(summary)
        problem = signature_problem(cert, label)
        if problem is not None:
            other.append(problem)
            continue
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            other.append(
                f"the signature on {label} does not verify with the key of "
                f"{cert_label(issuer_summary)}"
            )
    for index, (cert, summary) in enumerate(path[1:], start=2):
        label = cert_label(summary)
        error = extension_error(cert)
        if error is not None:
            other.append(f"{label} has malformed extensions: {error}")
            continue
        other += issuer_problems(cert, label, anchor=index == len(path))
    return validity, other


def _unknown_issuer(longest: list[_Node], anchors: TrustAnchors, verifier_says: str) -> str:
    cert, last = longest[-1]
    label = cert_label(last)
    if self_signed(cert):
        detail = f"the server's self-signed {label} is not in the trust bundle"
    elif len(longest) == 1:
        detail = (
            f"chain incomplete: the server sent no issuer for {label} and {last.issuer!r} is "
            "not in the trust bundle (missing intermediate?)"
        )
    else:
        detail = f"issuer {last.issuer!r} of {label} not in trust bundle"
    wanted = cert.subject.rfc4514_string() if self_signed(cert) else last.issuer
    for skipped in anchors.skipped_roots:
        if skipped.subject == wanted:
            detail += (
                f"; the bundle's certificate {skipped.subject!r} "
                f"({skipped.fingerprint_sha256[:16]}) was skipped at load: {skipped.reason}"
            )
    return f"{detail}: {verifier_says}"


def diagnose(
    certs: Sequence[x509.Certificate],
    chain: Sequence[CertSummary],
    *,
    anchors: TrustAnchors,
    at: datetime,
    error: BaseException,
) -> Diagnosis:
    """The reason and detail for a chain the verifier refused with `error`."""
    message = str(error) or type(error).__name__
    if len(message) > _MAX_ERROR:
        message = message[: _MAX_ERROR - 3] + "..."
    verifier_says = f"{message} (trust bundle {anchors.source})"
    search = _Search(certs, chain, anchors)
    search.walk(list(search.longest))
    if not search.paths:
        detail = _unknown_issuer(search.longest, anchors, verifier_says)
        return Diagnosis(Reason.TLS_UNTRUSTED, detail, None)
    judged = [(path, *_faults(path, at)) for path in search.paths]
    for path, validity, other in judged:
        if validity and not other:
            return Diagnosis(Reason.TLS_EXPIRED, "; ".join(validity), path[-1][1])
    for _path, validity, other in judged:
        if other:
            detail = "; ".join(other + validity) + f" (trust bundle {anchors.source})"
            return Diagnosis(Reason.TLS_UNTRUSTED, detail, None)
    return Diagnosis(Reason.TLS_UNTRUSTED, verifier_says, None)
