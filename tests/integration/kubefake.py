"""A fake Kubernetes API server on loopback, for the real kubernetes-asyncio client to talk to.

It speaks list and watch for Services and ConfigMaps the way the API server does: every write
bumps one global resourceVersion; a list answers with the collection's version; a watch from a
version replays what happened after it and then streams live events; `allowWatchBookmarks`
gets BOOKMARK events; `timeoutSeconds` ends the stream cleanly; a version older than the
compaction floor gets an ERROR event with a 410 Status. Label selectors (=, ==, !=, exists, !)
and the `metadata.name`/`metadata.namespace` field selectors work. Tests control it directly:
create, update and delete objects, drop every open watch mid-stream, compact history, send
bookmarks, fail requests with a status, and wait on what the client did (every request is
recorded with its verb, for the RBAC test). kmock was considered; an in-repo server lets a test
drop a watch connection or expire a version at an exact point, which is what the acceptance
tests need.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Obj = dict[str, Any]
RESOURCES = {"services": "Service", "configmaps": "ConfigMap"}
TOKEN = "meshprobe-test-token"
_DROP = object()
_END = object()


@dataclass(frozen=True, slots=True)
class Recorded:
    verb: str  # list | watch
    resource: str
    namespace: str | None
    query: dict[str, str]
    at: float = 0.0  # the event loop's clock when the request arrived (for backoff tests)


@dataclass(eq=False)
class _Watcher:
    resource: str
    namespace: str | None
    matches: Callable[[Obj], bool]
    bookmarks: bool
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def free_port() -> int:
    """A port nothing listens on now, for a server started later (the 'API down' test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service(
    namespace: str,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    ports: list[tuple[str, int]] | None = None,
    cluster_ip: str = "127.0.0.1",
) -> Obj:
    """A Service; its cluster IP is loopback so `address: cluster-ip` probes reach test servers."""
    port_list = [{"name": n, "port": p, "protocol": "TCP"} for n, p in (ports or [("http", 80)])]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "namespace": namespace,
            "name": name,
            "annotations": dict(annotations or {}),
            "labels": dict(labels or {}),
        },
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "ports": port_list},
    }


def configmap(namespace: str, name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"namespace": namespace, "name": name},
        "data": dict(data),
    }


def _label_matcher(selector: str | None) -> Callable[[Obj], bool]:
    if not selector:
        return lambda _: True
    terms: list[Callable[[dict[str, str]], bool]] = []
    for raw in selector.split(","):
        term = raw.strip()
        if "!=" in term:
            k, v = (s.strip() for s in term.split("!=", 1))
            terms.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in term:
            k, v = (s.strip() for s in term.replace("==", "=").split("=", 1))
            terms.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif term.startswith("!"):
            terms.append(lambda labels, k=term[1:]: k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)
    return lambda obj: all(t(obj["metadata"].get("labels") or {}) for t in terms)


