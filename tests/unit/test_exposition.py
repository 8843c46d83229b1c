"""The fast edge exposition says exactly what ProbeState holds, in valid text format."""

import shutil
import subprocess
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshprobe.metrics.edges import SLICE, edge_exposition
from meshprobe.model import (
    CertRole,
    CertSummary,
    Phase,
    ProbeResult,
    Reason,
    TCPStats,
    TLSReport,
)
from meshprobe.state.edges import ProbeState
from tests.unit.test_state import target

BASE = target('ns/svc "quoted"\\back', scheme="https", url="https://127.0.0.1:1/")
CERT = CertSummary("CN=l", "CN=i", 0.0, 2e9, "ab" * 32, CertRole.LEAF)
ROOT = CertSummary("CN=r", "CN=r", 0.0, 3e9, "cd" * 32, CertRole.ROOT, from_bundle=True)
TLS = TLSReport(
    True,
    None,
    "verified",
    (CERT,),
    ROOT,
    "spiffe://td/ns/a/sa/b",
    version="TLSv1.3",
    cipher="TLS_AES_128_GCM_SHA256",
)


def render(state: ProbeState) -> str:
    return "".join(edge_exposition(state, "c1"))


def test_samples_match_the_state_and_labels_are_escaped() -> None:
    state = ProbeState()
    state.set_targets([BASE])
    state.record(
        BASE,
        ProbeResult(
            success=True,
            duration=0.012,
            phases={Phase.CONNECT: 0.001, Phase.TLS: 0.004},
            served_by="c2",
            tls=TLS,
            tcp=TCPStats(rtt=0.0004, retransmits=1),
        ),
    )
    after_handshake = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in EDGE))): s.value
        for f in text_string_to_metric_families(render(state))
        for s in f.samples
    }
    # An answer over the 100 ms budget, then a timeout: only the answer is latency.
    slow = ProbeResult(success=True, duration=0.2, tcp=TCPStats(rtt=0.0009, retransmits=2))
    state.record(BASE, slow)
    state.record(BASE, ProbeResult(success=False, duration=0.5, reason=Reason.TIMEOUT))
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in EDGE))): s.value
        for f in text_string_to_metric_families(render(state))
        for s in f.samples
    }
    labels = next(
        s.labels
        for f in text_string_to_metric_families(render(state))
        for s in f.samples
        if s.name == "meshprobe_probe_success"
    )
    assert labels == {
        "source_cluster": "c1",
        "target_cluster": "c2",
        "target": 'ns/svc "quoted"\\back',
        "scope": "remote",
        "probe": "http",
    }
    assert samples[("meshprobe_probe_success", ())] == 0.0
    assert samples[("meshprobe_probes_total", ())] == 3.0
    assert samples[("meshprobe_probe_failures_total", (("reason", "timeout"),))] == 1.0
    # A reason's counter is born with its first failure: no zero for every reason the kind has.
    assert ("meshprobe_probe_failures_total", (("reason", "dns"),)) not in samples
    # The SLO's bad events are failures plus answers over budget, and these two are disjoint:
    # the timeout is a failure, not also an over-budget probe, nor a latency sample.
    assert samples[("meshprobe_probe_over_budget_total", ())] == 1.0
    assert samples[("meshprobe_probe_duration_seconds_count", ())] == 2.0
    assert samples[("meshprobe_probe_duration_seconds_sum", ())] == pytest.approx(0.212)
    assert samples[("meshprobe_probe_duration_seconds_bucket", (("le", "0.01"),))] == 0.0
    assert samples[("meshprobe_probe_duration_seconds_bucket", (("le", "0.025"),))] == 1.0
    assert samples[("meshprobe_probe_duration_seconds_bucket", (("le", "+Inf"),))] == 2.0
    # Kernel diagnostics: the last RTT read, retransmits summed over probes.
    assert samples[("meshprobe_tcp_rtt_seconds", ())] == 0.0009
    assert samples[("meshprobe_tcp_retransmits_total", ())] == 3.0
    assert samples[("meshprobe_served_total", (("served_by_cluster", "c2"),))] == 1.0
    assert samples[("meshprobe_latency_budget_seconds", ())] == 0.1
    assert after_handshake[("meshprobe_tls_verified", ())] == 1.0
    expiry = ("meshprobe_tls_cert_expiry_timestamp_seconds", (("role", "root"),))
    assert after_handshake[expiry] == 3e9
    info = (
        ("cipher", "TLS_AES_128_GCM_SHA256"),
        ("identity", "spiffe://td/ns/a/sa/b"),
        ("root_fingerprint_sha256", "cd" * 32),
        ("version", "TLSv1.3"),
    )
    assert after_handshake[("meshprobe_tls_peer_info", info)] == 1.0
    # The last attempt presented no chain: no TLS series vouches for the old one.
    assert not [k for k in samples if k[0].startswith("meshprobe_tls_")]
    # The last result failed before any phase: every phase of the kind is there, at 0.
    assert samples[("meshprobe_probe_phase_duration_seconds", (("phase", "tls"),))] == 0.0


