"""The configuration file and `MESHPROBE_*` environment, validated into frozen values.

Validation is strict (unknown keys are errors) because a misspelt `tiemout:` silently falling back
to a default is the kind of mistake that makes a prober lie. Everything here is checked before the
daemon starts or a reload is accepted; probes receive only `model.Target` values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.exceptions import SettingsError

from meshprobe.config.discovery import Discovery, describe_kubernetes
from meshprobe.config.durations import format_duration
from meshprobe.config.errors import (
    ConfigError,
    ConfigIssue,
    Loc,
    format_issues,
    issues_from_validation_error,
    key_issues,
    raise_cross_field,
)
from meshprobe.config.sections import Budget, Defaults, PeerSpec, TargetSpec, TLSSpec, Trust
from meshprobe.config.sources import (
    CONFIG_ENV,
    LOADING,
    EnvironSource,
    LoadSources,
    MappingSource,
    loading,
)
from meshprobe.config.status import StatusSettings
from meshprobe.config.targets import make_target, too_long
from meshprobe.config.types import (
    ClusterName,
    parse_byte_size,
    split_host_port,
)
from meshprobe.config.web import WebConfig
from meshprobe.config.yamlfile import read_yaml_mapping
from meshprobe.model import SCHEME_KIND, TLS_SCHEMES, Scope, Target, TLSOptions

__all__ = [
    "Budget",
    "ConfigError",
    "ConfigIssue",
    "Defaults",
    "PeerSpec",
    "Settings",
    "TLSSpec",
    "TargetSpec",
    "Trust",
    "format_issues",
    "load_settings",
    "load_settings_from_mapping",
    "parse_byte_size",
    "summarize",
]

ENV_PREFIX = "MESHPROBE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    cluster: ClusterName
    listen: str = "0.0.0.0:9942"
    # The echo's gRPC health service (grpc.health.v1.Health/Check), e.g. "0.0.0.0:9943", so peers
    # can probe the cross-cluster gRPC path; off unless set.
    grpc_listen: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    concurrency: int = Field(default=256, ge=1)
    defaults: Defaults = Defaults()
    trust: Trust = Trust()
    targets: list[TargetSpec] = []
    peers: list[PeerSpec] = []
    discovery: Discovery = Discovery()
    web: WebConfig = WebConfig()  # listener TLS and basic auth, exporter-toolkit keys
    status: StatusSettings = StatusSettings()  # the status page's ring of recent results

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Earlier sources win: explicit arguments, then the environment, then the file."""
        current = LOADING.get()
        if current is None:
            return (init_settings, env_settings)
        return (
            init_settings,
            EnvironSource(settings_cls, current.environ),
            MappingSource(settings_cls, current.file_data),
        )

    @field_validator("listen", "grpc_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        issues: list[tuple[Loc, str]] = []
        seen: dict[tuple[str, str, str], int] = {}
        for i, spec in enumerate(self.targets):
            key = (spec.name, self.target_cluster(spec), SCHEME_KIND[spec.scheme].value)
            if key in seen:
                reason = (
                    f"duplicate target: name {key[0]!r}, cluster {key[1]!r}, probe {key[2]} "
                    f"is already defined at targets.{seen[key]}"
                )
                issues.append((("targets", i), reason))
            seen.setdefault(key, i)
            interval = spec.interval or self.defaults.interval
            timeout = spec.timeout or self.defaults.timeout
            if timeout > interval:
                field = "timeout" if spec.timeout is not None else "interval"
                note = "" if spec.timeout is not None else " (timeout from defaults)"
                issues.append((("targets", i, field), too_long(timeout, interval, note)))
        peer_at: dict[str, int] = {}
        for i, peer in enumerate(self.peers):
            if peer.cluster == self.cluster:
                reason = f"peer {peer.cluster!r} is this instance's own cluster"
                issues.append((("peers", i, "cluster"), reason))
            elif peer.cluster in peer_at:
                reason = (
                    f"duplicate peer {peer.cluster!r}, already at peers.{peer_at[peer.cluster]}"
                )
                issues.append((("peers", i, "cluster"), reason))
            peer_at.setdefault(peer.cluster, i)
        if issues:
            raise_cross_field(issues)
        return self

    def target_cluster(self, spec: TargetSpec) -> str:
        return spec.cluster or self.cluster

    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)

    def build_targets(self) -> list[Target]:
        return [self._build_target(spec) for spec in self.targets]

    def _build_target(self, spec: TargetSpec) -> Target:
        tls = spec.tls or TLSSpec()
        secure = spec.scheme in TLS_SCHEMES
        client = tls.pair() or (self.defaults.tls.pair() if secure else None)
        return make_target(
            name=spec.name,
            url=spec.url,
            cluster=self.target_cluster(spec),
            own_cluster=self.cluster,
            interval=spec.interval or self.defaults.interval,
            timeout=spec.timeout or self.defaults.timeout,
            budget=spec.budget,
            local_budget=self.defaults.budget.local,
            remote_budget=self.defaults.budget.remote,
            expected_status=frozenset(spec.expected_status),
            body_regex=spec.body_regex,
            body_limit=spec.body_limit or self.defaults.body_limit,
            keepalive=spec.keepalive,
            follow_redirects=spec.follow_redirects,
            method=spec.method,
            headers=tuple(sorted((spec.grpc.metadata if spec.grpc else spec.headers).items())),
            grpc_service=spec.grpc.service if spec.grpc else "",
            tls=TLSOptions(
                ca_file=tls.ca_file,
                identity=tls.identity,
                server_name=tls.server_name,
                insecure_skip_verify=tls.insecure_skip_verify,
                cert_file=client[0] if client else None,
                key_file=client[1] if client else None,
                alpn=tuple(tls.alpn) if tls.alpn is not None else None,
            ),
            metrics=self.defaults.metrics(spec.histogram, spec.phases),
        )


