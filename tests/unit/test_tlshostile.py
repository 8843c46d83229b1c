"""Hostile certificates get a verdict, never an exception; unusable bundle roots are skipped once,
counted and logged, instead of failing every probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from meshprobe.demo import pki
from meshprobe.metrics import names as m
from meshprobe.metrics.instance import MeshprobeCollector
from meshprobe.model import Reason
from meshprobe.state.edges import ProbeState
from meshprobe.state.instance import InstanceStatus
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.verdict import assess_chain
from tests import certkit
from tests.certkit import der


def hostile_root(cn: str = "hostile root") -> pki.Issued:
    return certkit.ca(None, cn, extensions=[certkit.bad_name_constraints()])


def test_leaf_with_a_duplicated_extension_is_untrusted(
    inter: pki.Issued, anchors: TrustAnchors
) -> None:
    rep = assess_chain(
        der(certkit.with_duplicate_san(inter), inter), anchors=anchors, server_name="web.example"
    )
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "leaf 'CN=web.example' has malformed extensions: Duplicate 2.5.29.17" in rep.detail
    assert len(rep.chain) == 2  # still reported


def test_intermediate_with_malformed_name_constraints_is_untrusted(
    root: pki.Issued, anchors: TrustAnchors
) -> None:
    bad = certkit.ca(root, "hostile intermediate", extensions=[certkit.bad_name_constraints()])
    rep = assess_chain(der(certkit.leaf(bad), bad), anchors=anchors, server_name="web.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "intermediate 'CN=hostile intermediate'" in rep.detail
    assert "malformed extensions" in rep.detail


def test_unusable_bundle_root_is_skipped_counted_and_logged_once(
    root: pki.Issued, inter: pki.Issued, tmp_path: Path
) -> None:
    bad = hostile_root()
    path = tmp_path / "bundle.pem"
    pki.write_bundle(path, [bad, root])
    with capture_logs() as logs:
        anchors = TrustAnchors.from_file(path)
    assert anchors.roots == (root.cert,)
    assert anchors.skipped == 1
    (skipped,) = anchors.skipped_roots
    assert skipped.subject == "CN=hostile root"
    assert skipped.reason.startswith("extensions cannot be parsed:")
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["source"] == str(path) and warnings[0]["skipped"] == 1
    # The good root keeps working, and probing logs nothing more.
    with capture_logs() as logs:
        for _ in range(3):
            rep = assess_chain(
                der(certkit.leaf(inter), inter), anchors=anchors, server_name="web.example"
            )
            assert rep.verified, rep.detail
    assert logs == []


def test_chain_under_a_skipped_root_names_why_it_was_skipped(root: pki.Issued) -> None:
    bad = hostile_root()
    anchors = TrustAnchors.from_pem(bad.cert_pem() + root.cert_pem(), source="mixed")
    issuer = pki.make_intermediate(pki.Issued(bad.cert, bad.key), "under the hostile root")
    rep = assess_chain(der(certkit.leaf(issuer), issuer), anchors=anchors, server_name=None)
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert "issuer 'CN=hostile root'" in rep.detail
    assert "was skipped at load: extensions cannot be parsed" in rep.detail


def test_bundle_of_only_unusable_roots_is_an_error_not_an_empty_trust() -> None:
    with pytest.raises(ValueError, match=r"no usable certificate \(CN=hostile root: extensions"):
        TrustAnchors.from_pem(hostile_root().cert_pem(), source="bad")


def test_usable_never_raises_and_may_be_empty() -> None:
    anchors = TrustAnchors.usable([hostile_root().cert], source="limbo")
    assert anchors.roots == () and anchors.skipped == 1
    leaf = pki.make_self_signed_leaf("x.example", dns_names=["x.example"])
    rep = assess_chain(der(leaf), anchors=anchors, server_name="x.example")
    assert rep.reason is Reason.TLS_UNTRUSTED
    assert rep.detail.startswith(
        "no trust anchors loaded from limbo (skipped at load as unusable: 'CN=hostile root': "
        "extensions cannot be parsed:"
    )


def test_self_signed_root_whose_aki_names_another_key_is_skipped(root: pki.Issued) -> None:
    from cryptography import x509  # noqa: PLC0415

    stranger = pki.make_root("stranger")
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(stranger.key.public_key())
    odd = certkit.ca(None, "inconsistent root", extensions=[(aki, False)])
    anchors = TrustAnchors.from_pem(odd.cert_pem() + root.cert_pem(), source="b")
    assert [s.subject for s in anchors.skipped_roots] == ["CN=inconsistent root"]
    assert "authorityKeyIdentifier does not match" in anchors.skipped_roots[0].reason
    # A root whose AKI names itself is fine.
    own = x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key())
    fine = certkit.ca(None, "consistent root", key=root.key, extensions=[(own, False)])
    assert TrustAnchors.from_pem(fine.cert_pem(), source="c").skipped == 0


@pytest.mark.parametrize(
    "chain",
    [
        [b"\x30\x82\xff\xff"],  # a length beyond the data
        [b"\x30\x00"],
        [b"\xff" * 64],
    ],
)
def test_truncated_der_is_a_verdict(chain: list[bytes], anchors: TrustAnchors) -> None:
    rep = assess_chain(chain, anchors=anchors, server_name="x")
    assert rep.reason is Reason.TLS_UNTRUSTED and "unparseable" in rep.detail


def test_skipped_roots_are_exported_for_the_instance(root: pki.Issued, tmp_path: Path) -> None:
    path = tmp_path / "bundle.pem"
    pki.write_bundle(path, [hostile_root(), root])
    with capture_logs():
        anchors = TrustAnchors.from_file(path)
    status = InstanceStatus(bundle=anchors)
    collector = MeshprobeCollector(source_cluster="c1", state=ProbeState(), status=status)
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }
    assert values[(m.TRUST_BUNDLE_SKIPPED_ROOTS, (("source_cluster", "c1"),))] == 1.0
    roots = [k for k in values if k[0] == m.TRUST_ROOT_INFO]
    assert len(roots) == 1  # only the usable root is published
