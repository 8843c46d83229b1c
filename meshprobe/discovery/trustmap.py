"""The trust bundle from a ConfigMap (Istio's `istio-ca-root-cert`, Linkerd's
`linkerd-identity-trust-roots`), watched so a root rotation is in use within seconds.

It follows the bundle file's policy (`meshprobe.trust.bundlesource.KeepLastGood`): content that does
not parse, a missing key or a deleted ConfigMap keeps the roots we had, because during a botched
rotation probing on stale roots beats probing on none; each rejection is logged once and shows
as `meshprobe_trust_bundle_reload_success 0`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from meshprobe.trust.anchors import TrustAnchors
from meshprobe.trust.bundlesource import KeepLastGood

log = structlog.get_logger(__name__)


class ConfigMapBundle:
    """The watch handler for the one ConfigMap (the loop selects it by name), under the same
    keep-last-good policy as the bundle file."""

    def __init__(
        self,
        *,
        namespace: str,
        name: str,
        key: str,
        adopt: Callable[[TrustAnchors], None],
        report: Callable[[bool], None],
        on_error: Callable[[], None],
    ) -> None:
        self.namespace, self.name, self.key = namespace, name, key
        self._report = report  # whether the current content is in use
        self._policy = KeepLastGood(source=self.where, adopt=adopt, on_rejected=on_error)

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name} key {self.key}"

    def replace(self, objects: list[dict[str, Any]]) -> None:
        mine = [o for o in objects if self._is_mine(o)]
        if mine:
            self._update(mine[-1])
        else:
            self._reject("the ConfigMap does not exist")

    def apply(self, event: str, obj: dict[str, Any]) -> None:
        if not self._is_mine(obj):
            return
        if event == "DELETED":
            self._reject("the ConfigMap was deleted")
        else:
            self._update(obj)

    def _is_mine(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return bool(meta.get("name") == self.name and meta.get("namespace") == self.namespace)

    def _update(self, obj: dict[str, Any]) -> None:
        data = obj.get("data") or {}
        pem = data.get(self.key) if isinstance(data, dict) else None
        if not isinstance(pem, str) or not pem.strip():
            self._reject(f"no key {self.key!r} in the ConfigMap")
            return
        content = pem.encode()
        if self._policy.in_use(content):
            self._policy.keep()
        else:
            try:
                anchors = TrustAnchors.from_pem(content, source=self.where)
            except ValueError as exc:
                self._reject(str(exc))
                return
            self._policy.adopt(content, anchors)
        self._report(True)

    def _reject(self, reason: str) -> None:
        self._policy.reject(reason)
        self._report(False)
