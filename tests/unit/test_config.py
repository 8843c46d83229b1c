from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshprobe.config.settings import (
    ConfigError,
    ConfigIssue,
    Settings,
    budget_warnings,
    format_issues,
    load_settings,
    load_settings_from_mapping,
    parse_byte_size,
    summarize,
)
from meshprobe.model import DURATION_BUCKETS, MetricOptions, Scope, TLSOptions

EXAMPLE = """
cluster: cluster1
listen: "0.0.0.0:9942"
defaults:
  interval: 10s
  timeout: 2s
  budget: {local: 50ms, remote: 150ms}
trust:
  bundle_file: /etc/meshprobe/trust/ca-bundle.crt
  trust_domain: cluster.local
targets:
  - name: production/api-server
    url: https://api-server.production.svc.cluster.local:8443/healthz
    cluster: cluster1
    budget: 30ms
    tls: {identity: "spiffe://cluster.local/ns/production/sa/api-server"}
  - name: production/api-server
    url: http://api-server-cluster2.production.svc.cluster.local/healthz?full=1
    cluster: cluster2
  - name: gateway/cluster2
    url: tls://gateway.cluster2.example:15443
    cluster: cluster2
peers:
  - {cluster: cluster2, url: "http://meshprobe-cluster2.meshprobe.svc.cluster.local:9942"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "meshprobe.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues_of(path: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ or {})
    return {issue.path: issue.reason for issue in info.value.errors}


def test_example_from_design_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE), environ={})
    assert settings.cluster == "cluster1"
    assert settings.defaults.interval == 10.0
    assert settings.defaults.budget.local == pytest.approx(0.05)
    assert settings.trust.bundle_file == "/etc/meshprobe/trust/ca-bundle.crt"
    assert settings.listen_host_port() == ("0.0.0.0", 9942)
    assert [p.cluster for p in settings.peers] == ["cluster2"]


def test_build_targets(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE), environ={})
    https, http, tls = settings.build_targets()

    assert (https.scheme, https.host, https.port, https.path) == (
        "https",
        "api-server.production.svc.cluster.local",
        8443,
        "/healthz",
    )
    assert https.scope is Scope.LOCAL
    assert https.budget == pytest.approx(0.030)  # per-target override
    assert https.tls == TLSOptions(identity="spiffe://cluster.local/ns/production/sa/api-server")
    assert (https.interval, https.timeout) == (10.0, 2.0)

    assert http.port == 80
    assert http.path == "/healthz?full=1"
    assert http.scope is Scope.REMOTE
    assert http.budget == pytest.approx(0.150)  # the remote default

    assert (tls.port, tls.path, tls.scope, tls.discovery) == (15443, "/", Scope.REMOTE, "static")
    assert tls.body_limit == 1024 * 1024


def test_build_targets_defaults_cluster_ports_and_sorted_headers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        defaults: {budget: {local: 20ms}, body_limit: 512KiB}
        targets:
          - name: a
            url: https://a.example
            headers: {X-B: "2", X-A: "1"}
            expected_status: [200, 204, 200]
            method: post
          - name: b
            url: http://b.example
            body_limit: 2048
        """,
    )
    a, b = load_settings(path, environ={}).build_targets()
    assert (a.cluster, a.scope, a.port, a.path) == ("c1", Scope.LOCAL, 443, "/")
    assert a.budget == pytest.approx(0.020)
    assert a.headers == (("X-A", "1"), ("X-B", "2"))
    assert a.expected_status == frozenset({200, 204})
    assert a.method == "POST"
    assert a.body_limit == 512 * 1024
    assert (b.port, b.body_limit) == (80, 2048)


def test_missing_cluster_is_reported_as_required(tmp_path: Path) -> None:
    assert issues_of(write(tmp_path, "listen: '0.0.0.0:1'\n")) == {"cluster": "required"}


