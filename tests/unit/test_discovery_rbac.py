"""The shipped ClusterRole is exactly what `meshprobe.discovery.rbac` says the code calls."""

from __future__ import annotations

from pathlib import Path

import yaml

from meshprobe.config.discovery import TRUST_PRESETS
from meshprobe.discovery import rbac

RBAC_YAML = Path(__file__).parents[2] / "deploy" / "base" / "rbac.yaml"


def _docs() -> dict[str, dict[str, object]]:
    return {d["kind"]: d for d in yaml.safe_load_all(RBAC_YAML.read_text()) if d}


def test_cluster_role_equals_the_rules_in_code() -> None:
    assert _docs()["ClusterRole"]["rules"] == rbac.cluster_role_rules()


def test_read_only_and_no_secrets() -> None:
    for rule in rbac.RULES:
        assert set(rule.verbs) <= {"get", "list", "watch"}
        assert rule.resource != "secrets"
    assert "secrets" not in RBAC_YAML.read_text().replace("no secrets", "")


def test_binding_names_the_service_account_in_meshprobe_namespace() -> None:
    docs = _docs()
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": docs["ClusterRole"]["metadata"]["name"],  # type: ignore[index]
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "meshprobe", "namespace": "meshprobe"}
    ]


def test_every_trust_preset_is_readable() -> None:
    (configmaps,) = [r for r in rbac.RULES if r.resource == rbac.CONFIGMAPS]
    assert {name for _, name, _ in TRUST_PRESETS.values()} == set(configmaps.resource_names)


def test_allowed() -> None:
    assert rbac.allowed(rbac.SERVICES, rbac.WATCH)
    assert not rbac.allowed("secrets", rbac.LIST)
    assert not rbac.allowed(rbac.SERVICES, "delete")
