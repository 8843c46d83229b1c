"""Names come from the subjectAltName only; SPIFFE IDs from any accepted trust domain are ours."""

from __future__ import annotations

import pytest

from meshprobe.demo import pki
from meshprobe.model import Reason
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.cache import VerdictCache
from meshprobe.trust.verdict import assess_chain
from tests import certkit
from tests.certkit import der

OURS = "spiffe://cluster.local/ns/mesh/sa/echo"
ALIAS = "spiffe://old-mesh.example/ns/mesh/sa/echo"
FOREIGN = "spiffe://elsewhere.example/ns/mesh/sa/echo"


@pytest.fixture(scope="module")
def inter() -> pki.Issued:
    return pki.make_intermediate(pki.make_root("mesh root"), "cluster1 intermediate")


@pytest.fixture(scope="module")
def anchors(inter: pki.Issued) -> TrustAnchors:
    return TrustAnchors((inter.cert,), "intermediate as anchor")


# -- a leaf without SANs ------------------------------------------------------------------------


def test_san_less_leaf_does_not_match_a_server_name_via_its_cn(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter, "api.example.com", dns=())
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="api.example.com")
    assert rep.reason is Reason.TLS_IDENTITY
    assert rep.detail == (
        "leaf 'CN=api.example.com' has no subjectAltName, so server name api.example.com "
        "cannot match (the subject common name is not used, as in browsers and Go)"
    )
    assert rep.root is not None  # the chain itself verified


def test_san_less_leaf_with_nothing_expected_verifies(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(certkit.leaf(inter, "x", dns=()), inter), anchors=anchors, server_name=None
    )
    assert rep.verified, rep.detail


def test_san_less_leaf_fails_an_expected_dns_identity(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter, "api.example.com", dns=())
    rep = assess_chain(
        der(leaf, inter), anchors=anchors, server_name=None, expected_identity="api.example.com"
    )
    assert rep.reason is Reason.TLS_IDENTITY


def test_leaf_with_only_a_non_spiffe_uri_does_not_match_a_server_name(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter, "svc", dns=(), uris=["https://svc.example/"])
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="svc.example")
    assert rep.reason is Reason.TLS_IDENTITY
    assert "no DNS or IP subjectAltName, only URIs ['https://svc.example/']" in rep.detail