EDGE = {"source_cluster", "target_cluster", "target", "scope", "probe"}


def test_many_edges_come_in_slices_and_pass_promtool() -> None:
    state = ProbeState()
    targets = [replace(BASE, name=f"ns/svc-{i}") for i in range(SLICE * 2 + 7)]
    state.set_targets(targets)
    for t in targets:
        state.record(t, ProbeResult(success=True, duration=0.003, tls=TLS))
    chunks = list(edge_exposition(state, "c1"))
    text = "".join(chunks)
    assert len(chunks) > 3 * 11  # every family split over three slices
    probed = [
        s
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "meshprobe_probes_total"
    ]
    assert len(probed) == len(targets)
    promtool = shutil.which("promtool")
    assert promtool is not None
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint.stderr


def test_lines_kept_between_scrapes_follow_the_target_and_the_chain() -> None:
    """The label set, the budget and the TLS lines are reused between scrapes: a new budget, a
    new chain or a new identity shows at once, and the verdict is never reused."""
    state = ProbeState()
    state.set_targets([BASE])
    state.record(BASE, ProbeResult(success=True, duration=0.01, tls=TLS))

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in EDGE))): s.value
            for f in text_string_to_metric_families(render(state))
            for s in f.samples
        }

    first = samples()
    assert first[("meshprobe_latency_budget_seconds", ())] == 0.1
    assert first[("meshprobe_tls_verified", ())] == 1.0
    renewed = replace(CERT, not_after=2.5e9)
    other = replace(TLS, chain=(renewed,), identity="spiffe://td/ns/a/sa/c", version="TLSv1.2")
    state.record(BASE, ProbeResult(success=True, duration=0.01, tls=other))
    second = samples()
    leaf = ("meshprobe_tls_cert_expiry_timestamp_seconds", (("role", "leaf"),))
    assert second[leaf] == 2.5e9
    assert [k for k in second if k[0] == "meshprobe_tls_peer_info"] == [
        (
            "meshprobe_tls_peer_info",
            (
                ("cipher", "TLS_AES_128_GCM_SHA256"),
                ("identity", "spiffe://td/ns/a/sa/c"),
                ("root_fingerprint_sha256", "cd" * 32),
                ("version", "TLSv1.2"),
            ),
        )
    ]
    refused = replace(other, verified=False, reason=Reason.TLS_IDENTITY)
    state.record(
        BASE, ProbeResult(success=False, duration=0.01, reason=Reason.TLS_IDENTITY, tls=refused)
    )
    assert samples()[("meshprobe_tls_verified", ())] == 0.0
    state.set_targets([replace(BASE, budget=0.25)])
    assert samples()[("meshprobe_latency_budget_seconds", ())] == 0.25


def test_grpc_edges_pass_promtool_with_their_status_gauges() -> None:
    grpc_target = target("mesh/echo", scheme="grpc", url="grpc://127.0.0.1:9943")
    down = target("mesh/down", scheme="grpc", url="grpc://127.0.0.1:9944")
    state = ProbeState()
    state.set_targets([grpc_target, down])
    state.record(
        grpc_target,
        ProbeResult(success=True, duration=0.002, grpc_status=0, grpc_serving=1),
    )
    state.record(
        down,
        ProbeResult(
            success=False, duration=0.002, reason=Reason.GRPC_STATUS, grpc_status=0, grpc_serving=2
        ),
    )
    text = render(state)
    values = {
        (s.name, s.labels["target"]): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith("meshprobe_grpc_")
    }
    assert values == {
        ("meshprobe_grpc_status_code", "mesh/echo"): 0.0,
        ("meshprobe_grpc_status_code", "mesh/down"): 0.0,
        ("meshprobe_grpc_serving_status", "mesh/echo"): 1.0,
        ("meshprobe_grpc_serving_status", "mesh/down"): 2.0,
    }
    assert 'reason="grpc_status"' in text and 'probe="grpc"' in text
    promtool = shutil.which("promtool")
    assert promtool is not None
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0 and lint.stdout == "" and lint.stderr == "", lint.stderr
