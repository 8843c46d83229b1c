"""The TLS series of an edge describe its latest attempt, through a real TLS server on loopback:
while the server answers they show its chain, version and cipher; once it stops answering before
any chain is presented they are absent, not a stale vouching for the last chain seen."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from meshprobe.metrics import names as m
from meshprobe.metrics.edges import edge_exposition
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.state.edges import ProbeState
from tests.integration import faults
from tests.integration.faults import SPIFFE_ID, FaultServer, TestPki, make_target

TLS_FAMILIES = {m.TLS_VERIFIED, m.TLS_CERT_EXPIRY, m.TLS_PEER_INFO}


def tls_samples(state: ProbeState) -> dict[str, list[dict[str, str]]]:
    text = "".join(edge_exposition(state, "cluster1"))
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in TLS_FAMILIES:
                out.setdefault(sample.name, []).append(sample.labels)
    return out


async def test_tls_series_follow_the_latest_attempt(env: ProbeEnv, test_pki: TestPki) -> None:
    state = ProbeState()
    async with FaultServer(faults.hold, tls=test_pki.good()) as srv:
        target = make_target(srv.url("tls"), tls={"identity": SPIFFE_ID})
        state.set_targets([target])
        first = await run_probe(target, env)
    assert first.success, first.detail
    state.record(target, first)
    seen = tls_samples(state)
    assert set(seen) == TLS_FAMILIES
    (version,) = seen[m.TLS_PEER_INFO]
    assert version["version"].startswith("TLSv1.")
    assert version["cipher"]  # e.g. TLS_AES_256_GCM_SHA384
    # The server is gone: the next attempt is refused before any handshake.
    second = await run_probe(target, env)
    assert not second.success and second.tls is None
    state.record(target, second)
    assert tls_samples(state) == {}
