"""`meshprobe probe URL`: one probe, explained to a human.

The target goes through the same config validation as the daemon's, so a URL the daemon would
reject is rejected here with the same message.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meshprobe.cli.report import render
from meshprobe.config.settings import ConfigError, format_issues, load_settings_from_mapping
from meshprobe.model import TLS_SCHEMES, Target
from meshprobe.probes import ProbeEnv, run_probe
from meshprobe.trust.anchors import TrustAnchors


def _with_scheme(url: str, kind: str | None) -> str:
    if kind is None:
        return url
    parts = urlsplit(url if "://" in url else f"{kind}://{url}")
    return urlunsplit((kind, *parts[1:]))


def _client_line(target: Target, env: ProbeEnv) -> str | None:
    """What we presented, so a refusal can be read against it."""
    files = target.tls.client_pair
    if files is None:
        return None
    pair = env.client_pair(target)
    if pair is None:
        return f"none ({env.clients.source(*files).error})"
    expires = datetime.fromtimestamp(pair.not_after, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{pair.identity}, expires {expires}"


async def probe_once(
    url: str,
    *,
    kind: str | None = None,
    ca_file: str | None = None,
    identity: str | None = None,
    timeout: str = "5s",  # noqa: ASYNC109 - the probe's own budget, applied by run_probe
    insecure: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> int:
    url = _with_scheme(url, kind)
    spec: dict[str, Any] = {"name": "cli", "url": url, "timeout": timeout}
    if urlsplit(url).scheme in TLS_SCHEMES:
        spec["tls"] = {
            "identity": identity,
            "ca_file": ca_file,
            "insecure_skip_verify": insecure,
            "cert_file": cert_file,
            "key_file": key_file,
        }
    elif cert_file or key_file:
        print(
            "--cert-file/--key-file: only https:// and tls:// probes present one", file=sys.stderr
        )
        return 2
    try:
        settings = load_settings_from_mapping(
            {"cluster": "cli", "defaults": {"interval": "1h"}, "targets": [spec]}
        )
        anchors = TrustAnchors.from_file(ca_file) if ca_file else TrustAnchors.system()
    except ConfigError as exc:
        print(format_issues(exc.errors), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"--ca-file: {exc}", file=sys.stderr)
        return 2
    (target,) = settings.build_targets()
    env = await ProbeEnv.create(source_cluster="cli", anchors=anchors, trust_domain=None)
    try:
        result = await run_probe(target, env)
        client = _client_line(target, env)
    finally:
        await env.aclose()
    print(render(target, result, client=client))
    return 0 if result.success else 1
