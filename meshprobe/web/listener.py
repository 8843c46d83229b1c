"""Everything the listener enforces before a handler runs: TLS, basic auth, headers, limits.

One `ListenerSecurity` per daemon, built from the effective `WebConfig`; `server.build_app` takes
its middleware, `server.start_site` its SSL context and limits, and a reload calls `update`.

Which paths stay open with basic auth on, and why:
- `/healthz`, `/readyz`: the kubelet probes them and has no credentials;
- `/v1/identity`, `/v1/echo`: the meshprobes of the other clusters fetch and probe them, and have
  no credentials either; they carry only public data (a cluster name, the SHA-256 fingerprints
  of public root certificates, "ok"), and hiding them would only turn every peer's
  `meshprobe_peer_up` to 0. `/metrics`, the status page and every other path need credentials.
The decision is made on the route aiohttp matched, not on the raw path, so no spelling of a URL
(`//metrics`, `%2F`, a trailing slash) reaches a closed handler through an open name, and an
unknown path answers 401, not 404, to a caller without credentials.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from meshprobe.config.web import WebConfig
from meshprobe.web.auth import BasicAuth, Verdict
from meshprobe.web.tls import ServerTLS

log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/v1/identity", "/v1/echo"})
REALM = "meshprobe"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may send. Every meshprobe endpoint is a GET of a few hundred bytes, and
    Prometheus sends about six short headers; these leave ample room for proxies that add
    their own headers, and refuse (400/413/431) what no scraper sends."""

    client_max_size: int = 64 * 1024  # request body bytes (no endpoint reads one)
    max_line_size: int = 8190  # request line (method, URL, version), as nginx and Go default to
    max_field_size: int = 8190  # one header line
    max_headers: int = 64  # header count

    def runner_kwargs(self) -> dict[str, int]:
        return {
            "max_line_size": self.max_line_size,
            "max_field_size": self.max_field_size,
            "max_headers": self.max_headers,
        }


LIMITS = Limits()


class ListenerSecurity:
    def __init__(
        self,
        config: WebConfig,
        *,
        where: str = "web",
        on_bcrypt: Callable[[bool], None] = lambda _ok: None,
    ) -> None:
        """Raises ConfigError (with field paths) when the TLS files do not load. `where` is
        the config path of the web settings: `web` for the config's section, empty for
        `--web.config.file`, whose keys are at its top level."""
        self.config = config
        spec = config.tls_server_config
        prefix = f"{where}.tls_server_config" if where else "tls_server_config"
        self.tls = ServerTLS(spec, where=prefix) if spec is not None else None
        self.auth = BasicAuth(config.hashes(), on_bcrypt=on_bcrypt)
        self._headers = dict(config.http_server_config.headers)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.context if self.tls is not None else None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    def update(self, config: WebConfig) -> None:
        """A reload: users, headers and the TLS files apply now. Turning TLS on or off and the
        TLS handshake parameters need a restart; those are kept, with a warning. Raises
        ConfigError and changes nothing when the new TLS files do not load."""
        kept: list[str] = []
        spec = config.tls_server_config
        if (spec is None) != (self.tls is None):
            kept.append("web.tls_server_config")
        elif spec is not None and self.tls is not None:
            kept = self.tls.update(spec)
        for field in kept:
            log.warning("setting changes only on restart", field=field)
        self.auth.set_users(config.hashes())
        self._headers = dict(config.http_server_config.headers)
        self.config = config

    def close(self) -> None:
        self.auth.close()

    def warnings(self) -> list[str]:
        """What an operator should hear about at start (never a secret)."""
        if self.auth.enabled and self.tls is None:
            return [
                "basic auth on a plain HTTP listener: passwords cross the network readable "
                "unless a mesh sidecar encrypts the hop; add tls_server_config"
            ]
        return []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.auth.enabled or _route_path(request) in OPEN_PATHS:
            return await handler(request)
        verdict = await self.auth.verify(request.headers.get("Authorization"))
        if verdict is Verdict.OK:
            return await handler(request)
        if verdict is Verdict.BUSY:
            return web.Response(
                status=429, text="too many authentication attempts\n", headers={"Retry-After": "1"}
            )
        return web.Response(
            status=401,
            text="unauthorized\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    async def on_response_prepare(self, _: web.Request, response: web.StreamResponse) -> None:
        """exporter-toolkit's `http_server_config.headers`, on every response (401s too)."""
        for name, value in self._headers.items():
            response.headers[name] = value


def _route_path(request: web.Request) -> str | None:
    """The path of the route aiohttp matched; None when no route matched (404/405)."""
    route = request.match_info.route
    if request.match_info.http_exception is not None:
        return None
    resource = route.resource
    return resource.canonical if resource is not None else None
