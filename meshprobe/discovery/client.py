"""kubernetes-asyncio set-up, and the one request shape discovery makes: list or watch a collection.

The generated `CoreV1Api` is untyped and deserialises into models we do not need; this module is
the only place that touches it. Requests go out with `_preload_content=False` so the watch loop
reads the raw JSON lines itself (see `watch` for why we do not use `kubernetes_asyncio.watch`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from meshprobe.discovery import rbac
from meshprobe.model import USER_AGENT

DEFAULT_KUBECONFIG = "~/.kube/config"


class ClientSetupError(Exception):
    """No usable Kubernetes credentials: no in-cluster account and no readable kubeconfig."""


@dataclass(frozen=True, slots=True)
class Collection:
    """One list/watch endpoint: a resource in one namespace (None: all) with its selectors."""

    resource: str  # rbac.SERVICES | rbac.CONFIGMAPS
    namespace: str | None = None
    label_selector: str | None = None
    field_selector: str | None = None

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        return f"{self.resource} in {where}"


# (resource, namespaced?) → the CoreV1Api method name for its list (and watch) call.
_METHODS = {
    (rbac.SERVICES, False): "list_service_for_all_namespaces",
    (rbac.SERVICES, True): "list_namespaced_service",
    (rbac.CONFIGMAPS, False): "list_config_map_for_all_namespaces",
    (rbac.CONFIGMAPS, True): "list_namespaced_config_map",
}


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the client configuration came from, for the start-up log line."""

    source: str  # "in-cluster" or the kubeconfig path(s)
    context: str | None
    host: str


class KubeApi:
    """List or watch one collection; returns the raw aiohttp response for the caller to read
    and close. Any call not in `rbac.RULES` is refused before it leaves the process."""

    def __init__(self, api_client: Any, credentials: Credentials) -> None:
        self._api_client = api_client
        self._core = k8s_client.CoreV1Api(api_client)
        self.credentials = credentials

    async def request(
        self,
        collection: Collection,
        *,
        watch: bool,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        request_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        verb = rbac.WATCH if watch else rbac.LIST
        if not rbac.allowed(collection.resource, verb):
            raise PermissionError(f"{verb} {collection.resource} is not in meshprobe's RBAC rules")
        name = _METHODS[(collection.resource, collection.namespace is not None)]
        method: Callable[..., Awaitable[aiohttp.ClientResponse]] = getattr(self._core, name)
        args = (collection.namespace,) if collection.namespace is not None else ()
        params: dict[str, Any] = {
            "_preload_content": False,
            "_request_timeout": request_timeout,
        }
        if collection.label_selector:
            params["label_selector"] = collection.label_selector
        if collection.field_selector:
            params["field_selector"] = collection.field_selector
        if watch:
            params["watch"] = True
            params["allow_watch_bookmarks"] = True
            if resource_version:
                params["resource_version"] = resource_version
            if timeout_seconds is not None:
                params["timeout_seconds"] = timeout_seconds
        return await method(*args, **params)

    async def aclose(self) -> None:
        await self._api_client.close()


def _any_exists(paths: str) -> bool:
    """$KUBECONFIG may list several files; the loader merges those that exist."""
    return any(os.path.exists(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p)


async def connect(
    *,
    kubeconfig: str | None,
    context: str | None,
    environ: Mapping[str, str],
    token_file: str = SERVICE_TOKEN_FILENAME,
    ca_file: str = SERVICE_CERT_FILENAME,
) -> KubeApi:
    """In a pod (KUBERNETES_SERVICE_HOST set, no kubeconfig or context asked for) use the
    service account; otherwise the kubeconfig named, else $KUBECONFIG, else ~/.kube/config.

    The token and CA paths are parameters so tests can stand up an in-cluster environment; the
    in-cluster loader re-reads the token each minute, so projected (rotating) tokens keep working.
    """
    configuration = k8s_client.Configuration()
    in_cluster = kubeconfig is None and context is None and bool(environ.get(SERVICE_HOST_ENV_NAME))
    try:
        if in_cluster:
            loader = InClusterConfigLoader(
                token_filename=token_file, cert_filename=ca_file, environ=dict(environ)
            )
            loader.load_and_set(configuration)
            source = "in-cluster"
        else:
            source = kubeconfig or environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
            if not _any_exists(source):
                raise ClientSetupError(f"kubeconfig {source} not found and not running in a pod")
            await k8s_config.load_kube_config(
                config_file=source,
                context=context,
                client_configuration=configuration,
                persist_config=False,  # never rewrite the user's kubeconfig
            )
    except k8s_config.ConfigException as exc:
        raise ClientSetupError(f"{exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClientSetupError(f"cannot load Kubernetes credentials: {exc}") from None
    api_client = k8s_client.ApiClient(configuration=configuration)
    api_client.user_agent = USER_AGENT
    host = str(configuration.host)
    return KubeApi(api_client, Credentials(source=source, context=context, host=host))
