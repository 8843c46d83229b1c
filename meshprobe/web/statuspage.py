"""The status page's routes: `/` and its two static files, `/v1/status` and one edge's JSON.

The page is plain HTML, one CSS and one vanilla JS file shipped inside the package
(`web/page/`, package data), read once when the app is built: no CDN, no build step, nothing
fetched at run time, so it works in an air-gapped cluster and from the Docker image.

Each route sits behind the listener's middleware like `/metrics` (TLS, basic auth, the
configured response headers). The page's own headers add a Content-Security-Policy that lets it
load nothing but itself: the page shows text that hostile servers wrote (failure details,
certificate names), and it only ever sets it as text, but the policy keeps it that way.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from meshprobe.web.status import StatusView, edge_body, status_body

__all__ = ["PAGE_FILES", "add_status_routes"]

# name under /page/ (or "" for `/`) -> (file in web/page/, content type)
PAGE_FILES = {
    "": ("index.html", "text/html"),
    "status.css": ("status.css", "text/css"),
    "status.js": ("status.js", "text/javascript"),
}

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _read(name: str) -> bytes:
    return resources.files("meshprobe.web").joinpath("page", name).read_bytes()


def add_status_routes(app: web.Application, view: StatusView) -> None:
    files = {name: (_read(file), ctype) for name, (file, ctype) in PAGE_FILES.items()}

    def static(name: str) -> web.Response:
        body, ctype = files[name]
        headers = {**_COMMON, "Cache-Control": "no-cache"}
        if ctype == "text/html":
            headers["Content-Security-Policy"] = _CSP
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=headers)

    async def page(_: web.Request) -> web.Response:
        return static("")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in files or not name:
            raise web.HTTPNotFound()
        return static(name)

    async def status(_: web.Request) -> web.Response:
        return _json(await status_body(view))

    async def edge(request: web.Request) -> web.Response:
        body = edge_body(view, request.match_info["id"])
        if body is None:
            return _json(b'{"error":"no such edge"}', status=404)
        return _json(body)

    app.router.add_get("/", page)
    app.router.add_get("/page/{name}", asset)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/status/edges/{id}", edge)


def _json(body: bytes, status: int = 200) -> web.Response:
    """Compressed when the client accepts it (browsers do): the document is ~770 bytes per edge
    and shrinks about tenfold; aiohttp compresses bodies over 4 KiB in a worker thread, off the
    loop that times the probes."""
    response = web.Response(
        body=body,
        status=status,
        content_type="application/json",
        headers={**_COMMON, "Cache-Control": "no-store"},
    )
    response.enable_compression()
    return response
