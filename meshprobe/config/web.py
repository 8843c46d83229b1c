"""The listener's security settings, in the exporter-toolkit web-config format.

Every Prometheus exporter (node_exporter, blackbox_exporter, ...) reads the same
`--web.config.file` keys, so operators already have these files, hashes and Secret layouts;
meshprobe accepts the same keys, either as the `web` section of its own config or as a separate
file. Keys of that format that meshprobe cannot honour faithfully are refused with a reason, never
ignored: a silently dropped `client_allowed_sans` would be a hole, not a default.

Only shape is checked here; whether the certificate and key files load is `webtls`'s job, at start,
on `meshprobe check` and on every reload.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from meshprobe.config.errors import (
    ConfigError,
    ConfigIssue,
    Loc,
    issues_from_validation_error,
    raise_cross_field,
)
from meshprobe.config.types import NonEmpty
from meshprobe.config.yamlfile import read_yaml_mapping

__all__ = [
    "GO_CIPHER_SUITES",
    "HTTPServerConfig",
    "TLSServerConfig",
    "WebConfig",
    "describe_web",
    "effective_web_config",
    "load_web_config_file",
]

# `$2a$`, `$2b$` or `$2y$`, a two-digit cost, then 22 characters of salt and 31 of hash in
# bcrypt's own base64 alphabet: what `htpasswd -nBC 10` and every bcrypt library write.
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_HASH_HINT = "hash the password with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"

ClientAuthType = Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"]
TLSVersionName = Literal["TLS12", "TLS13"]

# Go's names (what exporter-toolkit takes) for the TLS 1.2 suites Go calls secure, and OpenSSL's
# name for each. TLS 1.3 suites are not configurable, in Go as in OpenSSL's cipher list.
GO_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}

# exporter-toolkit's closed set of extra response headers, with the values it accepts (None: any).
_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

# Keys of the exporter-toolkit format that meshprobe refuses, and why (by their path).
_UNSUPPORTED_TLS = {
    "cert": "inline certificates are not supported: put the PEM in a file and use cert_file",
    "key": "inline keys are not supported: put the PEM in a file and use key_file",
    "client_ca": "inline CAs are not supported: put the PEM in a file and use client_ca_file",
    "client_allowed_sans": "not supported by meshprobe: issue scrape client certificates from "
    "a CA of their own and name it in client_ca_file",
    "curve_preferences": "not supported by meshprobe (OpenSSL's defaults are used)",
}
_UNSUPPORTED_TOP = {
    "rate_limit": "not supported by meshprobe: the listener serves a few scrapers, "
    "put a rate limit in front of it (ingress, mesh policy) if it needs one",
}
_INSECURE_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A key of the format that is refused when present (its validator says why); never set.
_Unsupported = Annotated[object, Field(repr=False, exclude=True)]


def _client_auth(value: object) -> object:
    if value in _INSECURE_CLIENT_AUTH:
        raise ValueError(
            f"{value} accepts a client certificate without verifying it and is not supported: "
            "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file"
        )
    return value


def _tls_version(value: object) -> object:
    if value in ("TLS10", "TLS11"):
        raise ValueError(f"{value} is deprecated (RFC 8996) and not supported: use TLS12 or TLS13")
    return value


class TLSServerConfig(_Frozen):
    cert_file: NonEmpty
    key_file: NonEmpty
    client_auth_type: Annotated[ClientAuthType, BeforeValidator(_client_auth)] = "NoClientCert"
    client_ca_file: NonEmpty | None = None
    min_version: Annotated[TLSVersionName, BeforeValidator(_tls_version)] = "TLS12"
    max_version: Annotated[TLSVersionName, BeforeValidator(_tls_version)] = "TLS13"
    cipher_suites: list[str] = []
    prefer_server_cipher_suites: bool = True

    # exporter-toolkit keys meshprobe refuses; fields only so each is reported with the others.
    cert: _Unsupported = None
    key: _Unsupported = None
    client_ca: _Unsupported = None
    client_allowed_sans: _Unsupported = None
    curve_preferences: _Unsupported = None

    @field_validator(*_UNSUPPORTED_TLS, mode="before")
    @classmethod
    def _unsupported(cls, _: object, info: ValidationInfo) -> None:
        raise ValueError(_UNSUPPORTED_TLS[str(info.field_name)])

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in GO_CIPHER_SUITES]
        if unknown:
            raise ValueError(
                f"unknown or insecure cipher suite {unknown[0]!r} (TLS 1.2 suites by Go's name: "
                f"{', '.join(GO_CIPHER_SUITES)})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        issues: list[tuple[Loc, str]] = []
        verifies = self.client_auth_type != "NoClientCert"
        if verifies and self.client_ca_file is None:
            reason = f"client_auth_type {self.client_auth_type} needs client_ca_file"
            issues.append((("client_ca_file",), reason))
        if not verifies and self.client_ca_file is not None:
            reason = (
                "client_ca_file is set but client_auth_type is NoClientCert: "
                "set client_auth_type to RequireAndVerifyClientCert for mTLS scrapes"
            )
            issues.append((("client_auth_type",), reason))
        if self.min_version > self.max_version:  # "TLS12" < "TLS13" sorts as the versions do
            reason = f"min_version {self.min_version} is above max_version {self.max_version}"
            issues.append((("min_version",), reason))
        if issues:
            raise_cross_field(issues)
        return self

    def relative_to(self, directory: Path) -> TLSServerConfig:
        """Relative file names resolved against `directory`, as exporter-toolkit resolves them
        against the web config file's own directory."""

        def join(name: str | None) -> str | None:
            return None if name is None else str(directory / name)

        return self.model_copy(
            update={
                "cert_file": join(self.cert_file),
                "key_file": join(self.key_file),
                "client_ca_file": join(self.client_ca_file),
            }
        )