def test_bad_duration_names_the_field_and_the_syntax(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\ndefaults: {interval: 10 parsecs}\n"))
    reason = issues["defaults.interval"]
    assert reason.startswith("invalid duration '10 parsecs': ")
    assert "250ms" in reason


def test_zero_duration_is_rejected(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\ndefaults: {timeout: 0s}\n"))
    assert "greater than zero" in issues["defaults.timeout"]


def test_unknown_keys_top_level_and_nested(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        colour: red
        targets:
          - {name: a, url: "http://a"}
          - {name: b, url: "http://b", colour: blue}
        """,
    )
    assert issues_of(path) == {"colour": "unknown key", "targets.1.colour": "unknown key"}


def test_unknown_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: c1\ntargets: [{name: a, url: 'ftp://a/x'}]\n")
    assert issues_of(path) == {
        "targets.0.url": "unknown scheme 'ftp' (expected one of http, https, tcp, tls, grpc, grpcs)"
    }


@pytest.mark.parametrize(
    ("target", "path", "fragment"),
    [
        ("{name: a, url: 'tcp://a'}", "targets.0.url", "explicit port"),
        ("{name: a, url: 'tls://a:443/x'}", "targets.0.url", "no path"),
        ("{name: a, url: 'http://:80/'}", "targets.0.url", "no host"),
        ("{name: a, url: 'http://a:99999/'}", "targets.0.url", "bad port"),
        ("{name: '', url: 'http://a'}", "targets.0.name", "must not be empty"),
        (
            "{name: a, url: 'http://a', tls: {identity: x}}",
            "targets.0.tls",
            "https://, tls:// or grpcs://",
        ),
        ("{name: a, url: 'tcp://a:1', tls: {}}", "targets.0.tls", "not tcp://"),
        ("{name: a, url: 'http://a', body_regex: '(['}", "targets.0.body_regex", "unterminated"),
        (
            "{name: a, url: 'http://a', expected_status: [600]}",
            "targets.0.expected_status.0",
            "600",
        ),
        ("{name: a, url: 'http://a', cluster: Bad_Name}", "targets.0.cluster", "lowercase"),
        ("{name: a, url: 'http://a', body_limit: 1PiB}", "targets.0.body_limit", "invalid size"),
        ("{name: a, url: 'http://a', method: 'GE T'}", "targets.0.method", "invalid HTTP method"),
        # Names become label values: a lone surrogate could never be exported, nor should a
        # control character be.
        ('{name: "a\\ud800", url: "http://a"}', "targets.0.name", "not valid UTF-8"),
        ('{name: "a\\x07b", url: "http://a"}', "targets.0.name", "control character"),
        ('{name: a, url: "http://a/x\\r\\nHost: b"}', "targets.0.url", "control character"),
        ("{name: a, url: 'http://a:0/'}", "targets.0.url", "port 0"),
        ("{name: a, url: 'tcp://a:0'}", "targets.0.url", "port 0"),
        (
            "{name: a, url: 'https://a', tls: {cert_file: /c.pem}}",
            "targets.0.tls.key_file",
            "cert_file and key_file go together",
        ),
        (
            "{name: a, url: 'tls://a:1', tls: {key_file: /k.pem}}",
            "targets.0.tls.cert_file",
            "go together",
        ),
        ("{name: a, url: 'https://a', tls: {alpn: []}}", "targets.0.tls.alpn", "at least one"),
        ("{name: a, url: 'grpc://a'}", "targets.0.url", "explicit port"),
        ("{name: a, url: 'grpc://a:1/x'}", "targets.0.url", "no path"),
        ("{name: a, url: 'http://a', grpc: {service: x}}", "targets.0.grpc", "grpc:// or grpcs://"),
        ("{name: a, url: 'grpc://a:1', tls: {}}", "targets.0.tls", "not grpc://"),
        (
            "{name: a, url: 'grpc://a:1', grpc: {metadata: {Bad: x}}}",
            "targets.0.grpc.metadata",
            "lowercase",
        ),
        (
            "{name: a, url: 'grpc://a:1', grpc: {metadata: {grpc-timeout: 1S}}}",
            "targets.0.grpc.metadata",
            "reserved",
        ),
        ("{name: a, url: 'https://a', tls: {alpn: ['']}}", "targets.0.tls.alpn", "ALPN"),
    ],
)
def test_target_field_errors(tmp_path: Path, target: str, path: str, fragment: str) -> None:
    issues = issues_of(write(tmp_path, f"cluster: c1\ntargets: [{target}]\n"))
    assert list(issues) == [path]
    assert fragment in issues[path]


def test_defaults_client_certificate_goes_to_https_and_tls_targets_only(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        defaults:
          tls: {cert_file: /certs/cert-chain.pem, key_file: /certs/key.pem}
        targets:
          - {name: a, url: "https://a"}
          - {name: b, url: "tls://b:443", tls: {alpn: [h2], identity: spiffe://td/ns/b/sa/b}}
          - {name: c, url: "http://c"}
          - {name: d, url: "https://d", tls: {cert_file: /own/c.pem, key_file: /own/k.pem}}
        """,
    )
    a, b, c, d = load_settings(path, environ={}).build_targets()
    default = ("/certs/cert-chain.pem", "/certs/key.pem")
    assert a.tls.client_pair == default and a.tls.alpn is None
    assert b.tls.client_pair == default and b.tls.alpn == ("h2",)
    assert c.tls.client_pair is None  # plain http goes through the sidecar, not as a client
    assert d.tls.client_pair == ("/own/c.pem", "/own/k.pem")


def test_grpc_targets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        defaults:
          tls: {cert_file: /c.pem, key_file: /k.pem}
        targets:
          - {name: a, url: "grpc://a:50051", grpc: {service: mesh.Echo, metadata: {x-tenant: t}}}
          - {name: b, url: "grpcs://b:443", tls: {identity: spiffe://td/ns/b/sa/b}}
        """,
    )
    a, b = load_settings(path, environ={}).build_targets()
    assert (a.kind.value, a.port, a.grpc_service, a.headers) == (
        "grpc",
        50051,
        "mesh.Echo",
        (("x-tenant", "t"),),
    )
    assert a.tls.client_pair is None  # plaintext h2c presents no certificate
    assert (b.kind.value, b.grpc_service, b.uses_tls) == ("grpc", "", True)
    assert b.tls.client_pair == ("/c.pem", "/k.pem")


def test_defaults_client_certificate_needs_both_files(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\ndefaults: {tls: {cert_file: /c.pem}}\n"))
    assert "go together" in issues["defaults.tls.key_file"]


def test_tls_options_allowed_on_https_and_tls(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        targets:
          - {name: a, url: "https://a", tls: {insecure_skip_verify: true, server_name: s}}
          - {name: b, url: "tls://b:443", tls: {ca_file: /ca.pem}}
        """,
    )
    a, b = load_settings(path, environ={}).build_targets()
    assert a.tls == TLSOptions(server_name="s", insecure_skip_verify=True)
    assert b.tls.ca_file == "/ca.pem"


def test_many_errors_are_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        log_level: verbose
        concurrency: 0
        listen: "[::]:99999"
        defaults: {interval: soon}
        targets:
          - {name: a, url: "ftp://a"}
          - {url: "http://b"}
        """,
    )
    issues = issues_of(path)
    assert set(issues) == {
        "cluster",
        "log_level",
        "concurrency",
        "listen",
        "defaults.interval",
        "targets.0.url",
        "targets.1.name",
    }
    assert "debug" in issues["log_level"]
    assert "port must be 0..65535" in issues["listen"]


def test_timeout_longer_than_interval(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\ndefaults: {interval: 1s, timeout: 2s}\n"))
    assert issues == {
        "defaults.timeout": "timeout 2s is longer than the interval 1s; "
        "a probe must finish before the next one starts"
    }


def test_target_interval_shorter_than_default_timeout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        targets:
          - {name: a, url: "http://a", interval: 1s}
          - {name: b, url: "http://b", interval: 5s, timeout: 6s}
        """,
    )
    issues = issues_of(path)
    assert set(issues) == {"targets.0.interval", "targets.1.timeout"}
    assert "timeout from defaults" in issues["targets.0.interval"]


def test_duplicate_target_same_kind(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        targets:
          - {name: api, url: "http://api"}
          - {name: api, url: "https://api:8443", cluster: c1}
          - {name: api, url: "tcp://api:80"}
          - {name: api, url: "http://api-c2", cluster: c2}
        """,
    )
    issues = issues_of(path)
    assert list(issues) == ["targets.1"]  # http and https are one kind; tcp and c2 differ
    assert "already defined at targets.0" in issues["targets.1"]


def test_peer_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        peers:
          - {cluster: c1, url: "http://self"}
          - {cluster: c2, url: "http://c2"}
          - {cluster: c2, url: "http://c2-again"}
          - {cluster: c3, url: "tcp://c3:1"}
        """,
    )
    issues = issues_of(path)
    assert set(issues) == {"peers.3.url"}  # field errors come first; cross checks need valid fields
    del_bad = path.read_text().replace('url: "tcp://c3:1"', 'url: "https://c3"')
    path.write_text(del_bad)
    issues = issues_of(path)
    assert set(issues) == {"peers.0.cluster", "peers.2.cluster"}
    assert "own cluster" in issues["peers.0.cluster"]
    assert "already at peers.1" in issues["peers.2.cluster"]


def test_grpc_echo_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        cluster: c1
        grpc_listen: "not an address"
        peers:
          - {cluster: c2, url: "http://c2", grpc_url: "http://c2:9943"}
          - {cluster: c3, url: "http://c3", grpc_url: "grpc://c3"}
          - {cluster: c4, url: "http://c4", grpc_url: "grpcs://c4:9943"}
        """,
    )
    issues = issues_of(path)
    assert set(issues) == {"grpc_listen", "peers.0.grpc_url", "peers.1.grpc_url"}
    assert "unknown scheme 'http'" in issues["peers.0.grpc_url"]
    assert "grpc://host:port" in issues["peers.1.grpc_url"]
    good = path.read_text().replace('"not an address"', '"0.0.0.0:9943"')
    path.write_text(
        good.replace("http://c2:9943", "grpc://c2:9943").replace("grpc://c3", "grpc://c3:1")
    )
    settings = load_settings(path, environ={})
    assert settings.grpc_listen == "0.0.0.0:9943"
    assert [p.grpc_url for p in settings.peers] == [
        "grpc://c2:9943",
        "grpc://c3:1",
        "grpcs://c4:9943",
    ]


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: c1\nlog_level: info\n")
    settings = load_settings(
        path, environ={"MESHPROBE_LOG_LEVEL": "debug", "MESHPROBE_CLUSTER": "c9"}
    )
    assert (settings.cluster, settings.log_level) == ("c9", "debug")


def test_nested_env_merges_with_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: c1\ndefaults: {timeout: 1s, budget: {local: 10ms}}\n")
    settings = load_settings(
        path,
        environ={
            "MESHPROBE_DEFAULTS__INTERVAL": "5s",
            "MESHPROBE_DEFAULTS__BUDGET__REMOTE": "300ms",
            "meshprobe_trust__trust_domain": "example.org",
        },
    )
    defaults = settings.defaults
    assert (defaults.interval, defaults.timeout) == (5.0, 1.0)
    assert defaults.budget.local == pytest.approx(0.01)
    assert defaults.budget.remote == pytest.approx(0.3)
    assert settings.trust.trust_domain == "example.org"


def test_env_errors_carry_field_paths(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\n"), {"MESHPROBE_DEFAULTS__TIMEOUT": "x"})
    assert issues["defaults.timeout"].startswith("invalid duration 'x'")


def test_env_json_that_does_not_parse(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\n"), {"MESHPROBE_TARGETS": "nope"})
    assert issues == {"<env>": "MESHPROBE_TARGETS is not valid JSON for a list or mapping value"}


def test_config_path_from_env_and_not_a_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: from-file\n")
    settings = load_settings(None, environ={"MESHPROBE_CONFIG": str(path)})
    assert settings.cluster == "from-file"


def test_environment_alone(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"MESHPROBE_CLUSTER": "c1", "HOME": str(tmp_path)})
    assert settings.cluster == "c1"
    assert settings.targets == []


def test_loading_leaves_no_state_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_settings(write(tmp_path, "cluster: c1\nlog_level: debug\n"), environ={})
    monkeypatch.setenv("MESHPROBE_CLUSTER", "direct")
    direct = Settings()  # type: ignore[call-arg]
    assert (direct.cluster, direct.log_level) == ("direct", "info")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cluster: c1\ntargets: [\n", "invalid YAML"),
        ("cluster: c1\ncluster: c2\n", "duplicate key 'cluster'"),
        ("- a\n- b\n", "must be a mapping of settings, got a list"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, fragment: str) -> None:
    issues = issues_of(write(tmp_path, text))
    assert list(issues) == ["<file>"]
    assert fragment in issues["<file>"]


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    issues = issues_of(write(tmp_path, "cluster: c1\ndefaults:\n  interval: [5s\n"))
    assert "line 4, column 1" in issues["<file>"]


def test_missing_file(tmp_path: Path) -> None:
    issues = issues_of(tmp_path / "absent.yaml")
    assert issues == {"<file>": f"config file not found: {tmp_path / 'absent.yaml'}"}


def test_empty_file_needs_cluster_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert issues_of(path) == {"cluster": "required"}
    assert load_settings(path, environ={"MESHPROBE_CLUSTER": "c1"}).cluster == "c1"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("0.0.0.0:9942", ("0.0.0.0", 9942)), ("[::]:9942", ("::", 9942)), ("host:1", ("host", 1))],
)
def test_listen_host_port(listen: str, expected: tuple[str, int]) -> None:
    assert Settings(cluster="c1", listen=listen).listen_host_port() == expected


@pytest.mark.parametrize("listen", ["9942", ":9942", "::1:9942", "[::1]9942", "[zz]:1", "a:b"])
def test_listen_rejects(tmp_path: Path, listen: str) -> None:
    issues = issues_of(write(tmp_path, f"cluster: c1\nlisten: '{listen}'\n"))
    assert issues["listen"].startswith(f"invalid listen address '{listen}'")


def test_byte_sizes() -> None:
    assert parse_byte_size("1MiB") == 1024 * 1024
    assert parse_byte_size("512KiB") == 512 * 1024
    assert parse_byte_size("1kb") == 1000
    assert parse_byte_size(4096) == 4096
    for bad in ("0", "-1KiB", "lots", True):
        with pytest.raises(ValueError, match="invalid size"):
            parse_byte_size(bad)


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE), environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.cluster = "other"
    with pytest.raises(ValueError, match="frozen"):
        settings.defaults.interval = 1.0


def test_format_issues_and_error_text() -> None:
    issues = [ConfigIssue("cluster", "required"), ConfigIssue("targets.0.url", "bad")]
    assert format_issues(issues) == "cluster: required\ntargets.0.url: bad"
    assert str(ConfigError(issues)) == "cluster: required\ntargets.0.url: bad"


def test_summarize(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, EXAMPLE), environ={})
    assert summarize(settings) == (
        "config OK: cluster cluster1, listen 0.0.0.0:9942, 3 targets (1 local, 2 remote), "
        "1 peer, trust bundle /etc/meshprobe/trust/ca-bundle.crt (domain cluster.local)"
    )
    bare = Settings(cluster="c1", targets=[{"name": "a", "url": "http://a"}])  # type: ignore[list-item]
    assert "1 target (1 local, 0 remote), 0 peers, no trust bundle" in summarize(bare)


def test_load_from_mapping_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROBE_CLUSTER", "from-env")
    data = {"cluster": "cli", "targets": [{"name": "a", "url": "tcp://a:1"}]}
    settings = load_settings_from_mapping(data)
    assert settings.cluster == "cli"
    assert settings.build_targets()[0].port == 1
    with pytest.raises(ConfigError) as info:
        load_settings_from_mapping({"cluster": "cli", "Targets": []})
    assert info.value.errors == [ConfigIssue("Targets", "unknown key")]


def test_trust_domain_aliases(tmp_path: Path) -> None:
    text = """
        cluster: c1
        trust:
          trust_domain: cluster.local
          trust_domain_aliases: [old-mesh.example, Other.Example]
    """
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.trust.trust_domain_aliases == ["old-mesh.example", "Other.Example"]
    assert settings.trust.accepted_aliases() == frozenset({"old-mesh.example", "other.example"})
    assert summarize(settings).endswith(
        "(domain cluster.local, aliases old-mesh.example, Other.Example)"
    )
    assert load_settings(write(tmp_path, "cluster: c1\n"), environ={}).trust.accepted_aliases() == (
        frozenset()
    )


def test_trust_domain_aliases_from_env(tmp_path: Path) -> None:
    environ = {"MESHPROBE_TRUST__TRUST_DOMAIN_ALIASES": '["a.example", "b.example"]'}
    settings = load_settings(write(tmp_path, "cluster: c1\n"), environ=environ)
    assert settings.trust.trust_domain_aliases == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("aliases", "path", "reason"),
    [
        ('["spiffe://x"]', "trust.trust_domain_aliases.0", "invalid trust domain 'spiffe://x'"),
        ('["ok.example", "a b"]', "trust.trust_domain_aliases.1", "invalid trust domain 'a b'"),
        ('[""]', "trust.trust_domain_aliases.0", "must not be empty"),
        (
            '["Cluster.Local"]',
            "trust.trust_domain_aliases.0",
            "'Cluster.Local' repeats trust_domain",
        ),
        (
            '["x.example", "X.example"]',
            "trust.trust_domain_aliases.1",
            "'X.example' repeats trust_domain_aliases.0",
        ),
        ('"x.example"', "trust.trust_domain_aliases", "should be a valid list"),
    ],
)
def test_trust_domain_aliases_are_validated(
    tmp_path: Path, aliases: str, path: str, reason: str
) -> None:
    text = f"cluster: c1\ntrust: {{trust_domain: cluster.local, trust_domain_aliases: {aliases}}}\n"
    issues = issues_of(write(tmp_path, text))
    assert list(issues) == [path], issues
    assert reason in issues[path]


def test_histogram_and_phases_from_defaults_and_per_target(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
cluster: c1
defaults:
  histogram: {buckets: [5ms, 0.05, 150ms, 1s]}
  phases: false
targets:
  - {name: a, url: "http://a/"}
  - {name: b, url: "http://b/", histogram: {enabled: false}, phases: true}
  - {name: c, url: "tcp://c:1", histogram: {buckets: [0.1]}}
""",
    )
    a, b, c = load_settings(path, environ={}).build_targets()
    assert a.metrics == MetricOptions(buckets=(0.005, 0.05, 0.15, 1.0), phases=False)
    assert b.metrics == MetricOptions(buckets=(), phases=True)
    assert c.metrics == MetricOptions(buckets=(0.1,), phases=False)  # its own histogram only


def test_default_metric_options_are_the_documented_ones(tmp_path: Path) -> None:
    (target,) = load_settings(
        write(tmp_path, 'cluster: c1\ntargets: [{name: a, url: "http://a/"}]\n'), environ={}
    ).build_targets()
    assert target.metrics == MetricOptions(buckets=DURATION_BUCKETS, phases=True)
    assert len(DURATION_BUCKETS) == 11 and DURATION_BUCKETS[-1] == 2.0  # the default timeout


@pytest.mark.parametrize(
    ("buckets", "fragment"),
    [
        ("[0.1, 0.05]", "bounds must ascend: 0.05 follows 0.1"),
        ("[0.1, 0.1]", "bounds must ascend"),
        ("[0, 0.1]", "greater than zero"),
        ("[-1s]", "duration"),
        ("[]", "at least one bound"),
        (str([0.001 * (i + 1) for i in range(41)]), "at most 40"),
        ("[soon]", "duration"),
    ],
)
def test_histogram_buckets_are_validated(tmp_path: Path, buckets: str, fragment: str) -> None:
    path = write(tmp_path, f"cluster: c1\ndefaults:\n  histogram:\n    buckets: {buckets}\n")
    found = issues_of(path)
    (reason,) = [r for p, r in found.items() if p.startswith("defaults.histogram.buckets")]
    assert fragment in reason, found


def test_check_warns_of_budgets_that_are_not_bounds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
cluster: c1
defaults:
  budget: {local: 40ms, remote: 150ms}
targets:
  - {name: a, url: "http://a/", budget: 30ms}
  - {name: b, url: "http://b/", budget: 25ms}
  - {name: c, url: "http://c/", budget: 30ms, histogram: {enabled: false}}
  - {name: d, url: "http://d/"}
""",
    )
    warnings = {(i.path, i.reason) for i in budget_warnings(load_settings(path, environ={}))}
    assert {path for path, _ in warnings} == {
        "defaults.histogram.buckets",
        "targets.0.histogram.buckets",
    }
    assert any("the local budget 40ms is not a bound" in reason for _, reason in warnings)
