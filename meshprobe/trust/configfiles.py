"""The files a config names, read the way `meshprobe run` reads them when it starts.

`check` and `run` share this so that a config `check` passes is one `run` can start with: a trust
bundle that is missing, a directory, megabytes of garbage or PEM without one usable root stops
both with exit 2 and `trust.bundle_file: <reason>`, instead of `config OK` in CI and then a
crash-looping pod.

Files that `run` reads only later are warnings in `check`, not errors: a target's `tls.ca_file`
is read per probe (a bad one fails that target's probes with a reason, the others carry on) and
an explicit kubeconfig is retried in the background (discovery stays down, `/readyz` unready).
Neither stops the daemon, so neither should fail a CI gate that may run without those files.
"""

from __future__ import annotations

import os

from meshprobe.config.errors import ConfigError, ConfigIssue
from meshprobe.config.settings import Settings
from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.clientcert import load_pair
from meshprobe.trust.pem import shown

__all__ = ["file_warnings", "load_trust_bundle"]

BUNDLE_FIELD = "trust.bundle_file"


def load_trust_bundle(settings: Settings) -> TrustAnchors | None:
    """The configured trust bundle file, or None without one (system roots, or a ConfigMap).

    Raises ConfigError on `trust.bundle_file`, so `check`, `run` and a reload report it the same
    way as any other invalid setting.
    """
    path = settings.trust.bundle_file
    if path is None:
        return None
    try:
        return TrustAnchors.from_file(path)
    except ValueError as exc:
        raise ConfigError([ConfigIssue(BUNDLE_FIELD, str(exc))], shown(path)) from None


def skipped_roots(anchors: TrustAnchors | None) -> list[ConfigIssue]:
    """Bundle certificates the daemon will leave out, for `check` to show before `run` logs them."""
    if anchors is None:
        return []
    return [
        ConfigIssue(
            BUNDLE_FIELD,
            f"certificate skipped: {s.subject} ({s.fingerprint_sha256[:16]}): {s.reason}",
        )
        for s in anchors.skipped_roots
    ]


def file_warnings(settings: Settings) -> list[ConfigIssue]:
    """Files `run` reads after start: problems that will fail probes or discovery, not start."""
    out: list[ConfigIssue] = []
    verdicts: dict[str, str | None] = {}
    for index, spec in enumerate(settings.targets):
        path = spec.tls.ca_file if spec.tls is not None else None
        if path is None:
            continue
        if path not in verdicts:
            try:
                TrustAnchors.from_file(path)
                verdicts[path] = None
            except ValueError as exc:
                verdicts[path] = str(exc)
        if (problem := verdicts[path]) is not None:
            reason = f"{problem} (this target's probes will fail with tls_untrusted)"
            out.append(ConfigIssue(f"targets.{index}.tls.ca_file", reason))
    out += _client_cert_warnings(settings)
    kube = settings.discovery.kubernetes
    uses_kube = kube.enabled or settings.trust.configmap is not None
    if uses_kube and kube.kubeconfig is not None and not _any_exists(kube.kubeconfig):
        reason = (
            f"{shown(kube.kubeconfig)}: no such file (discovery will retry; "
            "the pod stays unready until it appears)"
        )
        out.append(ConfigIssue("discovery.kubernetes.kubeconfig", reason))
    return out


def _client_cert_warnings(settings: Settings) -> list[ConfigIssue]:
    """Client certificate pairs that cannot be used now: a warning, not an error, because in a
    mesh the sidecar writes them after the pod starts (Istio's OUTPUT_CERTS)."""
    named: list[tuple[str, tuple[str, str]]] = []
    if (pair := settings.defaults.tls.pair()) is not None:
        named.append(("defaults.tls", pair))
    for index, spec in enumerate(settings.targets):
        if spec.tls is not None and (pair := spec.tls.pair()) is not None:
            named.append((f"targets.{index}.tls", pair))
    out: list[ConfigIssue] = []
    verdicts: dict[tuple[str, str], str | None] = {}
    for where, pair in named:
        if pair not in verdicts:
            try:
                load_pair(*pair)
                verdicts[pair] = None
            except ValueError as exc:
                verdicts[pair] = str(exc)
        if (problem := verdicts[pair]) is not None:
            reason = (
                f"{problem} (probes go without a client certificate until the files hold a good "
                "pair; servers that require one refuse them)"
            )
            out.append(ConfigIssue(f"{where}.cert_file", reason))
    return out


def _any_exists(paths: str) -> bool:
    """Like the client's own check: $KUBECONFIG-style lists merge the files that exist."""
    try:
        return any(os.path.exists(os.path.expanduser(p)) for p in paths.split(os.pathsep) if p)
    except ValueError:  # NUL in a name: nothing by that name can exist
        return False