def test_spiffe_only_leaf_is_judged_by_its_id_not_the_server_name(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    leaf = certkit.leaf(inter, None, dns=(), uris=[OURS], san_critical=True)
    rep = assess_chain(
        der(leaf, inter), anchors=anchors, server_name="echo.mesh.svc", trust_domain="cluster.local"
    )
    assert rep.verified, rep.detail


# -- trust-domain aliases -------------------------------------------------------------------------


def spiffe_leaf(inter: pki.Issued, uri: str) -> list[bytes]:
    return der(certkit.leaf(inter, None, dns=(), uris=[uri], san_critical=True), inter)


@pytest.mark.parametrize(
    ("uri", "aliases", "verified"),
    [
        (OURS, frozenset(), True),
        (ALIAS, frozenset(), False),
        (ALIAS, frozenset({"old-mesh.example"}), True),
        (ALIAS, frozenset({"OLD-MESH.example"}), True),  # trust domains are case-insensitive
        (FOREIGN, frozenset({"old-mesh.example"}), False),
        (OURS, frozenset({"old-mesh.example"}), True),
    ],
)
def test_aliases_are_accepted_as_ours(
    inter: pki.Issued, anchors: TrustAnchors, uri: str, aliases: frozenset[str], verified: bool
) -> None:
    rep = assess_chain(
        spiffe_leaf(inter, uri),
        anchors=anchors,
        server_name=None,
        trust_domain="cluster.local",
        trust_domain_aliases=aliases,
    )
    assert rep.verified is verified, rep.detail
    if not verified:
        assert rep.reason is Reason.TLS_IDENTITY


def test_foreign_id_detail_lists_every_accepted_domain(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        spiffe_leaf(inter, FOREIGN),
        anchors=anchors,
        server_name=None,
        trust_domain="cluster.local",
        trust_domain_aliases=frozenset({"old-mesh.example"}),
    )
    assert rep.detail == (
        f"leaf SPIFFE ID {FOREIGN} is outside trust domains cluster.local, old-mesh.example"
    )
    single = assess_chain(
        spiffe_leaf(inter, FOREIGN), anchors=anchors, server_name=None, trust_domain="cluster.local"
    )
    assert single.detail == f"leaf SPIFFE ID {FOREIGN} is outside trust domain cluster.local"


def test_aliases_alone_are_checked(inter: pki.Issued, anchors: TrustAnchors) -> None:
    rep = assess_chain(
        spiffe_leaf(inter, OURS),
        anchors=anchors,
        server_name=None,
        trust_domain_aliases=frozenset({"old-mesh.example"}),
    )
    assert rep.reason is Reason.TLS_IDENTITY


def test_verdict_cache_applies_aliases(inter: pki.Issued, anchors: TrustAnchors) -> None:
    cache = VerdictCache()
    chain = spiffe_leaf(inter, ALIAS)
    args = {"server_name": None, "expected_identity": None, "version": None, "cipher": None}
    plain = cache.assess(chain, anchors=anchors, trust_domain="cluster.local", **args)
    aliased = cache.assess(
        chain,
        anchors=anchors,
        trust_domain="cluster.local",
        trust_domain_aliases=frozenset({"old-mesh.example"}),
        **args,
    )
    assert (plain.verified, aliased.verified) == (False, True)
    assert cache.misses == 1  # aliases are applied to the one cached chain verdict


# -- details stay short, however many names a certificate carries ------------------------------


@pytest.fixture(scope="module")
def crowded(inter: pki.Issued) -> list[bytes]:
    """A leaf with 5,000 DNS SANs and 20 URI SANs (a 54 KB detail before it was capped)."""
    dns = [f"host-{i:04d}.crowded.example" for i in range(5000)]
    uris = [f"spiffe://cluster.local/ns/crowd/sa/sa-{i}" for i in range(20)]
    return der(certkit.leaf(inter, "crowded", dns=dns, uris=uris), inter)


@pytest.mark.parametrize(
    "expect",
    [
        {"server_name": "api.example.com"},
        {"server_name": None, "expected_identity": "api.example.com"},
        {"server_name": None, "expected_identity": OURS},
    ],
)
def test_a_5000_san_mismatch_names_a_few_and_counts_the_rest(
    crowded: list[bytes], anchors: TrustAnchors, expect: dict[str, str | None]
) -> None:
    for assess in (assess_chain, VerdictCache().assess):
        args = {"expected_identity": None, "trust_domain": None, **expect}
        rep = assess(crowded, anchors=anchors, version=None, cipher=None, **args)  # type: ignore[arg-type]
        assert rep.reason is Reason.TLS_IDENTITY
        assert len(rep.detail) < 800, rep.detail
        assert "'host-0000.crowded.example'" in rep.detail or "sa-0'" in rep.detail
        assert "... and 4,995 more]" in rep.detail or "... and 15 more]" in rep.detail


def test_a_short_san_list_is_shown_whole(inter: pki.Issued, anchors: TrustAnchors) -> None:
    leaf = certkit.leaf(inter, "x", dns=[f"n{i}.example" for i in range(5)])
    rep = assess_chain(der(leaf, inter), anchors=anchors, server_name="other.example")
    assert rep.detail == (
        "server name other.example not in leaf DNS SANs ['n0.example', 'n1.example', "
        "'n2.example', 'n3.example', 'n4.example'] or IP SANs []"
    )


def test_a_huge_foreign_spiffe_id_is_clipped(inter: pki.Issued, anchors: TrustAnchors) -> None:
    long_id = "spiffe://elsewhere.example/" + "x" * 5000
    rep = assess_chain(
        spiffe_leaf(inter, long_id), anchors=anchors, server_name=None, trust_domain="cluster.local"
    )
    assert rep.reason is Reason.TLS_IDENTITY
    assert len(rep.detail) < 300 and rep.detail.startswith("leaf SPIFFE ID spiffe://elsewhere")


def test_many_extra_certificates_are_counted_not_listed(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    extras = [pki.make_root(f"extra {i}") for i in range(10)]
    leaf = certkit.leaf(inter, "web.example")
    rep = assess_chain(der(leaf, inter, *extras), anchors=anchors, server_name="web.example")
    assert rep.verified, rep.detail
    assert rep.detail == (
        "verified (ignored, not on the verified path: root 'CN=extra 0'; root 'CN=extra 1'; "
        "root 'CN=extra 2'; and 7 more)"
    )
