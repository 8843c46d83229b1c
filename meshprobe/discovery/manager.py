"""Runs Kubernetes discovery for the daemon: one client, one watch loop per collection.

Services are watched once (per configured namespace, or once for all) and that one stream feeds
three sources: annotated Services (`kubernetes`), Linkerd mirrors (`linkerd`) and the peers found
among the mirrors. The trust ConfigMap has a loop of its own (`trust-configmap`). The daemon asks
`synced` for `/readyz`, reads `targets()`/`peers()` when `on_change` fires, and receives trust
bundles through `adopt_bundle`.

Setting up the client is retried with the same backoff as the loops: an API server (or a
kubeconfig) that is not there yet leaves the daemon running and unready, not dead.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping

import structlog

from meshprobe.config.settings import Settings
from meshprobe.discovery import rbac
from meshprobe.discovery.catalog import ServiceCatalog
from meshprobe.discovery.client import ClientSetupError, Collection, KubeApi, connect
from meshprobe.discovery.pacing import WatchSettings
from meshprobe.discovery.services import SOURCE_LINKERD, SOURCE_SERVICES, TargetDefaults
from meshprobe.discovery.trustmap import ConfigMapBundle
from meshprobe.discovery.watch import WatchHandler, WatchLoop
from meshprobe.model import Peer, Target
from meshprobe.state.instance import DiscoveryHealth
from meshprobe.tasks import TaskSet
from meshprobe.trust.anchors import TrustAnchors

log = structlog.get_logger(__name__)

SOURCE_TRUST = "trust-configmap"


def target_defaults(settings: Settings) -> TargetDefaults:
    d = settings.defaults
    return TargetDefaults(
        cluster=settings.cluster,
        cluster_domain=settings.discovery.kubernetes.cluster_domain,
        address=settings.discovery.kubernetes.address,
        interval=d.interval,
        timeout=d.timeout,
        budget_local=d.budget.local,
        budget_remote=d.budget.remote,
        body_limit=d.body_limit,
        metrics=d.metrics(None, None),
        client_cert=d.tls.pair(),
    )


class Discovery:
    def __init__(
        self,
        settings: Settings,
        *,
        watch: WatchSettings,
        health: DiscoveryHealth,
        environ: Mapping[str, str],
        on_change: Callable[[], None],
        on_activity: Callable[[], None] = lambda: None,
        adopt_bundle: Callable[[TrustAnchors], None],
        report_bundle: Callable[[bool], None],
        rng: random.Random | None = None,
    ) -> None:
        kube = settings.discovery.kubernetes
        self._kube = kube
        self._watch = watch
        self._health = health
        self._environ = environ
        self._on_change = on_change
        self._on_activity = on_activity
        self._rng = rng or random.Random()
        self.catalog: ServiceCatalog | None = None
        self.bundle: ConfigMapBundle | None = None
        self.loops: list[WatchLoop] = []
        self._loop_up: dict[int, bool] = {}
        self.api: KubeApi | None = None
        self._tasks: TaskSet[str] = TaskSet("discovery")
        if kube.enabled:
            for source in (SOURCE_SERVICES, SOURCE_LINKERD):
                health.register(source, yields_targets=True)
            self.catalog = ServiceCatalog(
                defaults=target_defaults(settings),
                on_change=self._changed,
                on_error=health.count_error,
            )
        configmap = settings.trust.configmap
        if configmap is not None:
            health.register(SOURCE_TRUST, yields_targets=False)
            namespace, name, key = configmap.ref
            self.bundle = ConfigMapBundle(
                namespace=namespace,
                name=name,
                key=key,
                adopt=adopt_bundle,
                report=report_bundle,
                on_error=lambda: health.count_error(SOURCE_TRUST),
            )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.start("kubernetes", self._run, label="kubernetes discovery")

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self.api is not None:
            await self.api.aclose()
            self.api = None

    @property
    def synced(self) -> bool:
        """Every loop has listed once: what `/readyz` waits for."""
        return bool(self.loops) and all(loop.synced.is_set() for loop in self.loops)

    def targets(self) -> list[Target]:
        return self.catalog.targets() if self.catalog is not None else []

    def peers(self) -> list[Peer]:
        return self.catalog.peers() if self.catalog is not None else []

    def set_defaults(self, settings: Settings) -> None:
        """A reload's new defaults (interval, budgets, …) apply to discovered targets too."""
        if self.catalog is not None:
            self.catalog.set_defaults(target_defaults(settings))

    # -- internals -----------------------------------------------------------------------------

    def _changed(self) -> None:
        self._on_change()
        self._on_activity()

    def _sources(self, loop: WatchLoop) -> tuple[str, ...]:
        if loop.collection.resource == rbac.SERVICES:
            return (SOURCE_SERVICES, SOURCE_LINKERD)
        return (SOURCE_TRUST,)

    async def _run(self) -> None:
        self.api = await self._connect()
        creds = self.api.credentials
        log.info(
            "kubernetes client ready", source=creds.source, context=creds.context, host=creds.host
        )
        self.loops = self._make_loops(self.api)
        await asyncio.gather(*(loop.run() for loop in self.loops))

    async def _connect(self) -> KubeApi:
        failures = 0
        while True:
            try:
                return await connect(
                    kubeconfig=self._kube.kubeconfig,
                    context=self._kube.context,
                    environ=self._environ,
                )
            except ClientSetupError as exc:
                failures += 1
                for source in self._health.up:
                    self._health.up[source] = False
                    self._health.count_error(source)
                self._on_activity()
                delay = self._watch.backoff.delay(failures, self._rng)
                log.error(
                    "kubernetes client set-up failed", error=str(exc), retry_in=round(delay, 3)
                )
                await asyncio.sleep(delay)

    def _make_loops(self, api: KubeApi) -> list[WatchLoop]:
        loops: list[WatchLoop] = []
        if self.catalog is not None:
            namespaces: list[str | None] = [*self._kube.namespaces] or [None]
            for namespace in namespaces:
                collection = Collection(
                    rbac.SERVICES, namespace, label_selector=self._kube.label_selector
                )
                loops.append(
                    self._loop(api, collection, self.catalog.handler(namespace), len(loops))
                )
        if self.bundle is not None:
            collection = Collection(
                rbac.CONFIGMAPS,
                self.bundle.namespace,
                field_selector=f"metadata.name={self.bundle.name}",
            )
            loops.append(self._loop(api, collection, self.bundle, len(loops)))
        return loops

    def _loop(
        self, api: KubeApi, collection: Collection, handler: WatchHandler, index: int
    ) -> WatchLoop:
        loop: WatchLoop

        def health(up: bool, error: Exception | None) -> None:
            self._loop_up[index] = up
            for source in self._sources(loop):
                if error is not None:
                    self._health.count_error(source)
                related = [
                    i for i, lp in enumerate(self.loops) if self._sources(lp) == self._sources(loop)
                ]
                self._health.up[source] = all(self._loop_up.get(i, False) for i in related)

        loop = WatchLoop(
            api=api,
            collection=collection,
            handler=handler,
            settings=self._watch,
            on_health=health,
            on_activity=self._on_activity,
            rng=self._rng,
        )
        return loop
