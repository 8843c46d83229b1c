"""Probes: one module per kind, a name -> function registry, and the one entry point.

`run_probe` is the only thing the scheduler calls. It owns the deadline and the last line of
defence, so each probe can stay a plain `target -> ProbeResult` function that maps the failures it
knows about and lets everything else fall through to `protocol`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from meshprobe.model import ProbeKind, ProbeResult, Reason, Target
from meshprobe.probes.env import Attempt, ProbeEnv
from meshprobe.probes.grpc import probe_grpc
from meshprobe.probes.http import probe_http
from meshprobe.probes.tcp import probe_tcp
from meshprobe.probes.tls import probe_tls

__all__ = ["PROBES", "ProbeEnv", "ProbeFn", "run_probe"]

ProbeFn = Callable[[Target, ProbeEnv, Attempt], Awaitable[ProbeResult]]

PROBES: Mapping[ProbeKind, ProbeFn] = {
    ProbeKind.HTTP: probe_http,
    ProbeKind.TCP: probe_tcp,
    ProbeKind.TLS: probe_tls,
    ProbeKind.GRPC: probe_grpc,
}


async def run_probe(target: Target, env: ProbeEnv) -> ProbeResult:
    """Run one probe within `target.timeout`; never raises except on cancellation."""
    attempt = Attempt()
    try:
        async with asyncio.timeout(target.timeout):
            return await PROBES[target.kind](target, env, attempt)
    except TimeoutError:
        return attempt.result(Reason.TIMEOUT, f"no complete answer within {target.timeout:g}s")
    except Exception as exc:
        # A bug, or a failure mode we have not mapped yet: count it, keep the daemon alive, and
        # leave the traceback in the log so it can be mapped properly.
        # Looked up per call, not cached at import: cheap for a rare path, and it honours
        # logging reconfiguration (and structlog.testing.capture_logs).
        structlog.get_logger(__name__).exception(
            "probe failed unexpectedly", target=target.name, url=target.shown_url
        )
        return attempt.result(Reason.PROTOCOL, f"unexpected {type(exc).__name__}: {exc}")
