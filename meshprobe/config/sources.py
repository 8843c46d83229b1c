"""Where settings values come from during one load: the parsed file and a given environment.

The file path and environment are only known at call time, but pydantic-settings asks the class
for its sources; a context variable set for the duration of one load bridges the two without a
module-level global that outlives the call or leaks between concurrent loads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

CONFIG_ENV = "MESHPROBE_CONFIG"


@dataclass(frozen=True, slots=True)
class LoadSources:
    file_data: Mapping[str, Any]
    environ: Mapping[str, str]


# Set only for the duration of one `load_settings` call (reset in a finally), so concurrent loads
# in other tasks or threads never see each other's file or environment.
LOADING: ContextVar[LoadSources | None] = ContextVar("meshprobe_config_loading", default=None)


class MappingSource(PydanticBaseSettingsSource):
    """The parsed YAML file, passed through untouched so unknown keys reach `extra=forbid`."""

    def __init__(self, settings_cls: type[BaseSettings], data: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = dict(data)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class EnvironSource(EnvSettingsSource):
    """The environment source over a given mapping, so tests and reloads need no os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # CONFIG_ENV names the file, it is not a setting; with case-insensitive names every
        # other variable lower-cases like pydantic-settings' own reader.
        return {
            key.lower(): value for key, value in self._environ.items() if key.upper() != CONFIG_ENV
        }


@contextmanager
def loading(sources: LoadSources) -> Iterator[None]:
    token = LOADING.set(sources)
    try:
        yield
    finally:
        LOADING.reset(token)
