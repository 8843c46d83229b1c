"""Reading the YAML config file into a plain mapping, with errors that point at a line.

Duplicate keys are rejected here: PyYAML silently keeps the last one, which would hide exactly the
kind of edit mistake strict validation is meant to catch.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from meshprobe.config.errors import ConfigError, ConfigIssue

FILE_PATH = "<file>"


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The file's top-level mapping; an empty file is an empty mapping (env may supply all)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(path, f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise _error(path, f"config file {path} is not UTF-8: {exc.reason}") from None
    except OSError as exc:
        raise _error(path, f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise _error(path, f"invalid YAML in {path}{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise _error(path, f"invalid YAML in {path}: {exc}") from None
    except RecursionError:
        raise _error(path, f"invalid YAML in {path}: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        # A constructor choking on a scalar: `!!float x`, an integer of 5000 digits, ...
        raise _error(path, f"invalid YAML in {path}: a value cannot be read: {exc}") from None
    if too_much := _expansion_problem(data):
        raise _error(path, f"invalid YAML in {path}: {too_much}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise _error(path, f"top level of {path} must be a mapping of settings, got a {kind}")
    return data


def _expansion_problem(data: Any) -> str | None:
    """Aliases let a few lines stand for billions of values (and validating those would hang
    `check` and `run`), or for a value that contains itself; refuse both before validation."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, dict | list):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _SelfReference
        open_nodes.add(key)
        total = 1
        for child in node.values() if isinstance(node, dict) else node:
            total += size(child)
            if total > MAX_VALUES:
                raise _TooLarge
        open_nodes.discard(key)
        sizes[key] = total
        return total

    try:
        size(data)
    except _SelfReference:
        return "an alias refers to a value that contains it"
    except _TooLarge:
        return f"the document expands to more than {MAX_VALUES} values (through aliases?)"
    except RecursionError:
        return "nested too deeply"
    return None


MAX_VALUES = 100_000  # a config with a thousand targets is a few thousand values


class _SelfReference(Exception):
    pass


class _TooLarge(Exception):
    pass


def _error(path: Path, reason: str) -> ConfigError:
    return ConfigError([ConfigIssue(FILE_PATH, reason)], str(path))
