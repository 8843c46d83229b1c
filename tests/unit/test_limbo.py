"""Conformance of the verdict with C2SP x509-limbo (the SERVER testcases).

The suite is read from the `shared` folder beside the repository (CI copies it next to the
clone) and never copied into the repository; without it these tests skip. Every SERVER case is
fed to `assess_chain` as a probe would: anchors from `trusted_certs` (loaded tolerantly, so a
hostile root is skipped, not raised on), the presented chain `peer_certificate` +
`untrusted_intermediates`, the server name from `expected_peer_name`, `now` from
`validation_time`.

"Expressible" cases are those whose inputs meshprobe can take; out are cases that need CRLs, a
custom max_chain_depth, a required EKU other than serverAuth (client validation), a
signature-algorithm or key-usage constraint, and the case limbo itself flags as incompatible with
the Web PKI profile meshprobe follows (its webpki twin stays in). docs/trust-conformance.md
classifies every remaining disagreement; a test keeps that list and the behaviour in step.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from structlog.testing import capture_logs

from meshprobe.model import Reason, TLSReport
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.verdict import assess_chain

LIMBO = Path(__file__).resolve().parents[3] / "shared/limbo/limbo.json.gz"
DOC = Path(__file__).resolve().parents[2] / "docs/trust-conformance.md"
MIN_AGREEMENT = 0.85

pytestmark = pytest.mark.skipif(not LIMBO.is_file(), reason=f"{LIMBO} not present")


@dataclass(frozen=True)
class Outcome:
    case: dict[str, Any]
    report: TLSReport | None
    error: BaseException | None

    @property
    def got(self) -> str:
        if self.report is None:
            return "RAISED"
        return "SUCCESS" if self.report.verified else "FAILURE"

    @property
    def agrees(self) -> bool:
        return self.got == self.case["expected_result"]


def out_of_scope(case: dict[str, Any]) -> str | None:
    """Why meshprobe cannot express a case, or None when it can."""
    if case["crls"]:
        return "needs CRLs"
    if case["max_chain_depth"] is not None:
        return "needs a custom max_chain_depth"
    if case["extended_key_usage"] not in ([], ["serverAuth"]):
        return "requires an EKU other than serverAuth (client validation)"
    if case["signature_algorithms"] or case["key_usage"]:
        return "constrains signature algorithms or key usage"
    if "rfc5280-incompatible-with-webpki" in case["features"]:
        return "incompatible with the Web PKI profile meshprobe follows"
    return None


def _der(pem: str) -> bytes:
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)


def _anchors(case: dict[str, Any]) -> TrustAnchors:
    certs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for pem in case["trusted_certs"]:
            try:
                certs.append(x509.load_pem_x509_certificate(pem.encode()))
            except ValueError:
                continue  # not even a certificate: nothing to anchor
    return TrustAnchors.usable(certs, source=f"limbo:{case['id']}")


def judge(case: dict[str, Any]) -> TLSReport:
    peer = case["expected_peer_name"]
    when = case["validation_time"]
    return assess_chain(
        [_der(p) for p in (case["peer_certificate"], *case["untrusted_intermediates"])],
        anchors=_anchors(case),
        server_name=peer["value"] if peer else None,
        now=datetime.fromisoformat(when) if when else None,
    )


@cache
def outcomes() -> dict[str, Outcome]:
    with gzip.open(LIMBO) as f:
        cases = json.load(f)["testcases"]
    out = {}
    with capture_logs():  # the skipped-root warnings of hostile bundles
        for case in cases:
            if case["validation_kind"] != "SERVER":
                continue
            try:
                out[case["id"]] = Outcome(case, judge(case), None)
            except Exception as exc:
                out[case["id"]] = Outcome(case, None, exc)
    return out


def expressible() -> Iterator[Outcome]:
    return (o for o in outcomes().values() if out_of_scope(o.case) is None)


def test_every_server_case_gets_a_verdict_without_raising() -> None:
    results = outcomes()
    assert len(results) == 198
    raised = {k: repr(o.error) for k, o in results.items() if o.error is not None}
    assert raised == {}
    # Nor through the last line of defence: each verdict comes from a rule that names its cause.
    unjudged = [
        k for k, o in results.items() if o.report and "could not be judged" in o.report.detail
    ]
    assert unjudged == []
    assert all(o.report and (o.report.verified or o.report.detail) for o in results.values())


@pytest.mark.parametrize(
    ("case_id", "reason", "detail"),
    [
        ("pathological::multiple-chains-expired-intermediate", None, "not on the verified path"),
        ("rfc5280::eku::ee-wrong-eku", Reason.TLS_UNTRUSTED, "[clientAuth] without serverAuth"),
        ("webpki::forbidden-weak-rsa-in-leaf", Reason.TLS_UNTRUSTED, "1024-bit RSA key"),
        ("webpki::forbidden-p192-leaf", Reason.TLS_UNTRUSTED, "EC key on secp192r1"),
        ("webpki::forbidden-dsa-leaf", Reason.TLS_UNTRUSTED, "has a DSA key"),
        ("rfc5280::duplicate-extensions", Reason.TLS_UNTRUSTED, "Duplicate 2.5.29.17"),
        ("rfc5280::nc::invalid-dnsname-wildcard", Reason.TLS_UNTRUSTED, "skipped at load"),
        ("rfc5280::nc::invalid-ipv4-address", Reason.TLS_UNTRUSTED, "skipped"),
        ("rfc5280::nc::invalid-ipv6-address", Reason.TLS_UNTRUSTED, "skipped"),
        ("webpki::aki::root-with-aki-authoritycertissuer", Reason.TLS_UNTRUSTED, "skipped"),
        ("webpki::aki::root-with-aki-authoritycertserialnumber", Reason.TLS_UNTRUSTED, "skipped"),
        ("webpki::san::no-san", Reason.TLS_IDENTITY, "has no subjectAltName"),
        ("rfc5280::validity::expired-intermediate", Reason.TLS_EXPIRED, "intermediate"),
        ("rfc5280::validity::expired-root", Reason.TLS_EXPIRED, "root"),
    ],
)
def test_named_cases_go_the_right_way(case_id: str, reason: Reason | None, detail: str) -> None:
    outcome = outcomes()[case_id]
    assert outcome.report is not None
    assert outcome.agrees, outcome.report.detail
    assert outcome.report.reason is reason
    assert detail in outcome.report.detail


def disagreements() -> list[Outcome]:
    return sorted((o for o in expressible() if not o.agrees), key=lambda o: o.case["id"])


def test_agreement_with_limbo(capsys: pytest.CaptureFixture[str]) -> None:
    cases = list(expressible())
    agreed = sum(o.agrees for o in cases)
    share = agreed / len(cases)
    with capsys.disabled():
        print(f"\nlimbo SERVER: {agreed}/{len(cases)} expressible cases agree ({share:.1%})")
        for o in disagreements():
            print(f"  {o.case['id']}: expected {o.case['expected_result']}, got {o.got}")
    assert share >= MIN_AGREEMENT


# Every case limbo rejects and meshprobe accepts, with why (docs/trust-conformance.md says more).
# None is about what matters to a mesh verdict: serverAuth, key strength, names, validity.
ACCEPTED_ON_PURPOSE = {
    "webpki::eku::ee-anyeku": "anyExtendedKeyUsage permits serverAuth (RFC 5280, Go)",
    "webpki::eku::ee-critical-eku": "X.509-SVID: the EKU MAY be critical",
    "webpki::eku::ee-without-eku": "no EKU means any usage (RFC 5280; SVIDs SHOULD, not MUST)",
    "webpki::eku::root-has-eku": "cryptography's verifier; a root EKU with serverAuth is harmless",
    "webpki::san::san-critical-with-nonempty-subject": "Istio marks the SAN critical always",
    "rfc5280::san::underscore-dns": "exact match on an internal name, as Go accepts",
    "rfc5280::aki::leaf-missing-aki": "leaves of pre-2020 mesh roots without SKI carry no AKI",
    "rfc5280::aki::intermediate-missing-aki": "cryptography's verifier",
    "rfc5280::aki::cross-signed-root-missing-aki": "cryptography's verifier",
    "rfc5280::ski::root-missing-ski": "cryptography's verifier",
    "rfc5280::ski::intermediate-missing-ski": "cryptography's verifier",
    "webpki::aki::root-with-aki-all-fields": "cryptography's verifier",
    "webpki::san::public-suffix-multi-label-wildcard-san": "no public suffix list",
    "webpki::san::public-suffix-private-namespace-wildcard-san": "no public suffix list",
    **{
        f"webpki::cn::{name}": "the CN is never read, as in browsers, Go and rustls"
        for name in (
            "ipv4-hex-mismatch",
            "ipv4-leading-zeros-mismatch",
            "ipv6-uppercase-mismatch",
            "ipv6-uncompressed-mismatch",
            "ipv6-non-rfc5952-mismatch",
            "punycode-not-in-san",
            "utf8-vs-punycode-mismatch",
            "not-in-san",
            "case-mismatch",
        )
    },
}


def test_every_false_accept_is_one_on_purpose() -> None:
    accepted = {o.case["id"] for o in disagreements() if o.got == "SUCCESS"}
    assert accepted <= set(ACCEPTED_ON_PURPOSE), accepted - set(ACCEPTED_ON_PURPOSE)


def test_every_disagreement_is_classified_in_the_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Disagreements", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^- `([^`]+)`", section, flags=re.MULTILINE))
    assert documented == {o.case["id"] for o in disagreements()}
