"""The recording context works through every client and loop we use.

Runs on the default loop and on uvloop (see conftest), because the trick relies on how each loop's
TLS transport drives `do_handshake()`.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp
import pytest

from meshprobe.model import CertRole, Reason
from meshprobe.trust.record import (
    HandshakeRecorder,
    RecorderFault,
    TrustRejected,
    recording_context,
)
from tests.integration import faults
from tests.integration.faults import SPIFFE_ID, FaultServer, TestPki


def recorder(test_pki: TestPki, **kwargs: object) -> HandshakeRecorder:
    return HandshakeRecorder(anchors=test_pki.anchors, server_name="127.0.0.1", **kwargs)  # type: ignore[arg-type]


async def test_loop_under_test_is_the_one_requested(request: pytest.FixtureRequest) -> None:
    loop = asyncio.get_running_loop()
    if "uvloop" in request.node.name:
        assert type(loop).__module__.startswith("uvloop")
    else:
        assert isinstance(loop, asyncio.BaseEventLoop)
        assert not type(loop).__module__.startswith("uvloop")


async def test_open_connection_records_timing_and_whole_chain(test_pki: TestPki) -> None:
    rec = recorder(test_pki, expected_identity=SPIFFE_ID)
    ctx = recording_context(rec)
    async with FaultServer(faults.hold, tls=test_pki.good()) as srv:
        before = time.perf_counter()
        _reader, writer = await asyncio.open_connection(srv.host, srv.port, ssl=ctx)
        after = time.perf_counter()
        writer.close()
        await writer.wait_closed()
    assert rec.started is not None and rec.finished is not None
    assert before < rec.started < rec.finished < after
    report = rec.report
    assert report is not None and report.verified, report
    assert [c.role for c in report.chain] == [CertRole.LEAF, CertRole.INTERMEDIATE]
    assert report.identity == SPIFFE_ID
    assert report.version is not None and report.cipher is not None


async def test_aiohttp_request_goes_through_the_recorder(test_pki: TestPki) -> None:
    rec = recorder(test_pki)
    ctx = recording_context(rec, alpn=("http/1.1",))
    async with (
        FaultServer(faults.http(), tls=test_pki.good()) as srv,
        aiohttp.ClientSession() as session,
        session.get(srv.url("https"), ssl=ctx) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == b"ok\n"
    assert rec.report is not None and rec.report.verified
    assert rec.duration is not None and rec.duration > 0


async def test_untrusted_chain_fails_the_handshake_before_any_request(test_pki: TestPki) -> None:
    rec = recorder(test_pki)
    ctx = recording_context(rec, alpn=("http/1.1",))
    async with FaultServer(faults.http(), tls=test_pki.from_other_ca()) as srv:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
                await session.get(srv.url("https"), ssl=ctx)
        with pytest.raises(TrustRejected):
            await asyncio.open_connection(srv.host, srv.port, ssl=recording_context(rec))
    assert isinstance(caught.value.certificate_error, TrustRejected)
    assert rec.rejected and rec.report is not None
    assert rec.report.reason is Reason.TLS_UNTRUSTED
    assert srv.requests == []


async def test_insecure_mode_records_without_failing(test_pki: TestPki) -> None:
    rec = recorder(test_pki, enforce=False)
    async with FaultServer(faults.hold, tls=test_pki.self_signed_ctx()) as srv:
        _reader, writer = await asyncio.open_connection(
            srv.host, srv.port, ssl=recording_context(rec)
        )
        writer.close()
        await writer.wait_closed()
    assert not rec.rejected
    assert rec.report is not None and rec.report.reason is Reason.TLS_UNTRUSTED


async def test_crash_in_assessment_fails_fast_as_ssl_error(
    test_pki: TestPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr("meshprobe.trust.record.assess_chain", crash)
    rec = recorder(test_pki)
    async with FaultServer(faults.hold, tls=test_pki.good()) as srv:
        async with asyncio.timeout(2):  # a non-SSLError would hang the transport instead
            with pytest.raises(RecorderFault):
                await asyncio.open_connection(srv.host, srv.port, ssl=recording_context(rec))
    assert isinstance(rec.fault, ZeroDivisionError)


def test_ssl_error_subclasses() -> None:
    # asyncio's and uvloop's handshake loops only catch ssl.SSLError; aiohttp maps
    # ssl.CertificateError to ClientConnectorCertificateError.
    assert issubclass(RecorderFault, ssl.SSLError)
    assert issubclass(TrustRejected, ssl.CertificateError)
