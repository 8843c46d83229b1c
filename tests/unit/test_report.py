from __future__ import annotations

from meshprobe.cli.report import render
from meshprobe.model import CertRole, CertSummary, ProbeResult, Scope, Target, TLSReport


def cert(subject: str, role: CertRole, **kw: object) -> CertSummary:
    return CertSummary(subject, "CN=r", 0.0, 2e9, subject.encode().hex(), role, **kw)  # type: ignore[arg-type]


def test_chain_marks_certificates_off_the_verified_path() -> None:
    target = Target("t", "tls://h:1", "tls", "h", 1, "/", "c1", Scope.LOCAL, 10.0, 2.0, 0.1)
    chain = (
        cert("CN=leaf", CertRole.LEAF),
        cert("CN=inter", CertRole.INTERMEDIATE),
        cert("CN=old cross", CertRole.INTERMEDIATE, extra=True),
    )
    root = cert("CN=r", CertRole.ROOT, from_bundle=True)
    tls = TLSReport(True, None, "verified (ignored ...)", chain, root, "leaf")
    text = render(target, ProbeResult(True, 0.01, tls=tls), now=1e9)
    lines = text.splitlines()
    assert "  intermediate [sent but not on the verified path: ignored]" in lines
    assert lines.count("  intermediate") == 1
    assert "  root [from our trust bundle]" in lines
