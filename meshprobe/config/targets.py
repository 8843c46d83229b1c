"""The one Target factory: every edge, whether from the config file, a discovered Service, a peer
or a test, gets its scheme, host, port, path, scope, budget and interval rules here.

Four builders used to repeat these rules (default ports, scope from the clusters, the budget of
the scope, timeout <= interval), and a fix in one would have missed the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from meshprobe.config.durations import format_duration
from meshprobe.model import Scope, Target

__all__ = ["DEFAULT_PORTS", "TimeoutOverInterval", "make_target", "too_long"]

# Ports a URL may leave out; tcp:// and tls:// must name theirs.
DEFAULT_PORTS = {"http": 80, "https": 443}


def too_long(timeout: float, interval: float, note: str = "") -> str:
    """The one wording of the timeout <= interval rule, for the config checks and the factory."""
    return (
        f"timeout {format_duration(timeout)} is longer than the interval "
        f"{format_duration(interval)}{note}; a probe must finish before the next one starts"
    )


class TimeoutOverInterval(ValueError):
    """A probe must finish before the next one starts; callers name the field that is wrong."""


def make_target(
    *,
    name: str,
    url: str,
    cluster: str,
    own_cluster: str,
    interval: float,
    timeout: float,
    budget: float | None,
    local_budget: float,
    remote_budget: float,
    discovery: str = "static",
    **options: Any,
) -> Target:
    """A Target from its URL and settings. `budget` None takes the budget of the scope, which
    follows from `cluster` against `own_cluster`; `options` are the remaining Target fields
    (tls, headers, expected_status, ...). Raises TimeoutOverInterval."""
    if timeout > interval:
        raise TimeoutOverInterval(too_long(timeout, interval))
    parts = urlsplit(url)
    scheme = parts.scheme
    path = "/"
    if scheme in DEFAULT_PORTS:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    scope = Scope.LOCAL if cluster == own_cluster else Scope.REMOTE
    if budget is None:
        budget = local_budget if scope is Scope.LOCAL else remote_budget
    return Target(
        name=name,
        url=url,
        scheme=scheme,
        host=parts.hostname or "",
        port=parts.port if parts.port is not None else DEFAULT_PORTS.get(scheme, 0),
        path=path,
        cluster=cluster,
        scope=scope,
        interval=interval,
        timeout=timeout,
        budget=budget,
        discovery=discovery,
        **options,
    )
