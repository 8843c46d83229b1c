"""The one HTTP listener: metrics, the status page, health, and the responder that peers probe.

There is deliberately no `/probe?target=` endpoint: meshprobe never probes an address a caller
hands it, so the listener cannot be turned into a scanner.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from meshprobe.model import CLUSTER_HEADER
from meshprobe.trust.identity import encode
from meshprobe.web.status import StatusView
from meshprobe.web.statuspage import add_status_routes

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
    status: StatusView | None = None,
) -> web.Application:
    """`echo_delay` simulates network distance for the demo's far cluster; always 0 otherwise.

    `middlewares` and `client_max_size` are the listener security's hooks (`weblistener`).
    `status` adds the status page (`/`, `/v1/status`): a daemon's listener, not a responder's."""
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
    if status is not None:
        add_status_routes(app, status)
    return app


def _metrics_handler(
    registry: CollectorRegistry, edges: EdgeText | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Text format 0.0.4, streamed: the edge families a slice at a time (yielding to the loop
    between slices so probes keep their timing), then the instance and process metrics. Gzipped
    when the scraper accepts it (Prometheus always does), compressed in a worker thread a batch at
    a time so the loop keeps probing meanwhile."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        gzipped = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        out = _GzipWriter(resp) if gzipped else _PlainWriter(resp)
        for chunk in edges() if edges is not None else ():
            if chunk:  # an empty chunk is a slice of work done without text: only yield
                await out.write(chunk.encode())
            await asyncio.sleep(0)
        await out.write(generate_latest(registry))
        await out.close()
        await resp.write_eof()
        return resp

    return metrics


def accepts_gzip(accept_encoding: str) -> bool:
    """`gzip` (or `*`) is listed, and not with `q=0`."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class _PlainWriter:
    def __init__(self, resp: web.StreamResponse) -> None:
        self._resp = resp

    async def write(self, data: bytes) -> None:
        await self._resp.write(data)

    async def close(self) -> None:
        return None


class _GzipWriter:
    """Batches of ~256 KiB compressed off the loop (zlib releases the GIL): compressing a 40 MB
    exposition on the loop would stall every probe timing taken meanwhile. Level 1: Prometheus
    text shrinks about tenfold even so, and higher levels cost several times the CPU for little."""

    BATCH = 256 * 1024

    def __init__(self, resp: web.StreamResponse) -> None:
        self._resp = resp
        self._zlib = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: gzip framing
        self._pending: list[bytes] = []
        self._size = 0

    async def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.BATCH:
            await self._flush(final=False)

    async def close(self) -> None:
        await self._flush(final=True)

    async def _flush(self, *, final: bool) -> None:
        data = b"".join(self._pending)
        self._pending, self._size = [], 0
        compressed = await asyncio.to_thread(self._compress, data, final)
        if compressed:
            await self._resp.write(compressed)

    def _compress(self, data: bytes, final: bool) -> bytes:
        out = self._zlib.compress(data)
        return out + self._zlib.flush() if final else out


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
