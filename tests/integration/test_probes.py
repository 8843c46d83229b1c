"""Every failure reason produced by a real faulty server, and the success paths, per probe kind.

Each test runs on the default event loop and on uvloop (see conftest). Timeouts are short so the
suite stays fast; nothing sleeps to synchronise, every wait is on a real event.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from structlog.testing import capture_logs

import meshprobe
from meshprobe import probes
from meshprobe.demo import pki
from meshprobe.model import CertRole, Phase, ProbeKind, ProbeResult, Reason, Target
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.probes.env import Attempt
from meshprobe.probes.tcp import connect_reason
from meshprobe.probes.tcpinfo import read_tcp_info
from tests.integration import faults
from tests.integration.faults import (
    OTHER_SPIFFE_ID,
    SPIFFE_ID,
    UNKNOWN_HOST,
    FaultServer,
    Reply,
    TestPki,
    make_target,
)

MiB = 1024 * 1024
SHORT = 0.3  # timeout for the faults that hang
# libuv (uvloop) keeps its clock in whole milliseconds, so its deadline may fire up to 1 ms before
# the same span on the monotonic clock that durations are measured with.
TIMER_GRAIN = 0.001


def assert_failed(result: ProbeResult, reason: Reason) -> None:
    assert (result.success, result.reason) == (False, reason), result.detail
    assert result.detail
    assert result.duration >= 0


def assert_phases(result: ProbeResult, expected: tuple[Phase, ...]) -> None:
    assert set(result.phases) == set(expected), result.phases
    assert all(v >= 0 for v in result.phases.values()), result.phases


# -- http ----------------------------------------------------------------------------------------


async def test_http_success_phases_and_request(env: ProbeEnv) -> None:
    async with FaultServer(faults.http(Reply(body=b"hello"))) as srv:
        target = make_target(srv.url(path="/healthz?x=1"), headers=(("X-Probe", "yes"),))
        result = await run_probe(target, env)
    assert result.success, result.detail
    assert (result.reason, result.status_code, result.body_bytes) == (None, 200, 5)
    assert_phases(result, (Phase.RESOLVE, Phase.CONNECT, Phase.PROCESSING, Phase.TRANSFER))
    assert result.phases[Phase.RESOLVE] == 0.0  # an IP literal
    assert result.phases[Phase.CONNECT] > 0
    assert sum(result.phases.values()) <= result.duration
    assert result.tls is None
    (request,) = srv.requests
    assert (request.method, request.path) == ("GET", "/healthz?x=1")
    assert request.headers["user-agent"] == f"meshprobe/{meshprobe.__version__}"
    assert request.headers["x-probe"] == "yes"


async def test_http_named_host_measures_resolve(env: ProbeEnv) -> None:
    async with FaultServer(faults.http()) as srv:
        result = await run_probe(make_target(f"http://localhost:{srv.port}/"), env)
    assert result.success, result.detail
    assert result.phases[Phase.RESOLVE] > 0


async def test_http_slow_answer_shows_in_processing(env: ProbeEnv) -> None:
    async with FaultServer(faults.http(Reply(delay=0.2))) as srv:
        result = await run_probe(make_target(srv.url()), env)
    assert result.success, result.detail
    assert result.phases[Phase.PROCESSING] >= 0.2
    assert result.phases[Phase.CONNECT] < 0.2


async def test_served_by_header(env: ProbeEnv) -> None:
    async with FaultServer(faults.echo("cluster2")) as srv:
        result = await run_probe(make_target(srv.url("http", "/v1/echo")), env)
    assert result.success, result.detail
    assert result.served_by == "cluster2"


async def test_fresh_connection_per_probe(env: ProbeEnv) -> None:
    async with FaultServer(faults.http()) as srv:
        target = make_target(srv.url())
        first = await run_probe(target, env)
        second = await run_probe(target, env)
    assert first.success and second.success
    assert srv.connections == 2
    assert second.phases[Phase.CONNECT] > 0


async def test_http_wrong_status(env: ProbeEnv) -> None:
    async with FaultServer(faults.http(Reply(status=503))) as srv:
        result = await run_probe(make_target(srv.url()), env)
        expected = await run_probe(make_target(srv.url(), expected_status=frozenset({503})), env)
    assert_failed(result, Reason.HTTP_STATUS)
    assert result.status_code == 503
    assert expected.success, expected.detail


async def test_http_redirect_loop_says_so(env: ProbeEnv) -> None:
    loop = Reply(status=302, headers=(("Location", "/again"),))
    async with FaultServer(faults.http(loop)) as srv:
        result = await run_probe(make_target(srv.url(), follow_redirects=True), env)
    assert_failed(result, Reason.HTTP_STATUS)
    assert result.detail == "too many redirects (10)"


async def test_http_redirect_not_followed(env: ProbeEnv) -> None:
    reply = Reply(status=302, headers=(("Location", "/elsewhere"),))
    async with FaultServer(faults.http(reply)) as srv:
        result = await run_probe(make_target(srv.url()), env)
    assert_failed(result, Reason.HTTP_STATUS)
    assert (result.status_code, len(srv.requests)) == (302, 1)


async def test_http_body_regex(env: ProbeEnv) -> None:
    async with FaultServer(faults.http(Reply(body=b'{"status": "degraded"}'))) as srv:
        mismatch = await run_probe(make_target(srv.url(), body_regex='"status": "ok"'), env)
        match = await run_probe(make_target(srv.url(), body_regex='"status": "(ok|degr)'), env)
    assert_failed(mismatch, Reason.BODY_MISMATCH)
    assert match.success, match.detail


async def test_http_body_too_large_stops_early(env: ProbeEnv) -> None:
    async with FaultServer(faults.big_body(50 * MiB)) as srv:
        result = await run_probe(make_target(srv.url(), body_limit=MiB), env)
    assert_failed(result, Reason.BODY_TOO_LARGE)
    assert MiB < result.body_bytes <= MiB + 64 * 1024  # never more than one chunk past the limit


async def test_http_hang_times_out_keeping_phases(env: ProbeEnv) -> None:
    async with FaultServer(faults.hang) as srv:
        result = await run_probe(make_target(srv.url(), timeout=SHORT), env)
    assert_failed(result, Reason.TIMEOUT)
    assert SHORT - TIMER_GRAIN <= result.duration < SHORT + 1.0
    assert Phase.CONNECT in result.phases  # measured before the server went silent
    # The wait for an answer is where the time went: processing runs until the deadline.
    assert result.phases[Phase.PROCESSING] > result.phases[Phase.CONNECT]
    assert Phase.TRANSFER not in result.phases
    assert sum(result.phases.values()) <= result.duration


async def test_https_hang_after_handshake_keeps_tls_report(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    async with FaultServer(faults.hang, tls=test_pki.good()) as srv:
        result = await run_probe(make_target(srv.url("https"), timeout=SHORT), env)
    assert_failed(result, Reason.TIMEOUT)
    assert {Phase.RESOLVE, Phase.CONNECT, Phase.TLS} <= set(result.phases)
    assert result.tls is not None and result.tls.verified


async def test_http_refused(env: ProbeEnv) -> None:
    with faults.refused_port() as port:
        result = await run_probe(make_target(f"http://127.0.0.1:{port}/"), env)
    assert_failed(result, Reason.CONNECT_REFUSED)


def test_other_connect_errors_map_to_connect_error() -> None:
    # Unreachable networks cannot be produced on loopback without touching other addresses,
    # which these tests never do; the mapping itself is what is checked here.
    assert connect_reason(OSError(errno.EHOSTUNREACH, "no route")) is Reason.CONNECT_ERROR
    assert connect_reason(ConnectionRefusedError()) is Reason.CONNECT_REFUSED


async def test_http_dns(env: ProbeEnv) -> None:
    result = await run_probe(make_target(f"http://{UNKNOWN_HOST}:8080/"), env)
    assert_failed(result, Reason.DNS)
    assert result.duration < 1.0


async def test_http_reset_mid_response(env: ProbeEnv) -> None:
    async with FaultServer(faults.reset_mid_response) as srv:
        result = await run_probe(make_target(srv.url()), env)
    assert_failed(result, Reason.RESET)


async def test_http_garbage_is_protocol(env: ProbeEnv) -> None:
    async with FaultServer(faults.garbage) as srv:
        result = await run_probe(make_target(srv.url()), env)
    assert_failed(result, Reason.PROTOCOL)
    assert result.status_code is None


# -- https ---------------------------------------------------------------------------------------


async def test_https_success(env: ProbeEnv, test_pki: TestPki) -> None:
    async with FaultServer(faults.echo("cluster2"), tls=test_pki.good()) as srv:
        target = make_target(srv.url("https", "/v1/echo"), tls={"identity": SPIFFE_ID})
        result = await run_probe(target, env)
    assert result.success, result.detail
    assert_phases(result, tuple(Phase))
    assert result.phases[Phase.TLS] > 0
    assert result.served_by == "cluster2"
    tls = result.tls
    assert tls is not None and tls.verified and tls.reason is None
    assert [c.role for c in tls.chain] == [CertRole.LEAF, CertRole.INTERMEDIATE]
    assert tls.root is not None and tls.root.from_bundle
    assert tls.root.fingerprint_sha256 == test_pki.root.cert.fingerprint(hashes.SHA256()).hex()
    assert tls.identity == SPIFFE_ID
    assert tls.version == "TLSv1.3" and tls.cipher


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("self_signed_ctx", Reason.TLS_UNTRUSTED),
        ("from_other_ca", Reason.TLS_UNTRUSTED),
        ("expired_leaf_ctx", Reason.TLS_EXPIRED),
        ("expired_intermediate_ctx", Reason.TLS_EXPIRED),
        ("wrong_identity_ctx", Reason.TLS_IDENTITY),
    ],
)
@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_bad_chains(
    env: ProbeEnv, test_pki: TestPki, server: str, reason: Reason, scheme: str
) -> None:
    context = getattr(test_pki, server)()
    async with FaultServer(faults.echo("cluster2"), tls=context) as srv:
        target = make_target(srv.url(scheme), tls={"identity": SPIFFE_ID})
        result = await run_probe(target, env)
    assert_failed(result, reason)
    assert result.tls is not None and result.tls.reason is reason
    assert result.tls.chain  # the chain is reported even when refused
    assert Phase.TLS in result.phases
    assert srv.requests == []  # the verdict failed the handshake: nothing reached the server
    if server == "wrong_identity_ctx":
        assert result.tls.identity == OTHER_SPIFFE_ID


async def test_https_insecure_skip_verify_records_but_passes(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    async with FaultServer(faults.http(), tls=test_pki.self_signed_ctx()) as srv:
        target = make_target(srv.url("https"), tls={"insecure_skip_verify": True})
        result = await run_probe(target, env)
    assert result.success, result.detail
    assert result.tls is not None and result.tls.reason is Reason.TLS_UNTRUSTED
    assert len(srv.requests) == 1


async def test_https_ca_file_overrides_bundle(
    env: ProbeEnv, test_pki: TestPki, tmp_path: Path
) -> None:
    bundle = tmp_path / "other-ca.pem"
    pki.write_bundle(bundle, [test_pki.other_root])
    async with FaultServer(faults.http(), tls=test_pki.from_other_ca()) as srv:
        with_file = make_target(srv.url("https"), tls={"ca_file": str(bundle)})
        result = await run_probe(with_file, env)
        missing = make_target(srv.url("https"), tls={"ca_file": str(tmp_path / "nope.pem")})
        unusable = await run_probe(missing, env)
    assert result.success, result.detail
    assert_failed(unusable, Reason.TLS_UNTRUSTED)


@pytest.mark.parametrize("path", ["/dev/zero", "."])
async def test_a_ca_file_that_is_no_file_fails_at_once(
    env: ProbeEnv, test_pki: TestPki, path: str
) -> None:
    """A device or a directory named as ca_file must not be read (an endless /dev/zero would
    fill memory): the probe fails with a reason, well inside its timeout."""
    async with FaultServer(faults.http(), tls=test_pki.good()) as srv:
        result = await run_probe(make_target(srv.url("https"), tls={"ca_file": path}), env)
    assert_failed(result, Reason.TLS_UNTRUSTED)
    assert "ca_file unusable" in result.detail
    assert "not a regular file" in result.detail or "is a directory" in result.detail
    assert result.duration < 1.0


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_tls_garbage_is_handshake_failure(env: ProbeEnv, scheme: str) -> None:
    async with FaultServer(faults.tls_garbage) as srv:
        result = await run_probe(make_target(srv.url(scheme)), env)
    assert_failed(result, Reason.TLS_HANDSHAKE)
    assert result.tls is None


async def test_https_keepalive_reuses_connection(env: ProbeEnv, test_pki: TestPki) -> None:
    async with FaultServer(faults.http(), tls=test_pki.good()) as srv:
        target = make_target(srv.url("https"), keepalive=True)
        first = await run_probe(target, env)
        second = await run_probe(target, env)
        env.forget(target)
    assert first.success and second.success, (first.detail, second.detail)
    assert (srv.connections, len(srv.requests)) == (1, 2)
    assert first.phases[Phase.CONNECT] > 0 and first.phases[Phase.TLS] > 0
    assert second.phases[Phase.RESOLVE] == second.phases[Phase.CONNECT] == 0.0
    assert second.phases[Phase.TLS] == 0.0
    assert second.tls is not None and second.tls == first.tls


# -- tcp and tls ---------------------------------------------------------------------------------


async def test_tcp_success(env: ProbeEnv) -> None:
    async with FaultServer(faults.hold) as srv:
        result = await run_probe(make_target(srv.url("tcp")), env)
    assert result.success, result.detail
    assert_phases(result, (Phase.RESOLVE, Phase.CONNECT))
    assert result.phases[Phase.CONNECT] > 0


async def test_tcp_named_host_measures_resolve(env: ProbeEnv) -> None:
    async with FaultServer(faults.hold) as srv:
        result = await run_probe(make_target(f"tcp://localhost:{srv.port}"), env)
    assert result.success, result.detail
    assert result.phases[Phase.RESOLVE] > 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [(UNKNOWN_HOST, Reason.DNS)],
)
@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_tcp_tls_unreachable(env: ProbeEnv, host: str, reason: Reason, scheme: str) -> None:
    result = await run_probe(make_target(f"{scheme}://{host}:4143"), env)
    assert_failed(result, reason)


@pytest.mark.parametrize("scheme", ["tcp", "tls"])
async def test_tcp_tls_refused(env: ProbeEnv, scheme: str) -> None:
    with faults.refused_port() as port:
        result = await run_probe(make_target(f"{scheme}://127.0.0.1:{port}"), env)
    assert_failed(result, Reason.CONNECT_REFUSED)


async def test_tls_success_and_clean_close(env: ProbeEnv, test_pki: TestPki) -> None:
    async with FaultServer(faults.hold, tls=test_pki.good()) as srv:
        target = make_target(srv.url("tls"), tls={"identity": SPIFFE_ID})
        result = await run_probe(target, env)
        await env.aclose()  # waits for the polite close the probe started in the background
        assert srv.clean_closes == 1  # the server saw close_notify, not a dropped connection
    assert result.success, result.detail
    assert_phases(result, (Phase.RESOLVE, Phase.CONNECT, Phase.TLS))
    assert result.tls is not None and result.tls.verified
    assert [c.role for c in result.tls.chain] == [CertRole.LEAF, CertRole.INTERMEDIATE]


async def test_tls_silent_server_times_out_with_connect_phase(env: ProbeEnv) -> None:
    async with FaultServer(faults.hang) as srv:
        result = await run_probe(make_target(srv.url("tls"), timeout=SHORT), env)
    assert_failed(result, Reason.TIMEOUT)
    # The ClientHello went out and no answer came: the handshake is where the time went.
    assert result.phases[Phase.TLS] > result.phases[Phase.CONNECT]
    assert sum(result.phases.values()) <= result.duration


# -- run_probe's guarantees ----------------------------------------------------------------------


async def test_unexpected_exception_becomes_protocol(
    env: ProbeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(target: Target, env: ProbeEnv, attempt: Attempt) -> ProbeResult:
        raise KeyError("bug")

    monkeypatch.setitem(probes.PROBES, ProbeKind.TCP, broken)
    with capture_logs() as logs:
        result = await run_probe(make_target("tcp://127.0.0.1:1"), env)
    assert_failed(result, Reason.PROTOCOL)
    assert "KeyError" in result.detail
    (entry,) = [e for e in logs if e["log_level"] == "error"]
    assert entry["exc_info"] is True and entry["target"] == "test/target"


async def test_crash_inside_tls_assessment_becomes_protocol(
    env: ProbeEnv, test_pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("assessment bug")

    monkeypatch.setattr("meshprobe.trust.cache.assess_chain", crash)
    async with FaultServer(faults.http(), tls=test_pki.good()) as srv:
        with capture_logs() as logs:
            https = await run_probe(make_target(srv.url("https")), env)
            tls = await run_probe(make_target(srv.url("tls")), env)
    for result in (https, tls):
        assert_failed(result, Reason.PROTOCOL)
        assert "ZeroDivisionError" in result.detail
        assert result.duration < 1.0  # failed at once, not hung until the timeout
    assert len([e for e in logs if e["log_level"] == "error"]) == 2
    assert srv.requests == []


async def test_cancellation_propagates(env: ProbeEnv) -> None:
    async with FaultServer(faults.hang) as srv:
        task = asyncio.create_task(run_probe(make_target(srv.url(), timeout=30), env))
        await srv.accepted.wait()  # the probe is connected and waiting for an answer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("scheme", ["https", "tls"])
async def test_reused_context_never_reports_a_stale_chain(
    env: ProbeEnv, test_pki: TestPki, scheme: str
) -> None:
    async with FaultServer(faults.http(), tls=test_pki.good()) as srv:
        target = make_target(srv.url(scheme))
        first = await run_probe(target, env)
    # Same target (so the same TLS context), server gone: no chain was presented this time.
    second = await run_probe(target, env)
    assert first.success and first.tls is not None
    assert_failed(second, Reason.CONNECT_REFUSED)
    assert second.tls is None


async def test_kernel_tcp_info_of_a_connected_socket() -> None:
    async with FaultServer(faults.hang) as srv:
        sock = socket.create_connection((srv.host, srv.port))
        try:
            stats = read_tcp_info(sock)
        finally:
            sock.close()
    assert stats is not None and stats.rtt is not None and stats.rtt > 0
    assert stats.retransmits == 0  # loopback loses nothing on its own
    assert read_tcp_info(None) is None
    assert read_tcp_info(sock) is None  # closed: no answer rather than a wrong one


async def test_concurrent_handshakes_on_the_shared_context_report_to_their_own_target(
    env: ProbeEnv, test_pki: TestPki
) -> None:
    """Every https target shares one SSLContext; each handshake must still land in its own
    target's recorder, also when many run at once on both loops."""
    async with (
        FaultServer(faults.http(), tls=test_pki.good()) as good,
        FaultServer(faults.http(), tls=test_pki.from_other_ca()) as bad,
    ):
        targets = [make_target(good.url("https"), name=f"good/{i}") for i in range(5)] + [
            make_target(bad.url("https"), name=f"bad/{i}") for i in range(5)
        ]
        for _ in range(3):
            results = await asyncio.gather(*(run_probe(t, env) for t in targets))
            for target, result in zip(targets, results, strict=True):
                if target.name.startswith("good/"):
                    assert result.success and result.tls is not None, result.detail
                    assert result.tls.verified
                else:
                    assert_failed(result, Reason.TLS_UNTRUSTED)
                    assert result.tls is not None and not result.tls.verified
