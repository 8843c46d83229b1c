"""Configuration problems as `path: reason` lines a human can act on.

Kept apart from the models so pydantic's wording is translated to ours in one place, and so the
CLI (`meshprobe check`) and the reloader can depend on these types alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        return f"invalid value {err['input']!r} (expected {ctx.get('expected', '?')})"
    msg = str(err["msg"])
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        return f"{msg}, got {value!r}"
    return f"{msg}, got a {type(value).__name__}"


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)
