"""The Kubernetes API calls meshprobe makes, written once as RBAC rules.

`client.KubeApi` refuses any call not listed here, the fake API server in the tests records every
call made, and a test compares `deploy/base/rbac.yaml` with `cluster_role_rules()`: so the
ClusterRole we ship is exactly what the code needs, and a new call cannot ship without its rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from meshprobe.config.discovery import TRUST_PRESETS

LIST: Final = "list"
WATCH: Final = "watch"
SERVICES: Final = "services"
CONFIGMAPS: Final = "configmaps"


@dataclass(frozen=True, slots=True)
class Rule:
    resource: str
    verbs: tuple[str, ...]
    # Empty: every object. ConfigMaps are limited to the meshes' trust bundles; Kubernetes
    # authorises list/watch by name when the request selects `metadata.name`, which ours do.
    resource_names: tuple[str, ...] = ()
    api_group: str = ""  # the core group


RULES: Final = (
    Rule(SERVICES, (LIST, WATCH)),
    Rule(
        CONFIGMAPS,
        (LIST, WATCH),
        resource_names=tuple(sorted({name for _, name, _ in TRUST_PRESETS.values()})),
    ),
)


def allowed(resource: str, verb: str) -> bool:
    return any(rule.resource == resource and verb in rule.verbs for rule in RULES)


def cluster_role_rules() -> list[dict[str, Any]]:
    """The `rules:` of the ClusterRole, in the shape Kubernetes (and our YAML) writes them."""
    out: list[dict[str, Any]] = []
    for rule in RULES:
        entry: dict[str, Any] = {
            "apiGroups": [rule.api_group],
            "resources": [rule.resource],
            "verbs": list(rule.verbs),
        }
        if rule.resource_names:
            entry["resourceNames"] = list(rule.resource_names)
        out.append(entry)
    return out
