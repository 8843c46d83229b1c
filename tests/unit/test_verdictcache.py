from meshprobe import pki
from meshprobe.tlscheck import TrustAnchors
from meshprobe.verdictcache import VerdictCache


def _chain() -> tuple[list[bytes], TrustAnchors]:
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    root = pki.make_root("r")
    leaf = pki.make_leaf(root, "l", dns_names=["svc.example"])
    return [leaf.cert.public_bytes(Encoding.DER)], TrustAnchors.from_pem(
        root.cert_pem(), source="r"
    )


def test_same_chain_and_expectations_reuse_the_verdict() -> None:
    chain, anchors = _chain()
    cache = VerdictCache()
    args = {
        "server_name": "svc.example",
        "expected_identity": None,
        "trust_domain": None,
        "version": "TLSv1.3",
        "cipher": "x",
    }
    first = cache.assess(chain, anchors=anchors, **args)
    again = cache.assess(list(chain), anchors=anchors, **args)
    assert first.verified and again is first
    assert (cache.hits, cache.misses) == (1, 1)


def test_new_anchors_or_expectations_are_judged_afresh() -> None:
    chain, anchors = _chain()
    cache = VerdictCache()
    args = {"expected_identity": None, "trust_domain": None, "version": None, "cipher": None}
    assert cache.assess(chain, anchors=anchors, server_name="svc.example", **args).verified
    other = cache.assess(chain, anchors=anchors, server_name="other.example", **args)
    assert not other.verified and other.reason is not None
    reloaded = TrustAnchors.from_pem(pki.make_root("new").cert_pem(), source="new")
    assert not cache.assess(chain, anchors=reloaded, server_name="svc.example", **args).verified
    assert cache.misses == 3


def test_ttl_zero_never_reuses() -> None:
    chain, anchors = _chain()
    cache = VerdictCache(ttl=0.0)
    args = {
        "server_name": "svc.example",
        "expected_identity": None,
        "trust_domain": None,
        "version": None,
        "cipher": None,
    }
    cache.assess(chain, anchors=anchors, **args)
    cache.assess(chain, anchors=anchors, **args)
    assert cache.hits == 0


def test_an_expired_chain_or_an_expired_extra_is_still_reused() -> None:
    """Only future validity boundaries end a reuse: past ones would make every probe a miss."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    now = datetime.now(UTC)
    root = pki.make_root("r")
    anchors = TrustAnchors.from_pem(root.cert_pem(), source="r")
    old = pki.make_leaf(
        root,
        "l",
        dns_names=["svc.example"],
        not_before=now - timedelta(days=2),
        not_after=now - timedelta(days=1),
    )
    fresh = pki.make_leaf(root, "l", dns_names=["svc.example"])
    lapsed_ca = pki.make_root("lapsed", not_before=now - timedelta(days=9), not_after=now)
    args = {
        "server_name": "svc.example",
        "expected_identity": None,
        "trust_domain": None,
        "version": None,
        "cipher": None,
    }
    cache = VerdictCache()
    for chain in (
        [old.cert.public_bytes(Encoding.DER)],
        [fresh.cert.public_bytes(Encoding.DER), lapsed_ca.cert.public_bytes(Encoding.DER)],
    ):
        first = cache.assess(chain, anchors=anchors, **args)
        assert cache.assess(chain, anchors=anchors, **args) is first
    assert (cache.hits, cache.misses) == (2, 2)
