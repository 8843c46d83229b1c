"""The Services we know, and what each one means: the watch loops' handler for Services.

Each object is classified once per resourceVersion, so a malformed annotation is logged and
counted once per change of the object, not once per event on some other Service, and a relist
(after 410 Gone or a resync) re-reads nothing that did not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from meshprobe.discovery.services import (
    AnnotationError,
    Found,
    TargetDefaults,
    classify,
    object_name,
    source_of,
)
from meshprobe.model import Peer, Target

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class _Entry:
    version: str
    obj: dict[str, Any]  # kept so a reload's new defaults can classify it again
    found: Found | None


class ServiceCatalog:
    """Feeds one or more Service watch loops (one per namespace, or one for all)."""

    def __init__(
        self,
        *,
        defaults: TargetDefaults,
        on_change: Callable[[], None],
        on_error: Callable[[str], None],
    ) -> None:
        self._defaults = defaults
        self._on_change = on_change  # after any change of targets or peers
        self._on_error = on_error  # (source) once per malformed object version
        self._entries: dict[Key, _Entry] = {}

    def handler(self, namespace: str | None) -> _ScopedHandler:
        """The handler for the loop watching `namespace` (None: every namespace)."""
        return _ScopedHandler(self, namespace)

    # -- what the daemon reads ---------------------------------------------------------------

    def targets(self) -> list[Target]:
        found = (e.found for _, e in sorted(self._entries.items()) if e.found is not None)
        return [f.target for f in found if f.target is not None]

    def peers(self) -> list[Peer]:
        found = (e.found for _, e in sorted(self._entries.items()) if e.found is not None)
        return [f.peer for f in found if f.peer is not None]

    def set_defaults(self, defaults: TargetDefaults) -> None:
        """New config defaults (a reload): every object is classified again."""
        if defaults == self._defaults:
            return
        self._defaults = defaults
        for key, entry in list(self._entries.items()):
            self._entries[key] = _Entry(entry.version, entry.obj, self._classify(key, entry.obj))
        self._on_change()

    # -- what the loops call -----------------------------------------------------------------

    def _replace(self, namespace: str | None, objects: list[dict[str, Any]]) -> None:
        seen: set[Key] = set()
        changed = False
        for obj in objects:
            key = object_name(obj)
            seen.add(key)
            changed |= self._upsert(key, obj)
        for key in [k for k in self._entries if namespace in (None, k[0]) and k not in seen]:
            changed |= self._entries.pop(key).found is not None
        if changed:
            self._on_change()

    def _apply(self, event: str, obj: dict[str, Any]) -> None:
        key = object_name(obj)
        if event == "DELETED":
            entry = self._entries.pop(key, None)
            changed = entry is not None and entry.found is not None
        else:
            changed = self._upsert(key, obj)
        if changed:
            self._on_change()

    def _upsert(self, key: Key, obj: dict[str, Any]) -> bool:
        """Classify `obj` unless this version was seen; True when its meaning changed."""
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        old = self._entries.get(key)
        if old is not None and version and old.version == version:
            return False
        found = self._classify(key, obj)
        self._entries[key] = _Entry(version, obj, found)
        return (old.found if old is not None else None) != found

    def _classify(self, key: Key, obj: dict[str, Any]) -> Found | None:
        try:
            return classify(obj, self._defaults)
        except AnnotationError as exc:
            source = source_of(obj)
            log.warning(
                "malformed annotation, Service skipped",
                service=f"{key[0]}/{key[1]}",
                annotation=exc.annotation,
                reason=exc.reason,
                discovery=source,
            )
            self._on_error(source)
            return None


@dataclass(frozen=True, slots=True)
class _ScopedHandler:
    catalog: ServiceCatalog
    namespace: str | None

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self.catalog._replace(self.namespace, objects)

    def apply(self, event: str, obj: dict[str, Any]) -> None:
        self.catalog._apply(event, obj)
