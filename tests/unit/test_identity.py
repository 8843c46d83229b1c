"""The identity document's bound, shared by the producer (`identity`) and the consumer (`peers`):
whatever the bundle, we publish a document peers accept, and peers turn whatever a document holds
into a verdict or an `IdentityError`, never an exception of another kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from meshprobe.demo import pki
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.identity import (
    IDENTITY_MAX_BYTES,
    IdentityError,
    PublishedIdentity,
    build_identity,
    encode,
    identity_document,
    parse_identity,
    publication_order,
)
from tests.certkit import many_roots


def fp(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture(scope="module")
def bulk() -> TrustAnchors:
    """More roots than fit: ~200 bytes each, so ~330 fit in 64 KiB."""
    return TrustAnchors.usable(many_roots(700), source="bulk")


def test_a_small_bundle_is_published_whole() -> None:
    roots = [pki.make_root("a"), pki.make_root("b")]
    anchors = TrustAnchors.usable([r.cert for r in roots], source="two")
    body = build_identity(cluster="c1", trust_domain="cluster.local", bundle=anchors)
    doc = json.loads(body)
    assert doc["truncated"] is False and doc["root_count"] == 2
    assert {r["fingerprint_sha256"] for r in doc["roots"]} == {fp(r.cert) for r in roots}
    assert {r["subject"] for r in doc["roots"]} == {"CN=a", "CN=b"}
    identity = parse_identity(body, expected_cluster="c1")
    assert (identity.roots, identity.root_count, identity.truncated) == (
        frozenset(fp(r.cert) for r in roots),
        2,
        False,
    )


def test_no_bundle_is_an_empty_list_of_roots() -> None:
    doc = json.loads(build_identity(cluster="c1", trust_domain=None, bundle=None))
    assert (doc["roots"], doc["root_count"], doc["truncated"]) == ([], 0, False)


def test_an_over_full_bundle_is_truncated_to_the_bound_in_publication_order(
    bulk: TrustAnchors,
) -> None:
    body = build_identity(cluster="c1", trust_domain="cluster.local", bundle=bulk)
    doc = json.loads(body)
    assert len(body) <= IDENTITY_MAX_BYTES
    assert doc["truncated"] is True and doc["root_count"] == 700
    listed = [r["fingerprint_sha256"] for r in doc["roots"]]
    assert len(listed) >= 300  # "a few hundred roots" fit
    order = [s.fingerprint_sha256 for s in publication_order(bulk)]
    assert listed == order[: len(listed)]
    # Tight: no room left for one more root (all are the same size here; the budget was counted
    # with "truncated":false, one byte longer than the "true" published).
    room_left = IDENTITY_MAX_BYTES - (len(body) + 1)
    assert 0 <= room_left < len(",") + len(encode(doc["roots"][0]))
    identity = parse_identity(body, expected_cluster="c1")
    assert identity.truncated and identity.root_count == 700
    assert identity.roots == frozenset(listed)


def test_publication_order_is_newest_first_then_by_fingerprint() -> None:
    old = pki.make_root("old", not_before=datetime.now(UTC) - timedelta(days=900))
    new = pki.make_root("new", not_before=datetime.now(UTC) - timedelta(minutes=1))
    same_age = many_roots(3, label="same age")
    anchors = TrustAnchors.usable([old.cert, *same_age, new.cert], source="mixed")
    order = [s.subject for s in publication_order(anchors)]
    assert order[0] == "CN=new" and order[-1] == "CN=old"
    middle = sorted(same_age, key=fp)
    assert order[1:-1] == [c.subject.rfc4514_string() for c in middle]


def test_a_root_too_big_to_publish_is_skipped_and_the_rest_still_tried() -> None:
    small = pki.make_root("small", not_before=datetime.now(UTC) - timedelta(days=2))
    huge = many_roots(1, label="huge " + "x" * 50)[0]  # newer: first in publication order
    anchors = TrustAnchors.usable([huge, small.cert], source="two")
    # Room for the envelope and one short entry only.
    empty = len(encode(identity_document(cluster="c1", trust_domain=None, bundle=None)))
    limit = empty + 170
    doc = identity_document(cluster="c1", trust_domain=None, bundle=anchors, max_bytes=limit)
    assert len(encode(doc)) <= limit
    assert [r["subject"] for r in doc["roots"]] == ["CN=small"]
    assert doc["truncated"] is True and doc["root_count"] == 2


def test_published_identity_builds_once_per_change_of_its_inputs() -> None:
    calls: list[tuple[str, str | None, TrustAnchors | None]] = []

    def build(*, cluster: str, trust_domain: str | None, bundle: TrustAnchors | None) -> bytes:
        calls.append((cluster, trust_domain, bundle))
        return f"{len(calls)}".encode()

    one = TrustAnchors.usable([pki.make_root("one").cert], source="one")
    same_content = TrustAnchors.usable(list(one.roots), source="one")  # a reload: new object
    published = PublishedIdentity(build=build)
    bodies = [published.body(cluster="c1", trust_domain="td", bundle=one) for _ in range(100)]
    assert set(bodies) == {b"1"} and len(calls) == 1
    assert published.body(cluster="c1", trust_domain="other", bundle=one) == b"2"
    assert published.body(cluster="c1", trust_domain="other", bundle=same_content) == b"3"
    assert published.body(cluster="c1", trust_domain="other", bundle=None) == b"4"
    assert published.body(cluster="c1", trust_domain="other", bundle=None) == b"4"


ONE_FP = b"a" * 64


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"cluster":"c1","roots":' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deeply"),
        (b'{"cluster":"c1","roots":[],"x":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001, "nested"),
        (b'{"cluster":"c1","roots":[],"n":' + b"9" * 5000 + b"}", "not JSON"),
        (b"{}", "no 'cluster' string"),
        (b'{"cluster":"c1","roots":[\xff]}', "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"cluster":"c1","roots":[],"truncated":"yes"}', "'truncated' is not a boolean"),
        (b'{"cluster":"c1","roots":[],"root_count":true}', "'root_count'"),
        (
            b'{"cluster":"c1","roots":[{"fingerprint_sha256":"' + ONE_FP + b'"}],"root_count":0}',
            "'root_count'",
        ),
        (b'{"cluster":"c1","roots":[7]}', "roots[0].fingerprint_sha256"),
    ],
)
def test_bad_documents_are_identity_errors(body: bytes, detail: str) -> None:
    assert len(body) <= IDENTITY_MAX_BYTES
    with pytest.raises(IdentityError) as raised:
        parse_identity(body, expected_cluster="c1")
    assert detail in str(raised.value)
