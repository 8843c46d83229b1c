"""Human-readable rendering of one probe, for `meshprobe probe`."""

from __future__ import annotations

from datetime import UTC, datetime

from meshprobe.model import KIND_PHASES, CertSummary, ProbeResult, Target


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _when(ts: float, now: float) -> str:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    days = (ts - now) / 86400
    left = f"in {days:.1f} d" if days >= 0 else f"EXPIRED {-days:.1f} d ago"
    return f"{stamp} ({left})"


def _cert_lines(cert: CertSummary, now: float) -> list[str]:
    origin = " [from our trust bundle]" if cert.from_bundle else ""
    if cert.extra:
        origin = " [sent but not on the verified path: ignored]"
    lines = [
        f"  {cert.role.value}{origin}",
        f"    subject:  {cert.subject or '(empty)'}",
        f"    issuer:   {cert.issuer}",
        f"    expires:  {_when(cert.not_after, now)}",
        f"    sha256:   {cert.fingerprint_sha256}",
    ]
    sans = [*cert.uris, *cert.dns_names, *cert.ip_addresses]
    if sans:
        lines.append(f"    SANs:     {', '.join(sans)}")
    return lines


def render(
    target: Target, result: ProbeResult, *, now: float | None = None, client: str | None = None
) -> str:
    """`client`: the client certificate presented (or why none), for a target that names one."""
    now = now if now is not None else datetime.now(UTC).timestamp()
    verdict = "SUCCESS" if result.success else f"FAILED ({result.reason})"
    shown = target.shown_url
    lines = [f"{target.kind.value} probe of {shown}: {verdict} in {_ms(result.duration)}"]
    if result.detail:
        lines.append(f"  detail: {result.detail}")
    if client is not None:
        lines.append(f"  client certificate: {client}")
    lines.append("phases:")
    for phase in KIND_PHASES[target.scheme]:
        value = result.phases.get(phase)
        lines.append(f"  {phase.value:<11} {_ms(value) if value is not None else '-'}")
    if result.tcp is not None:
        rtt = _ms(result.tcp.rtt) if result.tcp.rtt is not None else "-"
        lines.append(f"kernel tcp: rtt {rtt}, retransmits {result.tcp.retransmits}")
    if result.status_code is not None:
        lines.append(f"status: {result.status_code}")
    if result.served_by:
        lines.append(f"served by cluster: {result.served_by}")
    tls = result.tls
    if tls is not None:
        lines.append(
            f"tls: {tls.version or '?'} {tls.cipher or ''}".rstrip()
            + f"; verified: {'yes' if tls.verified else 'no'}"
            + (f" ({tls.reason}: {tls.detail})" if not tls.verified else "")
        )
        if tls.identity:
            lines.append(f"  identity: {tls.identity}")
        lines.append("presented chain:")
        for cert in tls.chain:
            lines.extend(_cert_lines(cert, now))
        if tls.root is not None and all(
            c.fingerprint_sha256 != tls.root.fingerprint_sha256 for c in tls.chain
        ):
            lines.append("anchored at:")
            lines.extend(_cert_lines(tls.root, now))
    return "\n".join(lines)
