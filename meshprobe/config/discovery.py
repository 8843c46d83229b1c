"""The `discovery.kubernetes` and `trust.configmap` config sections.

Plain pydantic models with no Kubernetes client import: `meshprobe check` stays fast, and the
discovery package (which loads the client) sits above the config layer instead of inside it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from meshprobe.config.errors import raise_cross_field
from meshprobe.config.types import Duration, Namespace, NonEmpty

# (namespace, name, key) of the meshes' own root ConfigMaps. Istio copies `istio-ca-root-cert`
# into every namespace; istio-system always has it. Linkerd keeps its roots in `linkerd`.
TRUST_PRESETS: dict[str, tuple[str, str, str]] = {
    "istio": ("istio-system", "istio-ca-root-cert", "root-cert.pem"),
    "linkerd": ("linkerd", "linkerd-identity-trust-roots", "ca-bundle.crt"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesDiscovery(_Frozen):
    enabled: bool = False
    namespaces: list[Namespace] = []  # empty: every namespace
    label_selector: NonEmpty | None = None
    # Each list/watch cycle lasts this long (the server ends the watch with `timeoutSeconds`),
    # then a full list replaces what we know: a bound on drift if an event was ever lost.
    resync_period: Duration = 300.0
    kubeconfig: NonEmpty | None = None  # default: in-cluster service account, else $KUBECONFIG
    context: NonEmpty | None = None
    cluster_domain: NonEmpty = "cluster.local"  # discovered URLs use <svc>.<ns>.svc.<domain>
    # `dns` probes the Service's name, so resolution is measured as clients see it; `cluster-ip`
    # probes spec.clusterIP, for clusters whose DNS meshprobe should not depend on.
    address: Literal["dns", "cluster-ip"] = "dns"

    @field_validator("namespaces")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("namespaces are listed more than once")
        return value

    @field_validator("resync_period")
    @classmethod
    def _resync(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("resync_period must be at least 1s (it is a server-side timeout)")
        return value


class Discovery(_Frozen):
    kubernetes: KubernetesDiscovery = KubernetesDiscovery()


class TrustConfigMap(_Frozen):
    """Where the trust bundle lives: `istio`, `linkerd`, or {namespace, name, key}; a preset can
    be combined with overrides, e.g. {preset: istio, namespace: meshprobe}."""

    preset: Literal["istio", "linkerd"] | None = None
    namespace: Namespace | None = None
    name: NonEmpty | None = None
    key: NonEmpty | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data not in TRUST_PRESETS:
                raise ValueError(
                    f"unknown preset {data!r}: use istio, linkerd or {{namespace, name, key}}"
                )
            return {"preset": data}
        return data

    @model_validator(mode="after")
    def _complete(self) -> TrustConfigMap:
        if self.preset is None:
            missing = [f for f in ("namespace", "name", "key") if getattr(self, f) is None]
            if missing:
                raise_cross_field([((f,), "required without a preset") for f in missing])
        return self

    @property
    def ref(self) -> tuple[str, str, str]:
        """(namespace, name, key) with the preset's values filling what was not given."""
        ns, name, key = TRUST_PRESETS[self.preset] if self.preset else ("", "", "")
        return (self.namespace or ns, self.name or name, self.key or key)


def needs_kubernetes(discovery: Discovery, configmap: TrustConfigMap | None) -> bool:
    return discovery.kubernetes.enabled or configmap is not None


def describe_kubernetes(discovery: Discovery, configmap: TrustConfigMap | None, bundle: str) -> str:
    """The trust and discovery part of `meshprobe check`'s summary line; `bundle` describes the
    file-based bundle, replaced when the bundle comes from a ConfigMap."""
    parts = [bundle]
    if configmap is not None:
        parts = ["trust bundle from ConfigMap {}/{} key {}".format(*configmap.ref)]
    kube = discovery.kubernetes
    if kube.enabled:
        where = ", ".join(kube.namespaces) if kube.namespaces else "all namespaces"
        parts.append(f"Kubernetes discovery in {where}")
    return ", ".join(parts)


__all__ = [
    "TRUST_PRESETS",
    "Discovery",
    "KubernetesDiscovery",
    "TrustConfigMap",
    "describe_kubernetes",
    "needs_kubernetes",
]
