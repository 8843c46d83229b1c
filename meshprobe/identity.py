"""The public identity document served at /v1/identity and read by peers.

Only public facts: cluster name, trust domain, and the roots' fingerprints, subjects and expiry.
Keys and intermediates never appear here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meshprobe import __version__
from meshprobe.model import CertRole
from meshprobe.tlscheck import TrustAnchors, summarize


def identity_document(
    *, cluster: str, trust_domain: str | None, bundle: TrustAnchors | None
) -> dict[str, Any]:
    roots = []
    for cert in bundle.roots if bundle is not None else ():
        s = summarize(cert, CertRole.ROOT, from_bundle=True)
        roots.append(
            {
                "fingerprint_sha256": s.fingerprint_sha256,
                "subject": s.subject,
                "not_after": datetime.fromtimestamp(s.not_after, UTC).isoformat(),
            }
        )
    return {
        "cluster": cluster,
        "trust_domain": trust_domain,
        "roots": roots,
        "version": __version__,
    }
