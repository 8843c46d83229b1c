"""Configuration problems as `path: reason` lines a human can act on.

Kept apart from the models so pydantic's wording is translated to ours in one place, and so the
CLI (`meshprobe check`) and the reloader can depend on these types alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

# pydantic-core error type used for checks that span several fields; its context carries the
# individual issues with paths relative to where the error was raised.
CROSS_FIELD_ERROR = "meshprobe_cross_field"

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: `path` is dotted (`targets.1.url`) or `<file>`/`<env>` for source problems."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class ConfigError(Exception):
    """Every problem found in one load, so a user fixes a file in one pass instead of many."""

    def __init__(self, errors: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.errors: list[ConfigIssue] = list(errors)
        self.source = source
        super().__init__(format_issues(self.errors))


def format_issues(issues: Iterable[ConfigIssue]) -> str:
    return "\n".join(str(issue) for issue in issues)


def raise_cross_field(issues: Sequence[tuple[Loc, str]]) -> NoReturn:
    """Raise from a validator so each issue keeps its own field path.

    A plain ValueError in a model validator would land on the model's path with every problem
    glued into one message; the structured context lets `issues_from_validation_error` split them.
    """
    detail = "; ".join(f"{_dotted(loc) or '<root>'}: {reason}" for loc, reason in issues)
    raise PydanticCustomError(
        CROSS_FIELD_ERROR, "{detail}", {"detail": detail, "issues": tuple(issues)}
    )


def issues_from_validation_error(exc: ValidationError) -> list[ConfigIssue]:
    out: list[ConfigIssue] = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        ctx: dict[str, Any] = dict(err.get("ctx") or {})
        if err["type"] == CROSS_FIELD_ERROR:
            for rel, reason in ctx["issues"]:
                out.append(ConfigIssue(_dotted(loc + tuple(rel)) or "<root>", reason))
            continue
        out.append(ConfigIssue(_dotted(loc) or "<root>", _reason(err["type"], err, ctx)))
    return out


def _reason(kind: str, err: Any, ctx: dict[str, Any]) -> str:
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return (
            f"invalid value {_shown_input(err.get('input'))} (expected {ctx.get('expected', '?')})"
        )
    msg = str(err["msg"])
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        return f"{msg}, got {shown_value(value)}"
    return f"{msg}, got a {type(value).__name__}"


def _shown_input(value: object) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return shown_value(value)
    return f"a {type(value).__name__}"


def shown_value(value: str | float | bool | None) -> str:
    """A scalar as an error may quote it: escaped (lone surrogates and control characters cannot
    reach a terminal raw) and short (a pasted certificate or a 5000-digit number is not echoed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    text = repr(value)  # escapes what is not printable, lone surrogates included
    return text if len(text) <= _MAX_SHOWN else f"{text[: _MAX_SHOWN - 4]}...{text[-1]}"


_MAX_SHOWN = 80
# Path parts shown as written; anything else (a key with spaces, dots, a line break, a lone
# surrogate, nothing at all) is quoted and escaped, so a path is one unambiguous printable line.
_PLAIN_PART = re.compile(r"[A-Za-z0-9_\-/:@+*\[\]]+")


def _dotted(loc: Loc) -> str:
    return ".".join(_part(part) for part in loc)


def key_issues(data: Any) -> list[ConfigIssue]:
    """Top-level keys that cannot be setting names: not text (YAML allows `1:`, `null:`,
    `true:`) or not encodable (a lone surrogate). pydantic-settings passes the mapping on as
    keyword arguments and would fail on them without a field path; they are unknown keys."""
    if not isinstance(data, Mapping):
        return []
    return [ConfigIssue(_part(key), "unknown key") for key in data if not _name_like(key)]


def _name_like(key: object) -> bool:
    if not isinstance(key, str):
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _part(part: object) -> str:
    text = str(part)
    if isinstance(part, int) or _PLAIN_PART.fullmatch(text):
        return text
    return shown_value(text)
