"""The verdict on a presented TLS chain, shared by the `tls` and `https` probes.

The handshake itself is done with verification off, so that a broken chain still yields a chain to
report; the verdict is then reached here, in one place, with `cryptography.x509.verification`
(blackbox_exporter's tls.go plays the same role with Go's x509). Doing it ourselves lets us say
*why* a chain fails in a closed set of reasons (untrusted, expired, identity) instead of parsing
OpenSSL error strings, and lets us accept mesh workload certificates that carry only a SPIFFE URI.

The verifier builds the path and judges validity on that path only: a server may send extra
certificates (an old cross-certificate during a root migration) that are reported, never failed
on. When no path verifies, `diagnose` names the cause. Per-certificate rules (keys, usages)
live in `policy`, name and SPIFFE matching in `names`, the roots themselves in `anchors`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder

from meshprobe.model import CertRole, CertSummary, Reason, TLSReport
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.diagnose import diagnose, extension_error, self_signed, window_problem
from meshprobe.trust.names import clip, identity_of, identity_problem, summarize
from meshprobe.trust.policy import CA_POLICY, EE_POLICY, cert_label, issuer_problems, leaf_problems

__all__ = ["assess_chain"]

log = structlog.get_logger(__name__)

_NOTED_EXTRAS = 3  # extra certificates named in a verified chain's detail; the rest counted


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
