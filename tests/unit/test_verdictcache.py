"""The verdict cache: reuse, and the three bounds (entries, bytes, time) that hold under a server
presenting a fresh chain on every handshake. A fake clock stands in for time; nothing sleeps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshprobe.demo import pki
from meshprobe.model import Reason
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.cache import DEFAULT_MAX_BYTES, VerdictCache, footprint
from meshprobe.trust.verdict import assess_chain

ARGS: dict[str, Any] = {
    "server_name": "svc.example",
    "expected_identity": None,
    "trust_domain": None,
    "version": "TLSv1.3",
    "cipher": "x",
}


class Clock:
    """Wall time that moves only when told to (certificates are judged at this time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def root() -> pki.Issued:
    return pki.make_root("r")


@pytest.fixture(scope="module")
def anchors(root: pki.Issued) -> TrustAnchors:
    return TrustAnchors.from_pem(root.cert_pem(), source="r")


def der(issued: pki.Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def chains(root: pki.Issued, n: int, sans: int = 1) -> list[list[bytes]]:
    """`n` distinct chains (fresh keys), each leaf with `sans` DNS names."""
    names = ["svc.example", *(f"pad-{i:05d}.example" for i in range(sans - 1))]
    return [[der(pki.make_leaf(root, "l", dns_names=names))] for _ in range(n)]


def test_same_chain_and_expectations_reuse_the_verdict(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    (chain,) = chains(root, 1)
    cache = VerdictCache()
    first = cache.assess(chain, anchors=anchors, **ARGS)
    again = cache.assess(list(chain), anchors=anchors, **ARGS)
    assert first.verified and again is first
    assert (cache.hits, cache.misses) == (1, 1)


def test_new_anchors_are_judged_afresh_and_expectations_apply_to_the_cached_verdict(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    (chain,) = chains(root, 1)
    cache = VerdictCache()
    args = {k: v for k, v in ARGS.items() if k != "server_name"}
    assert cache.assess(chain, anchors=anchors, server_name="svc.example", **args).verified
    other = cache.assess(chain, anchors=anchors, server_name="other.example", **args)
    assert not other.verified and other.reason is Reason.TLS_IDENTITY
    assert "other.example" in other.detail
    assert cache.misses == 1  # one chain, one verification; the name check runs per call
    reloaded = TrustAnchors.from_pem(pki.make_root("new").cert_pem(), source="new")
    assert not cache.assess(chain, anchors=reloaded, server_name="svc.example", **args).verified
    assert cache.misses == 2


@pytest.mark.parametrize(
    "expect",
    [
        {"server_name": "svc.example"},
        {"server_name": "nope.example"},
        {"server_name": None, "expected_identity": "svc.example"},
        {"server_name": None, "expected_identity": "spiffe://cluster.local/ns/a/sa/b"},
        {"server_name": None, "trust_domain": "cluster.local"},
        {"server_name": "127.0.0.1", "trust_domain": "cluster.local"},
    ],
)
def test_cached_verdicts_equal_direct_ones(
    root: pki.Issued, anchors: TrustAnchors, expect: dict[str, Any]
) -> None:
    """The cache applies expectations after the fact; it must answer what assess_chain does."""
    spiffe = pki.make_leaf(
        root, None, uris=["spiffe://other.example/ns/a/sa/b"], ip_addresses=["127.0.0.1"]
    )
    stranger = pki.make_root("stranger")
    cases = [*chains(root, 1), [der(spiffe)], [der(pki.make_leaf(stranger, "x"))]]
    args = {**ARGS, "expected_identity": None, "trust_domain": None, **expect}
    cache = VerdictCache()
    for chain in cases:
        direct = assess_chain(chain, anchors=anchors, **args)
        for _ in range(2):  # a miss, then a hit
            cached = cache.assess(chain, anchors=anchors, **args)
            assert (cached.verified, cached.reason, cached.detail) == (
                direct.verified,
                direct.reason,
                direct.detail,
            )
            assert (cached.chain, cached.root, cached.identity) == (
                direct.chain,
                direct.root,
                direct.identity,
            )
            assert (cached.version, cached.cipher) == (direct.version, direct.cipher)
    assert cache.hits == len(cases)


def test_ttl_zero_never_reuses(root: pki.Issued, anchors: TrustAnchors) -> None:
    (chain,) = chains(root, 1)
    cache = VerdictCache(ttl=0.0)
    cache.assess(chain, anchors=anchors, **ARGS)
    cache.assess(chain, anchors=anchors, **ARGS)
    assert cache.hits == 0 and len(cache) == 0


def test_an_expired_chain_or_an_expired_extra_is_still_reused(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    """Only future validity boundaries end a reuse: past ones would make every probe a miss."""
    now = datetime.now(UTC)
    old = pki.make_leaf(
        root,
        "l",
        dns_names=["svc.example"],
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    fresh = pki.make_leaf(root, "l", dns_names=["svc.example"])
    lapsed_ca = pki.make_root("lapsed", not_before=now - timedelta(days=9), not_after=now)
    cache = VerdictCache()
    for chain in ([der(old)], [der(fresh), der(lapsed_ca)]):
        first = cache.assess(chain, anchors=anchors, **ARGS)
        assert cache.assess(chain, anchors=anchors, **ARGS) is first
    assert (cache.hits, cache.misses) == (2, 2)


def test_entry_count_is_bounded_least_recently_used_first(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    many = chains(root, 6)
    cache = VerdictCache(max_entries=4)
    for chain in many[:4]:
        cache.assess(chain, anchors=anchors, **ARGS)
    cache.assess(many[0], anchors=anchors, **ARGS)  # now the most recently used
    for chain in many[4:]:
        cache.assess(chain, anchors=anchors, **ARGS)
    assert len(cache) == 4
    misses = cache.misses
    cache.assess(many[0], anchors=anchors, **ARGS)
    assert cache.misses == misses  # kept
    cache.assess(many[1], anchors=anchors, **ARGS)
    assert cache.misses == misses + 1  # evicted, judged again


def test_bytes_are_bounded_and_counted_exactly(root: pki.Issued, anchors: TrustAnchors) -> None:
    big = chains(root, 8, sans=400)
    one = footprint(assess_chain(big[0], anchors=anchors, **ARGS))
    assert one > 400 * 40  # every SAN string is counted
    cache = VerdictCache(max_bytes=int(3.5 * one))
    for chain in big:
        cache.assess(chain, anchors=anchors, **ARGS)
        assert cache.size_bytes <= cache.max_bytes
    assert len(cache) == 3
    assert cache.size_bytes == sum(e.size for e in cache._entries.values())


def test_a_report_larger_than_the_budget_is_not_cached(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    (huge,) = chains(root, 1, sans=300)
    (small,) = chains(root, 1)
    cache = VerdictCache(max_bytes=footprint(assess_chain(small, anchors=anchors, **ARGS)) * 4)
    cache.assess(small, anchors=anchors, **ARGS)
    rep = cache.assess(huge, anchors=anchors, **ARGS)
    assert rep.verified  # judged all the same
    assert cache.uncacheable == 1 and len(cache) == 1  # and the small one was not pushed out
    cache.assess(huge, anchors=anchors, **ARGS)
    assert cache.misses == 3


def test_expired_entries_leave_without_waiting_to_be_pushed_out(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    clock = Clock()
    many = chains(root, 5)
    cache = VerdictCache(ttl=30.0, clock=clock)
    for chain in many[:4]:
        cache.assess(chain, anchors=anchors, **ARGS)
    assert len(cache) == 4 and cache.size_bytes > 0
    clock.now += 29.0
    cache.assess(many[0], anchors=anchors, **ARGS)  # a hit, which does not extend the lifetime
    assert (len(cache), cache.hits) == (4, 1)
    clock.now += 1.0
    cache.assess(many[4], anchors=anchors, **ARGS)  # any call sweeps what has expired
    assert len(cache) == 1
    assert cache.size_bytes == cache._entries[next(iter(cache._entries))].size
    clock.now += 30.0
    cache.assess(many[4], anchors=anchors, **ARGS)  # the last one expired too: judged afresh
    assert (len(cache), cache.misses) == (1, 6)


def test_expiry_bookkeeping_stays_bounded_under_a_flood(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    clock = Clock()
    many = chains(root, 40)
    cache = VerdictCache(max_entries=3, clock=clock)
    for _ in range(5):
        for chain in many:
            cache.assess(chain, anchors=anchors, **ARGS)
            clock.now += 0.01
    assert len(cache) == 3
    assert len(cache._expiry) <= 2 * 3 + 64 + 1


def test_bad_bounds_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_bytes must not be negative"):
        VerdictCache(max_bytes=-1)


def test_default_budget_holds_thousands_of_mesh_chains(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    """The documented sizing: a mesh chain (SPIFFE leaf and intermediate) is estimated at
    ~2.3 KiB, so the default 16 MiB keeps well over 5,000 distinct chains."""
    inter = pki.make_intermediate(root, "cluster1 intermediate")
    leaf = pki.make_leaf(inter, None, uris=["spiffe://cluster.local/ns/production/sa/api-server"])
    rep = assess_chain(
        [der(leaf), der(inter)], anchors=anchors, server_name=None, version="TLSv1.3", cipher="x"
    )
    assert rep.verified, rep.detail
    assert DEFAULT_MAX_BYTES // footprint(rep) >= 5000