def load_settings(path: str | Path | None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Load file plus environment, raising ConfigError with every problem found.

    `environ` defaults to os.environ; with `path` None the file named by MESHPROBE_CONFIG is read,
    and with neither the environment alone must be enough.
    """
    if environ is None:
        environ = dict(os.environ)
    if path is None:
        path = environ.get(CONFIG_ENV) or None
    if path is None:
        return _validate({}, environ, "<env>")
    return _validate(read_yaml_mapping(Path(path)), environ, str(path))


def load_settings_from_mapping(
    data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate an in-memory config (one-shot probes, tests) with the same errors as a file.

    Unlike `load_settings` the environment is not read unless given: the caller built the whole
    config, and a stray MESHPROBE_CLUSTER in a shell should not change a one-shot probe.
    """
    return _validate(data, environ or {}, "<mapping>")


def _validate(file_data: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Settings:
    if bad_keys := key_issues(file_data):
        raise ConfigError(bad_keys, source)
    try:
        with loading(LoadSources(file_data=file_data, environ=environ)):
            return Settings()  # type: ignore[call-arg]  # fields come from the sources
    except ValidationError as exc:
        raise ConfigError(issues_from_validation_error(exc), source) from None
    except SettingsError as exc:
        # pydantic-settings only fails here on a complex value that is not JSON.
        found = re.search(r'field "([^"]+)"', str(exc))
        name = f"{ENV_PREFIX}{found.group(1).upper()}" if found else "a MESHPROBE_ variable"
        issue = ConfigIssue("<env>", f"{name} is not valid JSON for a list or mapping value")
        raise ConfigError([issue], source) from None


def budget_warnings(settings: Settings) -> list[ConfigIssue]:
    """Budgets that are not histogram bounds: a quantile compared with such a budget is an
    interpolation inside a bucket, so a dashboard's "p99 within budget" may be wrong either way
    (the burn alerts are not affected: they count over-budget probes, not buckets)."""
    out: list[ConfigIssue] = []
    defaults = settings.defaults
    for scope, budget in (("local", defaults.budget.local), ("remote", defaults.budget.remote)):
        bounds = defaults.histogram.bounds()
        if bounds and budget not in bounds:
            reason = f"the {scope} budget {format_duration(budget)} is not a bound: {_add_it}"
            out.append(ConfigIssue("defaults.histogram.buckets", reason))
    for index, (spec, target) in enumerate(
        zip(settings.targets, settings.build_targets(), strict=True)
    ):
        bounds = target.metrics.buckets
        if bounds and target.budget not in bounds and (spec.budget or spec.histogram):
            reason = f"the budget {format_duration(target.budget)} is not a bound: {_add_it}"
            out.append(ConfigIssue(f"targets.{index}.histogram.buckets", reason))
    return out


_add_it = "quantiles compared with it are interpolated; add it to the buckets"


def summarize(settings: Settings) -> str:
    """The one line `check` and the startup log print, so a user sees what was understood."""
    targets = settings.build_targets()
    local = sum(1 for t in targets if t.scope is Scope.LOCAL)
    peers = len(settings.peers)
    trust = settings.trust
    bundle = f"trust bundle {trust.bundle_file}" if trust.bundle_file else "no trust bundle"
    bundle = describe_kubernetes(settings.discovery, trust.configmap, bundle)
    line = (
        f"config OK: cluster {settings.cluster}, listen {settings.listen}, "
        f"{_plural(len(targets), 'target')} ({local} local, {len(targets) - local} remote), "
        f"{_plural(peers, 'peer')}, {bundle} (domain {_domains(trust)})"
    )
    # Free-text settings (a ConfigMap name, a trust domain) may hold a lone surrogate that YAML
    # spelled as an escape: printing that raw to stdout would end `check` with a traceback.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


def _domains(trust: Trust) -> str:
    if not trust.trust_domain_aliases:
        return trust.trust_domain
    return f"{trust.trust_domain}, aliases {', '.join(trust.trust_domain_aliases)}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