class HTTPServerConfig(_Frozen):
    # aiohttp speaks HTTP/1.1 only; Prometheus negotiates it through ALPN either way.
    http2: bool = False
    headers: dict[str, str] = {}

    @field_validator("http2")
    @classmethod
    def _no_http2(cls, value: bool) -> bool:
        if value:
            raise ValueError("meshprobe's listener speaks HTTP/1.1 only: remove http2 or set false")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name not in _HEADERS:
                raise ValueError(
                    f"HTTP header {name!r} cannot be configured (one of {', '.join(_HEADERS)})"
                )
            allowed = _HEADERS[name]
            if allowed is not None and text not in allowed:
                raise ValueError(f"invalid value {text!r} for {name} (expected one of {allowed})")
            if any(c in text for c in "\r\n"):
                raise ValueError(f"the value of {name} contains a line break")
        return value


def _bcrypt_hash(value: object) -> object:
    """The message never repeats the value: it is a password hash, or a password typed in by
    mistake, and `meshprobe check` output ends up in CI logs."""
    if not isinstance(value, str):
        raise ValueError(f"must be a bcrypt hash string, not a {type(value).__name__}")
    match = _BCRYPT.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            "is not a bcrypt hash ($2a$, $2b$ or $2y$, a cost, then 53 characters); " + _HASH_HINT
        )
    if not 4 <= int(match.group(1)) <= 31:
        raise ValueError(f"bcrypt cost {match.group(1)} is out of range (4..31)")
    return value.strip()


def _users(value: object) -> object:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of user name to bcrypt hash, not a {_kind(value)}")
    for user in value:
        if not isinstance(user, str) or not user or ":" in user:
            raise ValueError(f"invalid user name {user!r}: a non-empty string without ':'")
    return value


def _kind(value: object) -> str:
    return "string" if isinstance(value, str) else type(value).__name__


BcryptHash = Annotated[SecretStr, BeforeValidator(_bcrypt_hash)]


class WebConfig(_Frozen):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: Annotated[dict[str, BcryptHash], BeforeValidator(_users)] = {}

    rate_limit: _Unsupported = None

    @field_validator(*_UNSUPPORTED_TOP, mode="before")
    @classmethod
    def _unsupported(cls, _: object, info: ValidationInfo) -> None:
        raise ValueError(_UNSUPPORTED_TOP[str(info.field_name)])

    def is_empty(self) -> bool:
        return self == WebConfig()

    def hashes(self) -> dict[str, bytes]:
        return {user: h.get_secret_value().encode() for user, h in self.basic_auth_users.items()}


def load_web_config_file(path: str | Path) -> WebConfig:
    """`--web.config.file`: the same keys as the `web` section, in a file of their own; relative
    file names inside it are relative to the file, as in exporter-toolkit."""
    path = Path(path)
    data = read_yaml_mapping(path)
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(issues_from_validation_error(exc), str(path)) from None
    tls = config.tls_server_config
    if tls is None:
        return config
    return config.model_copy(update={"tls_server_config": tls.relative_to(path.parent)})


def effective_web_config(section: WebConfig, path: str | Path | None) -> WebConfig:
    """The one web config in force: the file named by `--web.config.file`, else the `web`
    section. Both at once is refused rather than merged, because which key wins would be a
    guess, and a guess about who may scrape is not one to make silently."""
    if path is None:
        return section
    if not section.is_empty():
        reason = (
            "the config has a web section and --web.config.file names another web config: "
            "keep one of them"
        )
        raise ConfigError([ConfigIssue("web", reason)], str(path))
    return load_web_config_file(path)


def describe_web(config: WebConfig) -> str:
    """One line for `meshprobe check` and the startup log; names users, never their hashes."""
    tls = config.tls_server_config
    if tls is None:
        where = "listener: plain HTTP"
    elif tls.client_auth_type == "NoClientCert":
        where = f"listener: TLS {tls.min_version}+"
    else:
        where = f"listener: TLS {tls.min_version}+, client certificates {tls.client_auth_type}"
    users = sorted(config.basic_auth_users)
    auth = f"basic auth for {', '.join(users)}" if users else "no authentication"
    return f"{where}, {auth}"
