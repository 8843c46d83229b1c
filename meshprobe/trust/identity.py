"""The public identity document served at /v1/identity and read by peers.

Only public facts: cluster name, trust domain, and the roots' fingerprints, subjects and expiry.
Keys and intermediates never appear here.

Two properties matter more than the content. The document is *bounded*: `IDENTITY_MAX_BYTES` is
the one limit the producer (here) and the consumer (`peers`) share, so a peer never refuses what
we publish; a bundle with more roots than fit is published as a valid, explicitly truncated
document (`"truncated": true`, `"root_count"`) instead of one peers reject; `parse_identity`
reads a peer's document with the same limits, as untrusted input. And it is *built once
per change* of its inputs, never per request: encoding thousands of roots on every GET held the
event loop long enough to starve health checks and neighbouring probes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog

from meshprobe import __version__
from meshprobe.model import CertSummary
from meshprobe.trust.anchors import TrustAnchors

log = structlog.get_logger(__name__)

# Room for ~300 roots with subjects in compact JSON: every Istio/Linkerd bundle (1-3 roots), a
# mesh mid-migration, and the OS web PKI (~150 roots). Peers running older meshprobe refuse
# anything larger, so raising it would break mixed-version meshes during an upgrade.
IDENTITY_MAX_BYTES: Final = 64 * 1024


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted, ASCII-only JSON: the same input always gives the same bytes, and a
    subject with odd characters can never fail to encode."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")


def _entry(s: CertSummary) -> dict[str, str]:
    return {
        "fingerprint_sha256": s.fingerprint_sha256,
        "subject": s.subject,
        "not_after": datetime.fromtimestamp(s.not_after, UTC).isoformat(),
    }


# No entry encodes shorter (empty subject, a whole-second date): once less room than this is
# left, the rest of a large bundle need not be encoded just to be turned away.
_SHORTEST_ENTRY: Final = len(
    encode(
        {"fingerprint_sha256": "0" * 64, "subject": "", "not_after": "2000-01-01T00:00:00+00:00"}
    )
)


def publication_order(bundle: TrustAnchors) -> list[CertSummary]:
    """Newest root first (by notBefore), then by fingerprint.

    Deterministic from the bundle alone, so two peers holding the same large bundle publish the
    same subset and still match. Newest first favours what is most likely shared when a bundle is
    too big to publish whole: a mesh root added to an OS bundle is years younger than the web PKI
    roots around it, and during a rotation the new root is the one that matters.
    """
    summaries = [bundle.summary_of(root) for root in bundle.roots]
    return sorted(summaries, key=lambda s: (-s.not_before, s.fingerprint_sha256))


def identity_document(
    *,
    cluster: str,
    trust_domain: str | None,
    bundle: TrustAnchors | None,
    max_bytes: int = IDENTITY_MAX_BYTES,
) -> dict[str, Any]:
    """The document, holding as many roots as fit in `max_bytes` once encoded with `encode`.

    Roots are taken in `publication_order`; one that does not fit (an absurdly long subject) is
    skipped and the next ones still tried.
    """
    summaries = publication_order(bundle) if bundle is not None else []
    doc: dict[str, Any] = {
        "cluster": cluster,
        "trust_domain": trust_domain,
        "roots": [],
        "root_count": len(summaries),
        "truncated": False,  # the longer spelling, so the final document can only be shorter
        "version": __version__,
    }
    room = max_bytes - len(encode(doc))  # the encoded list is "[" + ",".join(entries) + "]"
    kept: list[dict[str, str]] = []
    for summary in summaries:
        if room < _SHORTEST_ENTRY + (1 if kept else 0):
            break
        entry = _entry(summary)
        cost = len(encode(entry)) + (1 if kept else 0)
        if cost <= room:
            kept.append(entry)
            room -= cost
    doc["roots"] = kept
    doc["truncated"] = len(kept) < len(summaries)
    return doc


def build_identity(*, cluster: str, trust_domain: str | None, bundle: TrustAnchors | None) -> bytes:
    """The encoded document, with one log line per build (builds happen once per change)."""
    doc = identity_document(cluster=cluster, trust_domain=trust_domain, bundle=bundle)
    body = encode(doc)
    fields = {
        "roots": doc["root_count"],
        "published": len(doc["roots"]),
        "bytes": len(body),
        "max_bytes": IDENTITY_MAX_BYTES,
    }
    if doc["truncated"]:
        log.warning(
            "identity document truncated: the trust bundle has more roots than it can hold",
            **fields,
        )
    else:
        log.info("identity document built", **fields)
    return body


class IdentityBuilder(Protocol):
    def __call__(
        self, *, cluster: str, trust_domain: str | None, bundle: TrustAnchors | None
    ) -> bytes: ...


class PublishedIdentity:
    """The encoded document and the inputs it was built from, rebuilt only when one changes.

    A bundle is compared by object identity: every load and reload makes a new `TrustAnchors`
    and swaps it wholesale, and comparing thousands of certificates per request is the cost this
    class exists to avoid. `build` is a hook (the default encodes with `build_identity`).
    """

    def __init__(self, *, build: IdentityBuilder = build_identity) -> None:
        self._build = build
        self._inputs: tuple[str, str | None, TrustAnchors | None] | None = None
        self._body = b""

    def body(self, *, cluster: str, trust_domain: str | None, bundle: TrustAnchors | None) -> bytes:
        inputs = self._inputs
        if (
            inputs is None
            or inputs[0] != cluster
            or inputs[1] != trust_domain
            or inputs[2] is not bundle
        ):
            self._body = self._build(cluster=cluster, trust_domain=trust_domain, bundle=bundle)
            self._inputs = (cluster, trust_domain, bundle)
        return self._body


# -- a peer's document: untrusted input ------------------------------------------------------

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class IdentityError(Exception):
    """The peer answered, but not with a usable identity document."""


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    roots: frozenset[str]  # the fingerprints the document lists
    root_count: int  # roots in the peer's bundle: more than listed when truncated
    truncated: bool


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except RecursionError:
        # CPython's decoder recurses per nesting level: 30k '[' in 60 KB exhaust the stack limit.
        raise IdentityError("identity is not JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long to convert
        raise IdentityError(f"identity is not JSON: {exc}") from None


def parse_identity(body: bytes, *, expected_cluster: str) -> PeerIdentity:
    """Validate a peer's identity document (schema in docs/identity.md)."""
    doc = _decode(body)
    if not isinstance(doc, dict):
        raise IdentityError("identity is not a JSON object")
    cluster = doc.get("cluster")
    if not isinstance(cluster, str):
        raise IdentityError("identity has no 'cluster' string")
    if cluster != expected_cluster:
        raise IdentityError(
            f"peer configured as cluster {expected_cluster!r} says it is {cluster!r}"
        )
    roots = doc.get("roots")
    if not isinstance(roots, list):
        raise IdentityError("identity has no 'roots' list")
    fingerprints = set()
    for i, root in enumerate(roots):
        fp = root.get("fingerprint_sha256") if isinstance(root, dict) else None
        if not isinstance(fp, str) or not _FINGERPRINT.fullmatch(fp):
            raise IdentityError(f"roots[{i}].fingerprint_sha256 is not a lowercase SHA-256 hex")
        fingerprints.add(fp)
    truncated = doc.get("truncated", False)
    if not isinstance(truncated, bool):
        raise IdentityError("identity 'truncated' is not a boolean")
    root_count = doc.get("root_count", len(roots))
    if type(root_count) is not int or root_count < len(roots):
        raise IdentityError("identity 'root_count' is not an integer at least the roots listed")
    return PeerIdentity(frozenset(fingerprints), root_count, truncated)
