"""What a SIGHUP may change, and what only a restart may."""

from __future__ import annotations

import structlog

from meshprobe.config.settings import Settings

log = structlog.get_logger(__name__)


def restart_only(old: Settings, new: Settings) -> Settings:
    """The reloaded settings with what only a restart may change put back: the listener,
    our cluster name, and where Kubernetes discovery and the trust ConfigMap come from."""
    for field in ("cluster", "listen", "grpc_listen", "discovery"):
        if getattr(new, field) != getattr(old, field):
            log.warning("setting changes only on restart", field=field)
    trust = new.trust
    if (new.trust.configmap, new.trust.bundle_file is None) != (
        old.trust.configmap,
        old.trust.bundle_file is None,
    ) and (new.trust.configmap is not None or old.trust.configmap is not None):
        log.warning("setting changes only on restart", field="trust.configmap")
        trust = new.trust.model_copy(
            update={"configmap": old.trust.configmap, "bundle_file": old.trust.bundle_file}
        )
    return new.model_copy(
        update={
            "cluster": old.cluster,
            "listen": old.listen,
            "grpc_listen": old.grpc_listen,
            "discovery": old.discovery,
            "trust": trust,
        }
    )
