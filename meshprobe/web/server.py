"""The one HTTP listener: metrics, health, and the responder that peers probe.

There is deliberately no `/probe?target=` endpoint: meshprobe never probes an address a caller
hands it, so the listener cannot be turned into a scanner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from meshprobe.model import CLUSTER_HEADER
from meshprobe.trust.identity import encode

# The encoded identity document, built when its inputs change (`identity.PublishedIdentity`), or
# a mapping encoded per request for small fixed documents (the demo's, test responders').
IdentityProvider = Callable[[], bytes | Mapping[str, Any]]
EdgeText = Callable[[], Iterable[str]]
Readiness = Callable[[], bool]


def build_app(
    *,
    cluster: str,
    identity: IdentityProvider,
    registry: CollectorRegistry | None = None,
    ready: Readiness = lambda: True,
    edges: EdgeText | None = None,
    echo_delay: float = 0.0,
    middlewares: Sequence[Middleware] = (),
    client_max_size: int = 1024**2,
) -> web.Application:
    """`echo_delay` simulates network distance for the demo's far cluster; always 0 otherwise.

    `middlewares` and `client_max_size` are the listener security's hooks (`weblistener`)."""
    app = web.Application(middlewares=middlewares, client_max_size=client_max_size)

    async def echo(_: web.Request) -> web.Response:
        if echo_delay:
            await asyncio.sleep(echo_delay)
        return web.Response(text="ok\n", headers={CLUSTER_HEADER: cluster})

    async def identity_doc(_: web.Request) -> web.Response:
        doc = identity()
        body = doc if isinstance(doc, bytes) else encode(doc)
        return web.Response(
            body=body, content_type="application/json", headers={CLUSTER_HEADER: cluster}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app.router.add_get("/v1/echo", echo)
    app.router.add_get("/v1/identity", identity_doc)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if registry is not None:
        app.router.add_get("/metrics", _metrics_handler(registry, edges))
    return app


def _metrics_handler(
    registry: CollectorRegistry, edges: EdgeText | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Text format 0.0.4, streamed: the edge families a slice at a time (yielding to the loop
    between slices so probes keep their timing), then the instance and process metrics."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await resp.prepare(request)
        for chunk in edges() if edges is not None else ():
            await resp.write(chunk.encode())
            await asyncio.sleep(0)
        await resp.write(generate_latest(registry))
        await resp.write_eof()
        return resp

    return metrics


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: Any = None,
    limits: dict[str, int] | None = None,
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the bound port (for port 0).

    `limits` are the request-parsing limits (`max_line_size`, ...; see `weblistener.Limits`)."""
    parser_limits: dict[str, Any] = dict(limits or {})
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=1.0, **parser_limits
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
    return runner, bound
