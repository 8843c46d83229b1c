"""Wiring: settings → probe environment, scheduler, state, exporter and HTTP listener.

One `Daemon` owns every long-lived object; `meshprobe run`, the demo and the tests all drive the
same class, so there is one start-up and one shutdown path to get right. Its own loops (loop lag,
trust-file polls, the reconciler) belong to one TaskSet; the scheduler, the peer exchange and
discovery own theirs. Targets change in one place, `_reconcile`: at start, on reload, and when
discovery reports a change (discovery only flags it; the reconciler task does the work, outside
the watch loop's call stack, and a burst of changes costs one reconcile).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector

from meshprobe.config.discovery import needs_kubernetes
from meshprobe.config.settings import ConfigError, Settings, format_issues, load_settings
from meshprobe.config.web import WebConfig, describe_web, effective_web_config
from meshprobe.daemon.hooks import Hooks
from meshprobe.daemon.logsetup import configure_logging
from meshprobe.daemon.reload import restart_only
from meshprobe.daemon.scheduler import Scheduler
from meshprobe.discovery.merge import merge_peers, merge_targets
from meshprobe.discovery.pacing import WatchSettings
from meshprobe.metrics.edges import edge_exposition
from meshprobe.metrics.instance import MeshprobeCollector
from meshprobe.metrics.looplag import monitor_loop_lag
from meshprobe.model import Peer, ProbeResult, Target
from meshprobe.peers import PeerWatcher, peer_echo_targets
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.state.edges import ProbeState, Transition
from meshprobe.state.instance import InstanceStatus
from meshprobe.state.recent import RecentResults
from meshprobe.tasks import TaskSet
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.bundlesource import BundleWatcher
from meshprobe.trust.configfiles import load_trust_bundle
from meshprobe.trust.identity import PublishedIdentity
from meshprobe.web.grpchealth import start_grpc_health
from meshprobe.web.listener import LIMITS, ListenerSecurity
from meshprobe.web.server import build_app, start_site
from meshprobe.web.status import StatusView
from meshprobe.web.tls import FILES_PERIOD

if TYPE_CHECKING:
    from meshprobe.discovery.manager import Discovery

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        environ: dict[str, str] | None = None,
        watch: WatchSettings | None = None,
        web_config_path: Path | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.web_config_path = web_config_path  # --web.config.file, re-read on SIGHUP
        self.web: ListenerSecurity | None = None
        self.hooks = hooks or Hooks()
        self._tasks: TaskSet[str] = TaskSet("daemon")
        self._reconcile_wanted = asyncio.Event()
        self._environ = environ
        self._watch_settings = watch or WatchSettings(
            resync_period=settings.discovery.kubernetes.resync_period
        )
        self.state = ProbeState(own_cluster=settings.cluster)
        self.recent = RecentResults(settings.status.recent_results)  # the status page's window
        self.status = InstanceStatus(config_reload_timestamp=time.time())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            MeshprobeCollector(
                source_cluster=settings.cluster,
                state=self.state,
                status=self.status,
            )
        )
        ProcessCollector(registry=self.registry)
        self._identity = PublishedIdentity()
        self.ready = False
        self.port: int | None = None
        self._env: ProbeEnv | None = None
        self._scheduler: Scheduler | None = None
        self._runner: web.AppRunner | None = None
        self._grpc: asyncio.Server | None = None
        self.grpc_port: int | None = None  # the echo's gRPC health port, when grpc_listen is set
        self.peers: PeerWatcher | None = None
        self.discovery: Discovery | None = None
        self._loop_handler: LoopErrorHandler | None = None
        self._conflicts: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        self._loop_handler = loop.get_exception_handler()
        loop.set_exception_handler(_loop_error)
        # First: a listener certificate that does not load stops the start before anything
        # is opened that would need closing.
        self.web = web = ListenerSecurity(
            self._web_config(settings),
            where="" if self.web_config_path else "web",
            on_bcrypt=lambda granted: Hooks.call(self.hooks.bcrypt_checked, granted),
        )
        bundle = load_trust_bundle(settings)
        self.status.bundle = bundle
        self.status.bundle_reload_timestamp = time.time()
        self.identity_body()  # built now, not by the first peer to ask
        self._env = await ProbeEnv.create(
            source_cluster=settings.cluster,
            anchors=bundle if bundle is not None else TrustAnchors.system(),
            trust_domain=settings.trust.trust_domain,
        )
        self._env.trust_domain_aliases = settings.trust.accepted_aliases()
        self.status.client_certs = self._env.clients
        env = self._env
        self._scheduler = Scheduler(
            run=lambda target: run_probe(target, env),
            sink=self._on_result,
            concurrency=settings.concurrency,
        )
        app = build_app(
            cluster=settings.cluster,
            identity=self.identity_body,
            registry=self.registry,
            edges=lambda: edge_exposition(self.state, self.settings.cluster),
            ready=self.is_ready,
            middlewares=[web.middleware],
            client_max_size=LIMITS.client_max_size,
            status=StatusView(self.state, self.recent, self.status, lambda: self.settings),
        )
        app.on_response_prepare.append(web.on_response_prepare)
        for warning in web.warnings():
            log.warning(warning)
        host, port = settings.listen_host_port()
        self._runner, self.port = await start_site(
            app, host, port, ssl_context=web.ssl_context, limits=LIMITS.runner_kwargs()
        )
        if settings.grpc_listen is not None:
            self._grpc, self.grpc_port = await start_grpc_health(
                settings.cluster, settings.grpc_listen
            )
            log.info(
                "gRPC health echo listening", grpc_listen=settings.grpc_listen, port=self.grpc_port
            )
        if web.tls is not None:
            tls = web.tls
            self._tasks.start(
                "listener files",
                lambda: tls.watch(FILES_PERIOD, self._listener_files_checked),
                label="listener TLS files",
            )
        self._tasks.start(
            "loop lag", lambda: monitor_loop_lag(self.status.loop_lag), label="loop lag"
        )
        self.peers = PeerWatcher(
            env=env,
            statuses=self.status.peers,
            our_roots=self.status.our_roots,
            interval=settings.defaults.interval,
            timeout=settings.defaults.timeout,
            on_check=lambda cluster: Hooks.call(self.hooks.peer_checked, cluster),
        )
        self._watch_bundle(settings, bundle)
        self._start_discovery(settings)
        self._reconcile()
        self._tasks.start("reconciler", self._reconciler, label="reconciler")
        self.ready = True
        log.info(
            "meshprobe started",
            cluster=settings.cluster,
            listen=f"{host}:{self.port}",
            targets=len(self.state),
            web=describe_web(web.config),
        )

    async def stop(self) -> None:
        """Cancel in-flight probes and close the listener; bounded so SIGTERM ends within 5 s."""
        self.ready = False
        if self.discovery is not None:
            await self.discovery.aclose()
        if self._scheduler is not None:
            await self._scheduler.aclose()
        if self.peers is not None:
            await self.peers.aclose()
        await self._tasks.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._grpc is not None:
            self._grpc.close()
            await self._grpc.wait_closed()
        if self.web is not None:
            self.web.close()
        if self._env is not None:
            await self._env.aclose()
        asyncio.get_running_loop().set_exception_handler(self._loop_handler)
        log.info("meshprobe stopped", cluster=self.settings.cluster)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- configuration -------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP). A bad file is logged and the old config keeps
        running; `meshprobe_config_reload_success` tells the alerting side."""
        try:
            new = restart_only(
                self.settings, load_settings(self.config_path, environ=self._environ)
            )
            bundle = load_trust_bundle(new)
            if self.web is not None:  # last: it applies at once when the files load
                self.web.update(self._web_config(new))
        except ConfigError as exc:
            self.status.config_reload_success = False
            log.error(
                "config reload failed, keeping the running config",
                errors=format_issues(exc.errors).splitlines(),
            )
            return False
        except (OSError, ValueError) as exc:
            self.status.config_reload_success = False
            log.error("config reload failed, keeping the running config", error=str(exc))
            return False
        configure_logging(new.log_level, new.log_format)
        self.settings = new
        self.recent.resize(new.status.recent_results)
        if self._env is not None:
            self._env.trust_domain = new.trust.trust_domain
            self._env.trust_domain_aliases = new.trust.accepted_aliases()
        if new.trust.configmap is None:  # else the ConfigMap watch keeps providing the roots
            self._adopt_bundle(bundle)
        self._watch_bundle(new, bundle)
        if self.discovery is not None:
            self.discovery.set_defaults(new)
        self._reconcile()
        self.identity_body()  # the trust domain may have changed
        self.status.config_reload_success = True
        self.status.config_reload_timestamp = time.time()
        log.info("config reloaded", targets=len(self.state))
        return True

    def _web_config(self, settings: Settings) -> WebConfig:
        return effective_web_config(settings.web, self.web_config_path)

    def _start_discovery(self, settings: Settings) -> None:
        if not needs_kubernetes(settings.discovery, settings.trust.configmap):
            return
        # Imported here: the generated Kubernetes client is large, and most test and demo
        # daemons never need it.
        from meshprobe.discovery.manager import Discovery  # noqa: PLC0415

        self.discovery = Discovery(
            settings,
            watch=self._watch_settings,
            health=self.status.discovery,
            environ=self._environ if self._environ is not None else dict(os.environ),
            on_change=self._reconcile_wanted.set,
            on_activity=lambda: Hooks.call(self.hooks.discovery_activity),
            adopt_bundle=self._adopt_bundle,
            report_bundle=self._bundle_evaluated,
        )
        self.discovery.start()

    def is_ready(self) -> bool:
        """Started, and every Kubernetes source has completed its first list."""
        return self.ready and (self.discovery is None or self.discovery.synced)

    async def _reconciler(self) -> None:
        """Discovery's changes, applied after the watch loop has returned to its own work."""
        while True:
            await self._reconcile_wanted.wait()
            self._reconcile()

    def _listener_files_checked(self) -> None:
        Hooks.call(self.hooks.listener_files_checked)

    def _bundle_evaluated(self, ok: bool) -> None:
        self.status.bundle_reload_success = ok
        Hooks.call(self.hooks.bundle_checked, ok)

    def _watch_bundle(self, settings: Settings, bundle: TrustAnchors | None) -> None:
        """(Re)start following the bundle file; polled at half the probe interval (at most 5 s)
        so new roots are in use within one interval."""
        self._tasks.cancel("bundle file")
        path = settings.trust.bundle_file
        if path is None or bundle is None:
            return
        watch = BundleWatcher(path, on_change=self._adopt_bundle)
        period = max(0.2, min(5.0, settings.defaults.interval / 2))
        self._tasks.start(
            "bundle file",
            lambda: watch.watch(period, self._bundle_evaluated),
            label="trust bundle file",
        )

    def _adopt_bundle(self, bundle: TrustAnchors | None) -> None:
        self.status.bundle = bundle
        self.status.bundle_reload_success = True
        self.status.bundle_reload_timestamp = time.time()
        if self._env is not None:
            self._env.anchors = bundle if bundle is not None else TrustAnchors.system()
        self.identity_body()

    def _reconcile(self) -> None:
        """Static, peer and discovered targets, merged and reconciled by value: unchanged
        targets keep their scheduler loop (and rhythm) whatever else changed."""
        assert self._scheduler is not None and self._env is not None
        self._reconcile_wanted.clear()  # what was asked for until now is in this one
        settings = self.settings
        found = self.discovery
        peers = merge_peers(
            [Peer(p.cluster, p.url, p.grpc_url) for p in settings.peers],
            found.peers() if found is not None else [],
            own_cluster=settings.cluster,
        )
        defaults = settings.defaults
        if self.peers is not None:
            self.peers.set_peers(peers, interval=defaults.interval, timeout=defaults.timeout)
        static = settings.build_targets() + [
            echo
            for peer in peers
            for echo in peer_echo_targets(
                peer,
                interval=defaults.interval,
                timeout=defaults.timeout,
                budget=defaults.budget.remote,
                metrics=defaults.metrics(None, None),
            )
        ]
        targets, conflicts = merge_targets(static, found.targets() if found is not None else [])
        if conflicts != self._conflicts:
            for line in conflicts:
                log.warning("discovered target conflicts with another, skipped", detail=line)
            self._conflicts = conflicts
        before = self._scheduler.targets
        self._load_client_certs(targets)
        self.state.set_targets(targets)
        self.recent.set_targets(targets)
        added, removed = self._scheduler.reconcile(targets)
        for target in before - set(targets):
            self._env.forget(target)
        if added or removed:
            log.info("targets reconciled", added=added, removed=removed, total=len(targets))
        Hooks.call(self.hooks.reconciled, added, removed)

    def _load_client_certs(self, targets: list[Target]) -> None:
        """The pairs the targets name, loaded now rather than at their first probe (their
        metrics and a bad pair's log line come at once); pairs no target names are forgotten."""
        assert self._env is not None
        clients = self._env.clients
        pairs = {p for t in targets if (p := t.tls.client_pair) is not None}
        clients.retain(pairs)
        for pair in sorted(pairs):
            clients.source(*pair).current()

    # -- results -------------------------------------------------------------------------------

    def _on_result(self, target: Target, result: ProbeResult) -> None:
        transition = self.state.record(target, result)
        self.recent.record(target, result, time.time())
        if transition is not None:
            _log_transition(transition)
        Hooks.call(self.hooks.result, target, result)

    def identity_body(self) -> bytes:
        """`/v1/identity`: the bytes built at the last change of bundle or trust domain (the
        handler only compares inputs, so a change missed by the hooks above is still seen)."""
        return self._identity.body(
            cluster=self.settings.cluster,
            trust_domain=self.settings.trust.trust_domain,
            bundle=self.status.bundle,
        )


def _log_transition(t: Transition) -> None:
    fields = {
        "target": t.target.name,
        "target_cluster": t.target.cluster,
        "probe": t.target.kind.value,
        "url": t.target.shown_url,
    }
    if t.current is None:
        log.info("probe recovered", previous_reason=t.previous, **fields)
    else:
        log.warning(
            "probe failing",
            reason=t.current.value,
            previous_reason=t.previous,
            detail=t.detail,
            **fields,
        )


LoopErrorHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def _loop_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What the event loop reports itself (a callback that raised, uvloop's SSL transport closed
    under a cancelled handshake) as one structured line, like every other log line, instead of
    asyncio's multi-line text on stderr that breaks a JSON log stream."""
    exc = context.get("exception")
    log.error(
        "event loop error",
        message=str(context.get("message", "")),
        error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
        exc_info=exc if isinstance(exc, BaseException) else None,
    )
