"""The `web` section and `--web.config.file`: exporter-toolkit's keys, strict, with field paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshprobe.config.settings import ConfigError, load_settings_from_mapping
from meshprobe.config.web import (
    WebConfig,
    describe_web,
    effective_web_config,
    load_web_config_file,
)

# bcrypt("secret", cost 4): a real hash in the format htpasswd -nBC writes ($2y$).
HASH = "$2y$04$0i89ccnfMrnMpUcgL7xWReHExIzMOohVPA29WOxhnoRSA6V2QRuZy"
TLS = {"cert_file": "/tls/tls.crt", "key_file": "/tls/tls.key"}


def issues(web: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings_from_mapping({"cluster": "c1", "web": web})
    return {issue.path: issue.reason for issue in info.value.errors}


def test_defaults_are_plain_http_without_auth() -> None:
    web = load_settings_from_mapping({"cluster": "c1"}).web
    assert web.is_empty()
    assert web.tls_server_config is None and web.basic_auth_users == {}
    assert describe_web(web) == "listener: plain HTTP, no authentication"


def test_full_section_loads() -> None:
    web = load_settings_from_mapping(
        {
            "cluster": "c1",
            "web": {
                "tls_server_config": {
                    **TLS,
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "/tls/ca.crt",
                    "min_version": "TLS13",
                    "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
                },
                "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
                "basic_auth_users": {"prometheus": HASH},
            },
        }
    ).web
    assert web.tls_server_config is not None
    assert web.tls_server_config.client_auth_type == "RequireAndVerifyClientCert"
    assert web.hashes() == {"prometheus": HASH.encode()}
    assert describe_web(web) == (
        "listener: TLS TLS13+, client certificates RequireAndVerifyClientCert, "
        "basic auth for prometheus"
    )


def test_hashes_never_show_in_repr_or_errors() -> None:
    web = WebConfig.model_validate({"basic_auth_users": {"prometheus": HASH}})
    assert HASH not in repr(web) and HASH not in str(web)
    # A password pasted where the hash belongs is refused without being repeated.
    found = issues({"basic_auth_users": {"prometheus": "hunter2-plaintext"}})
    assert "is not a bcrypt hash" in found["web.basic_auth_users.prometheus"]
    assert "hunter2" not in " ".join(found.values())
    found = issues({"basic_auth_users": "prometheus:hunter2"})
    assert "mapping of user name to bcrypt hash" in found["web.basic_auth_users"]
    assert "hunter2" not in " ".join(found.values())


@pytest.mark.parametrize(
    ("web", "path", "fragment"),
    [
        ({"tls_server_config": {"cert_file": "/c"}}, "web.tls_server_config.key_file", "required"),
        ({"tls_server_config": {**TLS, "colour": 1}}, "web.tls_server_config.colour", "unknown"),
        ({"tls": TLS}, "web.tls", "unknown key"),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "RequireAndVerifyClientCert"}},
            "web.tls_server_config.client_ca_file",
            "needs client_ca_file",
        ),
        (
            {"tls_server_config": {**TLS, "client_ca_file": "/ca"}},
            "web.tls_server_config.client_auth_type",
            "NoClientCert",
        ),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "RequireAnyClientCert"}},
            "web.tls_server_config.client_auth_type",
            "without verifying",
        ),
        (
            {"tls_server_config": {**TLS, "client_auth_type": "Sometimes"}},
            "web.tls_server_config.client_auth_type",
            "RequireAndVerifyClientCert",
        ),
        (
            {"tls_server_config": {**TLS, "min_version": "TLS10"}},
            "web.tls_server_config.min_version",
            "RFC 8996",
        ),
        (
            {"tls_server_config": {**TLS, "min_version": "TLS13", "max_version": "TLS12"}},
            "web.tls_server_config.min_version",
            "above max_version",
        ),
        (
            {"tls_server_config": {**TLS, "cipher_suites": ["TLS_RSA_WITH_RC4_128_SHA"]}},
            "web.tls_server_config.cipher_suites",
            "TLS_RSA_WITH_RC4_128_SHA",
        ),
        (
            {"tls_server_config": {**TLS, "client_allowed_sans": ["prometheus"]}},
            "web.tls_server_config.client_allowed_sans",
            "not supported",
        ),
        (
            {"tls_server_config": {**TLS, "cert": "-----BEGIN"}},
            "web.tls_server_config.cert",
            "cert_file",
        ),
        ({"rate_limit": {"interval": "1s", "burst": 5}}, "web.rate_limit", "not supported"),
        ({"http_server_config": {"http2": True}}, "web.http_server_config.http2", "HTTP/1.1"),
        (
            {"http_server_config": {"headers": {"Server": "x"}}},
            "web.http_server_config.headers",
            "cannot be configured",
        ),
        (
            {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
            "web.http_server_config.headers",
            "expected one of",
        ),
        ({"basic_auth_users": {"a:b": HASH}}, "web.basic_auth_users", "without ':'"),
        (
            {"basic_auth_users": {"p": HASH.replace("$04$", "$99$")}},
            "web.basic_auth_users.p",
            "out of range",
        ),
    ],
)
def test_field_errors(web: object, path: str, fragment: str) -> None:
    found = issues(web)
    assert path in found, found
    assert fragment in found[path]


def test_environment_sets_the_section() -> None:
    settings = load_settings_from_mapping(
        {"cluster": "c1"},
        environ={"MESHPROBE_WEB__BASIC_AUTH_USERS": f'{{"prometheus": "{HASH}"}}'},
    )
    assert list(settings.web.basic_auth_users) == ["prometheus"]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_web_config_file_resolves_relative_names_against_its_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path / "web.yml",
        f"""
        tls_server_config:
          cert_file: tls/tls.crt
          key_file: /abs/tls.key
        basic_auth_users:
          prometheus: {HASH}
        """,
    )
    web = load_web_config_file(path)
    assert web.tls_server_config is not None
    assert web.tls_server_config.cert_file == str(tmp_path / "tls" / "tls.crt")
    assert web.tls_server_config.key_file == "/abs/tls.key"


def test_web_config_file_errors_name_the_file_and_top_level_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "tls_server_config: {cert_file: a}\nusers: {}\n")
    with pytest.raises(ConfigError) as info:
        load_web_config_file(path)
    assert info.value.source == str(path)
    paths = {issue.path for issue in info.value.errors}
    assert paths == {"tls_server_config.key_file", "users"}


def test_flag_and_section_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", "basic_auth_users: {}\n")
    section = WebConfig.model_validate({"basic_auth_users": {"prometheus": HASH}})
    with pytest.raises(ConfigError) as info:
        effective_web_config(section, path)
    assert [issue.path for issue in info.value.errors] == ["web"]
    assert "keep one of them" in info.value.errors[0].reason
    # Either one alone is the config in force.
    assert effective_web_config(section, None) is section
    assert effective_web_config(WebConfig(), path).is_empty()


def test_every_problem_is_reported_in_one_pass() -> None:
    found = issues(
        {
            "tls_server_config": {**TLS, "cert": "inline", "client_auth_type": "RequestClientCert"},
            "basic_auth_users": {"prometheus": "plaintext"},
            "rate_limit": {"burst": 1},
        }
    )
    assert set(found) == {
        "web.tls_server_config.cert",
        "web.tls_server_config.client_auth_type",
        "web.basic_auth_users.prometheus",
        "web.rate_limit",
    }
