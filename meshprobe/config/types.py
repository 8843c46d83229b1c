"""Value types for the config models: durations, sizes, names, addresses and URLs.

Each validator raises ValueError with a message written for the person editing the file, because
`config_errors` shows that message verbatim next to the field path.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Annotated
from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator, BeforeValidator

from meshprobe.config.durations import parse_duration
from meshprobe.config.errors import shown_value
from meshprobe.model import redact_url

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_]([-A-Za-z0-9_]*[A-Za-z0-9])?(\.[A-Za-z0-9_-]+)*\.?"
)
_SIZE = re.compile(r"(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def _positive_duration(value: object) -> float:
    shown = shown_value(value) if isinstance(value, str | int | float) else type(value).__name__
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]  # rejects non-numbers itself
    except OverflowError:  # an integer too large for a float
        raise ValueError(f"invalid duration {shown}: too large") from None
    except ValueError:
        if isinstance(value, int) and value.bit_length() > 64:  # its text would be too long
            raise ValueError(f"invalid duration {shown}: too large") from None
        raise
    if not math.isfinite(seconds):  # "999…9s" sums to infinity
        raise ValueError(f"invalid duration {shown}: too large")
    if seconds <= 0:
        raise ValueError(f"invalid duration {shown}: must be greater than zero")
    return seconds


def parse_byte_size(value: object) -> int:
    """Bytes from `1048576`, `"1MiB"` or `"512KiB"`, so body limits read the way people think."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError(
            f"invalid size {value!r}: expected bytes as an integer or with a unit "
            "B, KB, MB, GB, KiB, MiB, GiB (e.g. 1MiB, 512KiB)"
        )
    if size <= 0:
        raise ValueError(f"invalid size {value!r}: must be greater than zero")
    return size


def _dns_label(noun: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not _DNS_LABEL.fullmatch(value):
            raise ValueError(
                f"invalid {noun} {value!r}: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters"
            )
        return value

    return check


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _label_text(value: str) -> str:
    """A value that becomes a Prometheus label must be valid UTF-8 text: a lone surrogate (YAML
    and JSON can spell one) cannot be encoded at all, and control characters make unreadable
    series."""
    _non_empty(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"is not valid UTF-8 text (character {exc.start}: {value[exc.start]!r}); "
            "it becomes a Prometheus label value"
        ) from None
    bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"contains the control character {bad!r}; it becomes a label value")
    return value


def _trust_domain(value: str) -> str:
    if any(c in value for c in "/: \t"):
        raise ValueError(f"invalid trust domain {value!r}: a bare name like cluster.local")
    return value


def _http_status(value: int) -> int:
    if not 100 <= value <= 599:
        raise ValueError(f"HTTP status {shown_value(value)} is out of range (expected 100..599)")
    return value


Duration = Annotated[float, BeforeValidator(_positive_duration)]
ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
ClusterName = Annotated[str, AfterValidator(_dns_label("cluster name"))]
Namespace = Annotated[str, AfterValidator(_dns_label("namespace"))]
NonEmpty = Annotated[str, AfterValidator(_non_empty)]
LabelText = Annotated[str, AfterValidator(_label_text)]
TrustDomain = Annotated[str, AfterValidator(_non_empty), AfterValidator(_trust_domain)]
HttpStatus = Annotated[int, AfterValidator(_http_status)]


def split_host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; brackets are required for IPv6 so the port is unambiguous."""
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid listen address {text!r}: expected [ipv6]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {text!r}: {host!r} is not IPv6") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(
                f"invalid listen address {text!r}: expected host:port, e.g. 0.0.0.0:9942"
            )
        if ":" in host:
            raise ValueError(f"invalid listen address {text!r}: write IPv6 hosts as [::]:9942")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"invalid listen address {text!r}: bad host {host!r}")
    # Port 0 asks the kernel for a free port (tests, the demo); the bound port is logged.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: port must be 0..65535")
    return host, int(port_text)


def split_url(text: str, allowed: tuple[str, ...]) -> SplitResult:
    """Parse a target or peer URL; errors show it with its userinfo redacted (a password in a
    URL must not reach CI logs through `meshprobe check`)."""
    shown = redact_url(text)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"invalid URL {shown!r}: contains a control character (CR, LF, ...)")
    parts = urlsplit(text.strip())
    if parts.scheme not in allowed:
        scheme = parts.scheme or "(none)"
        raise ValueError(f"unknown scheme {scheme!r} (expected one of {', '.join(allowed)})")
    if not parts.hostname:
        raise ValueError(f"invalid URL {shown!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid URL {shown!r}: bad port") from None
    if port == 0:
        raise ValueError(f"invalid URL {shown!r}: port 0 cannot be connected to")
    return parts
