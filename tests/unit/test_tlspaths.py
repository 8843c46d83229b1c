"""Validity judged on the path that verified, and failures that name their real cause."""

from __future__ import annotations

from datetime import timedelta

import pytest

from meshprobe.demo import pki
from meshprobe.model import CertRole, Reason
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.verdict import assess_chain
from tests import certkit
from tests.certkit import NOW, der


def old_cross_cert(root: pki.Issued) -> pki.Issued:
    """An expired certificate for the same CA as `root`, signed by a retired root: what servers
    keep sending during a root migration (the AddTrust "chain of pain")."""
    retired = pki.make_root(
        "retired root", not_before=NOW - timedelta(days=4000), not_after=NOW - timedelta(days=30)
    )
    return certkit.ca(
        retired,
        "mesh root",
        key=root.key,
        not_before=NOW - timedelta(days=3000),
        not_after=NOW - timedelta(days=30),
    )


def test_expired_extra_certificate_off_the_path_is_reported_not_failed(
    root: pki.Issued, inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter)
    cross = old_cross_cert(root)
    rep = assess_chain(der(leaf, inter, cross), anchors=anchors, server_name="web.example")
    assert rep.verified, rep.detail
    assert "ignored, not on the verified path" in rep.detail
    assert "'CN=mesh root' expired at" in rep.detail
    assert [c.extra for c in rep.chain] == [False, False, True]
    # The extra certificate's past expiry must not page as "certificate expiring".
    expiry = rep.earliest_expiry()
    assert expiry[CertRole.INTERMEDIATE] == inter.cert.not_valid_after_utc.timestamp()
    assert all(ts > NOW.timestamp() for ts in expiry.values())


def test_valid_chain_without_extras_says_only_verified(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(der(certkit.leaf(inter), inter), anchors=anchors, server_name="web.example")
    assert (rep.verified, rep.detail) == (True, "verified")
    assert not any(c.extra for c in rep.chain)


def test_expired_cert_on_the_only_candidate_path_is_expired_and_named(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    lapsed = certkit.ca(
        root, "lapsed issuer", not_before=NOW - timedelta(days=90), not_after=NOW - timedelta(1)
    )
    rep = assess_chain(der(certkit.leaf(lapsed), lapsed), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_EXPIRED
    assert rep.detail.startswith("intermediate 'CN=lapsed issuer' expired at")
    assert rep.root is not None and rep.root.from_bundle  # the path's anchor, for expiry metrics


def test_sha1_signature_is_named_not_blamed_on_a_missing_root(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    weak = certkit.sha1_signed(certkit.leaf(inter).cert, inter.key)
    rep = assess_chain(der(weak, inter), anchors=anchors, server_name="web.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "leaf 'CN=web.example' is signed with ecdsa-with-SHA1" in rep.detail
    assert "not in the trust bundle" not in rep.detail and "missing" not in rep.detail


def test_sha1_signed_intermediate_is_named(root: pki.Issued, anchors: TrustAnchors) -> None:
    good = certkit.ca(root, "sha1 issuer")
    weak = pki.Issued(certkit.sha1_signed(good.cert, root.key), good.key)
    rep = assess_chain(der(certkit.leaf(weak), weak), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "intermediate 'CN=sha1 issuer' is signed with ecdsa-with-SHA1" in rep.detail


def test_forged_issuer_name_is_a_signature_failure(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    impostor = pki.Issued(inter.cert, pki.make_root("someone else").key)  # right name, wrong key
    rep = assess_chain(
        der(certkit.leaf(impostor), inter), anchors=anchors, server_name="web.example"
    )
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "the signature on leaf 'CN=web.example' does not verify with the key of" in rep.detail
    assert "'CN=cluster1 intermediate'" in rep.detail


def test_unknown_issuer_is_still_named(anchors: TrustAnchors) -> None:
    other = pki.make_intermediate(pki.make_root("other root"), "other intermediate")
    rep = assess_chain(der(certkit.leaf(other), other), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert rep.detail.startswith(
        "issuer 'CN=other root' of intermediate 'CN=other intermediate' not in trust bundle"
    )


def test_expired_leaf_from_an_unknown_ca_is_untrusted_not_expired(anchors: TrustAnchors) -> None:
    other = pki.make_intermediate(pki.make_root("other root"), "other intermediate")
    old = certkit.leaf(other, not_before=NOW - timedelta(days=3), not_after=NOW - timedelta(days=2))
    rep = assess_chain(der(old, other), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED  # renewing the leaf would not make it trusted
    assert "'CN=other root'" in rep.detail


def test_self_signed_server_says_self_signed(anchors: TrustAnchors) -> None:
    own = pki.make_self_signed_leaf("self.example", dns_names=["self.example"])
    rep = assess_chain(der(own), anchors=anchors, server_name="self.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "self-signed leaf 'CN=self.example' is not in the trust bundle" in rep.detail


def test_a_bug_in_judging_is_still_a_verdict(
    inter: pki.Issued, anchors: TrustAnchors, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> list[str]:
        raise KeyError("bug")

    monkeypatch.setattr("meshprobe.trust.verdict.leaf_problems", broken)
    rep = assess_chain(der(certkit.leaf(inter), inter), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert rep.detail.startswith("the presented chain could not be judged: KeyError")
    assert len(rep.chain) == 2 and rep.identity == "web.example"


def test_a_bug_in_reading_the_chain_is_still_a_verdict(
    inter: pki.Issued, anchors: TrustAnchors, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr("meshprobe.trust.verdict.summarize", broken)
    rep = assess_chain(der(certkit.leaf(inter), inter), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert rep.detail == "the presented chain could not be read: RuntimeError: bug"