def _field_matcher(selector: str | None) -> Callable[[Obj], bool]:
    if not selector:
        return lambda _: True
    wanted: dict[str, str] = {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if key not in ("metadata.name", "metadata.namespace"):
            raise web.HTTPBadRequest(text=f"field selector {key} not supported")
        wanted[key.split(".")[1]] = value
    return lambda obj: all(obj["metadata"].get(k) == v for k, v in wanted.items())


class FakeKube:
    def __init__(
        self,
        *,
        port: int = 0,
        token: str = TOKEN,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.token = token
        self._ssl = ssl_context
        self._rv = 1000
        self._floor = 0  # watches from a version below this get 410 Gone
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: list[tuple[int, str, str, Obj]] = []  # (rv, resource, type, object)
        self._watchers: set[_Watcher] = set()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()
        self.requests: list[Recorded] = []
        self.failing: int | None = None  # answer every request with this HTTP status
        self.gone_as_status = False  # expired versions get HTTP 410, not an ERROR event in a 200
        self.hollow = False  # watches answer 200 and end at once, like a misbehaving proxy
        self.always_gone = False  # every watch gets 410 Gone, even from a fresh list's version
        self.watches_opened = 0

    # -- server lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> FakeKube:
        app = web.Application()
        for resource in RESOURCES:
            app.router.add_get(f"/api/v1/{resource}", self._handle)
            app.router.add_get(f"/api/v1/namespaces/{{namespace}}/{resource}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        await site.start()
        for address in self._runner.addresses:
            self.port = int(address[1])
        return self

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(
        self, path: Path, *, context: str = "fake", ca_file: str | None = None
    ) -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        if ca_file:
            cluster["certificate-authority"] = ca_file
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "meshprobe", "user": {"token": self.token}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "meshprobe"}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- what tests change ---------------------------------------------------------------------

    def put(self, resource: str, obj: Obj) -> Obj:
        """Create or update an object; returns the stored copy with its new resourceVersion."""
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        old = self._objects.get(key)
        self._rv += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        stored["metadata"]["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
        self._objects[key] = stored
        self._publish(resource, "MODIFIED" if old else "ADDED", stored)
        return copy.deepcopy(stored)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        stored = self._objects.pop((resource, namespace, name))
        self._rv += 1
        gone = copy.deepcopy(stored)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(resource, "DELETED", gone)

    def compact(self) -> None:
        """Forget history: a watch resumed from any version we handed out gets 410 Gone."""
        self._rv += 1
        self._floor = self._rv
        self._history.clear()

    def expire_watches(self) -> None:
        """End every open watch with an ERROR 410, as the server does when it falls behind."""
        self.compact()
        for watcher in self._watchers:
            watcher.queue.put_nowait(_gone_event())

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no terminating chunk)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(_DROP)

    def end_watches(self) -> None:
        """End every open watch cleanly, as at its timeout; `hollow` makes new ones end at once."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(_END)

    def bookmark(self) -> None:
        for watcher in self._watchers:
            if watcher.bookmarks:
                watcher.queue.put_nowait(self._bookmark_event(watcher.resource))

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        return copy.deepcopy(self._objects[(resource, namespace, name)])

    # -- what tests wait on --------------------------------------------------------------------

    @property
    def active_watches(self) -> int:
        return len(self._watchers)

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 5.0) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def verbs(self) -> set[tuple[str, str]]:
        return {(r.verb, r.resource) for r in self.requests}

    # -- the API -------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()

    def _publish(self, resource: str, kind: str, obj: Obj) -> None:
        self._history.append((self._rv, resource, kind, obj))
        for watcher in self._watchers:
            if watcher.resource == resource and watcher.matches(obj):
                watcher.queue.put_nowait({"type": kind, "object": obj})
        self._notify()

    def _bookmark_event(self, resource: str) -> Obj:
        obj = {"kind": RESOURCES[resource], "apiVersion": "v1"}
        obj["metadata"] = {"resourceVersion": str(self._rv)}  # type: ignore[assignment]
        return {"type": "BOOKMARK", "object": obj}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        resource = request.path.rsplit("/", 1)[1]
        namespace = request.match_info.get("namespace")
        query = dict(request.query)
        watch = _parse_bool(query.get("watch"))
        verb = "watch" if watch else "list"
        now = asyncio.get_running_loop().time()
        self.requests.append(Recorded(verb, resource, namespace, query, now))
        self._notify()
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "no or wrong bearer token")
        if self.failing is not None:
            return _status(self.failing, "InternalError", "the fake API server is failing")
        labels = _label_matcher(query.get("labelSelector"))
        fields = _field_matcher(query.get("fieldSelector"))

        def matches(obj: Obj) -> bool:
            ns_ok = namespace is None or obj["metadata"]["namespace"] == namespace
            return ns_ok and labels(obj) and fields(obj)

        if not watch:
            items = [
                copy.deepcopy(o) for (r, _, _), o in sorted(self._objects.items()) if r == resource
            ]
            return web.json_response(
                {
                    "kind": f"{RESOURCES[resource]}List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": [o for o in items if matches(o)],
                }
            )
        return await self._watch(request, resource, namespace, matches, query)

    async def _watch(
        self,
        request: web.Request,
        resource: str,
        namespace: str | None,
        matches: Callable[[Obj], bool],
        query: dict[str, str],
    ) -> web.StreamResponse:
        timeout = float(query.get("timeoutSeconds", "1800"))
        watcher = _Watcher(
            resource, namespace, matches, _parse_bool(query.get("allowWatchBookmarks"))
        )
        since = query.get("resourceVersion")
        expired = self.always_gone or bool(since and int(since) < self._floor)
        if expired and self.gone_as_status:
            return _status(410, "Expired", "too old resource version")
        if expired:
            watcher.queue.put_nowait(_gone_event())
        elif since:
            for rv, res, kind, obj in self._history:
                if rv > int(since) and res == resource and matches(obj):
                    watcher.queue.put_nowait({"type": kind, "object": obj})
        else:
            for (res, _, _), obj in sorted(self._objects.items()):
                if res == resource and matches(obj):
                    watcher.queue.put_nowait({"type": "ADDED", "object": obj})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if self.hollow:
            watcher.queue.put_nowait(_END)
        self._watchers.add(watcher)
        self.watches_opened += 1
        self._notify()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (remaining := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(remaining):
                        item = await watcher.queue.get()
                except TimeoutError:
                    break
                if item is _END:
                    break
                if item is _DROP:
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError
                await resp.write(json.dumps(item).encode() + b"\n")
                if item.get("type") == "ERROR":
                    break
            await resp.write_eof()
        finally:
            self._watchers.discard(watcher)
            self._notify()
        return resp


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, as the API server reads query flags (the client sends `True`)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _gone_event() -> Obj:
    return {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": "too old resource version",
            "reason": "Expired",
            "code": 410,
        },
    }


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message}
    body.update({"reason": reason, "code": code})  # type: ignore[dict-item]
    return web.json_response(body, status=code)
