"""Property tests: whatever a config file or the environment holds, the loader behind `check` and
`run` answers with Settings or a ConfigError whose every issue names a field and a reason.

Values are drawn per known key (right shape, wrong type, hostile scalars: lone surrogates, huge
integers, NaN and infinities, empty strings, nested junk), and whole files as arbitrary bytes or
YAML-ish token soup. Derandomized with a fixed example budget so CI sees the same cases each run;
every crash found is pinned below with @example.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshprobe.config.settings import (
    ConfigError,
    ConfigIssue,
    Settings,
    load_settings,
    load_settings_from_mapping,
    summarize,
)
from meshprobe.trust.configfiles import file_warnings, load_trust_bundle

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text that includes lone surrogates (YAML and JSON can spell them) and control characters.
ANY_CHAR = st.one_of(
    st.characters(max_codepoint=0x7F),  # ASCII, control characters included
    st.characters(categories=["Cs"]),  # lone surrogates: rare in the whole range, so asked for
    st.characters(),
)
TEXT = st.text(ANY_CHAR, max_size=20)
# Built lazily: hypothesis reprs its strategies, and Python will not print 5000 digits as text.
HUGE_INTS = st.sampled_from([63, 100, 400, 5000]).flatmap(
    lambda digits: st.sampled_from([10**digits, -(10**digits)])
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "\x00", "\ud800", "0", "-1", "1e999", "9" * 400 + "s", "10s"]),
    TEXT,
    st.binary(max_size=8),
    st.dates(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(TEXT, st.integers(), st.none(), st.booleans()), inner, max_size=3
        ),
    ),
    max_leaves=8,
)

DURATION = st.one_of(st.sampled_from(["250ms", "10s", "1m30s", "0s", "-1s", "5 parsecs"]), VALUES)
NAME = st.one_of(st.sampled_from(["cluster1", "cluster2", "a/b", "", "Bad Name"]), VALUES)
URL = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1:8080/x",
            "https://h:99999/",
            "tls://h",
            "tcp://h:0",
            "http://[::1/",
            "http://u:p@h/",
            "gopher://h/",
            "http://h:\u0661\u0662/",
            "http://\ud800/",
        ]
    ),
    st.builds(lambda s, h: f"{s}://{h}", st.sampled_from(["http", "https", "tcp", "tls"]), TEXT),
    VALUES,
)


def _dump(value: Any) -> str:
    """YAML text for a drawn value; Python cannot print integers beyond 4300 digits as text."""
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except ValueError:
        return "cluster: c1\n"


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The right-ish value, or anything at all."""
    return st.one_of(strategy, VALUES)


def section(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A mapping with any subset of the known keys (and sometimes an unknown one), or junk."""
    shaped = st.fixed_dictionaries({}, optional={**fields, "tiemout": VALUES})
    return st.one_of(shaped, shaped, VALUES)


BUDGET = section({"local": DURATION, "remote": DURATION})
DEFAULTS = section(
    {
        "interval": DURATION,
        "timeout": DURATION,
        "budget": BUDGET,
        "body_limit": maybe(st.just("1MiB")),
    }
)
TLS = section(
    {
        "ca_file": maybe(st.just("/nonexistent/ca.pem")),
        "identity": maybe(TEXT),
        "server_name": maybe(TEXT),
        "insecure_skip_verify": VALUES,
    }
)
TARGET = section(
    {
        "name": NAME,
        "url": URL,
        "cluster": NAME,
        "interval": DURATION,
        "timeout": DURATION,
        "budget": DURATION,
        "expected_status": maybe(st.lists(st.integers(0, 1000), max_size=3)),
        "body_regex": maybe(st.sampled_from(["ok", "(", "a{99999999999}", "(?P<x"])),
        "body_limit": maybe(st.sampled_from(["1KiB", "0", "-5", "5 TB"])),
        "keepalive": VALUES,
        "follow_redirects": VALUES,
        "method": maybe(st.sampled_from(["GET", "get", "G ET", ""])),
        "headers": maybe(st.dictionaries(TEXT, TEXT, max_size=2)),
        "tls": TLS,
    }
)
CONFIGMAP = st.one_of(
    st.sampled_from(["istio", "linkerd", "consul"]),
    section({"preset": maybe(st.just("istio")), "namespace": NAME, "name": NAME, "key": NAME}),
)
TRUST = section(
    {
        "bundle_file": maybe(st.sampled_from(["/nonexistent/ca.pem", "/", "", "a\x00b"])),
        "configmap": CONFIGMAP,
        "trust_domain": maybe(TEXT),
        "trust_domain_aliases": maybe(st.lists(TEXT, max_size=3)),
    }
)
KUBERNETES = section(
    {
        "enabled": VALUES,
        "namespaces": maybe(st.lists(NAME, max_size=3)),
        "label_selector": VALUES,
        "resync_period": DURATION,
        "kubeconfig": maybe(st.just("/nonexistent/kubeconfig")),
        "context": VALUES,
        "cluster_domain": VALUES,
        "address": maybe(st.sampled_from(["dns", "cluster-ip", "ip"])),
    }
)
CONFIG = st.fixed_dictionaries(
    {"cluster": NAME},
    optional={
        "listen": maybe(st.sampled_from(["127.0.0.1:0", "[::1]:9942", ":1", "h:\u00b2", "h:-1"])),
        "log_level": maybe(st.sampled_from(["info", "INFO", "trace"])),
        "log_format": maybe(st.sampled_from(["json", "xml"])),
        "concurrency": VALUES,
        "defaults": DEFAULTS,
        "trust": TRUST,
        "targets": st.one_of(st.lists(TARGET, max_size=3), VALUES),
        "peers": st.one_of(st.lists(section({"cluster": NAME, "url": URL}), max_size=2), VALUES),
        "discovery": section({"kubernetes": KUBERNETES}),
        "colour": VALUES,
    },
)


def assert_clean(issues: list[ConfigIssue]) -> None:
    """Every issue says where and why, in text `check` can print on any terminal."""
    assert issues
    for issue in issues:
        assert isinstance(issue.path, str) and issue.path.strip(), issue
        assert isinstance(issue.reason, str) and issue.reason.strip(), issue
        str(issue).encode("utf-8")  # no lone surrogate reaches the output
        assert "\n" not in issue.path, issue


def check_like(load: Any) -> Settings | None:
    """What `meshprobe check` does with a config: load, load the files, summarize."""
    try:
        loaded = load()
        assert isinstance(loaded, Settings)
        summarize(loaded).encode("utf-8")
        file_warnings(loaded)
        load_trust_bundle(loaded)
    except ConfigError as exc:
        assert_clean(exc.errors)
        return None
    return loaded


@FUZZ
@given(CONFIG)
@example({"cluster": "c1", "defaults": {"interval": 10**400}})  # float() overflow
@example({"cluster": "c1", "defaults": {"interval": "9" * 400 + "s"}})  # sums to infinity
@example({"cluster": "c1", "concurrency": 10**5000})  # beyond Python's int-to-text limit
@example({"cluster": "c1", "\ud800": 1})  # a key that cannot be printed as UTF-8
@example({"cluster": "c1", "a\nb": 1, None: 2, 3: 4})  # keys that are not plain names
@example(
    {"cluster": "c1", "targets": [{"name": "a", "url": "http://h/", "headers": {"\ud800": "x"}}]}
)
@example({"cluster": "c1", "listen": "h:\u0661\u0662"})  # non-ASCII digits in a port
@example({"cluster": "c1", "trust": {"trust_domain": "\ud800"}})  # summary printed to stdout
@example({"cluster": "c1", "trust": {"bundle_file": "a\x00b"}})
@example({"cluster": "c1", "trust": {"bundle_file": "\ud800"}})
@example(
    {
        "cluster": "c1",
        "targets": [{"name": "a", "url": "http://h/", "body_regex": "a{99999999999}"}],
    }
)
def test_any_mapping_loads_or_names_every_problem(config: dict[Any, Any]) -> None:
    check_like(lambda: load_settings_from_mapping(config))


ENV_KEYS = st.sampled_from(
    [
        "MESHPROBE_CLUSTER",
        "MESHPROBE_LISTEN",
        "MESHPROBE_TARGETS",
        "MESHPROBE_DEFAULTS",
        "MESHPROBE_DEFAULTS__INTERVAL",
        "MESHPROBE_DEFAULTS__BUDGET",
        "MESHPROBE_DEFAULTS__BUDGET__LOCAL",
        "MESHPROBE_TRUST__TRUST_DOMAIN_ALIASES",
        "MESHPROBE_TRUST__CONFIGMAP",
        "MESHPROBE_DISCOVERY__KUBERNETES__NAMESPACES",
        "MESHPROBE_CONCURRENCY",
    ]
)
ENV_VALUES = st.one_of(
    st.sampled_from(["", "[]", "{}", "null", '["a", 1]', '{"x": 1}', "[", "1e999", "10s"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20),
    st.builds(_dump, VALUES).map(str.strip),
)


@FUZZ
@given(st.dictionaries(ENV_KEYS, ENV_VALUES, max_size=4), CONFIG)
@example({"MESHPROBE_DEFAULTS": "5", "MESHPROBE_DEFAULTS__INTERVAL": "1s"}, {"cluster": "c1"})
@example({"MESHPROBE_DEFAULTS__BUDGET__LOCAL": "1s"}, {"cluster": "c1", "defaults": 5})
def test_any_environment_over_any_file(environ: dict[str, str], config: dict[Any, Any]) -> None:
    check_like(lambda: load_settings_from_mapping(config, environ=environ))


YAML_TOKENS = st.sampled_from(
    [
        "cluster",
        "targets",
        "defaults",
        "interval",
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ", ",
        "\n",
        "  ",
        "&a ",
        "*a",
        "<<: ",
        "!!binary ",
        "!!python/object:os.system ",
        "!!set ",
        "!!float ",
        "? ",
        "|\n",
        "'",
        '"',
        "\\ud800",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "\t",
        "\ufeff",
        "\x00",
        "0x1F",
        "1e999",
        ".nan",
        "9" * 5000,
        "2001-12-14",
        "~",
        "#",
    ]
)
YAML_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(YAML_TOKENS, max_size=30).map(lambda t: "".join(t).encode("utf-8", "surrogatepass")),
    st.builds(lambda c: _dump(c).encode("utf-8", "surrogatepass"), CONFIG),
)


BOMB = b"cluster: c1\nx0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + b"".join(
    b"x%d: &x%d [%s]\n" % (i, i, b", ".join([b"*x%d" % (i - 1)] * 10)) for i in range(1, 10)
)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz") / "meshprobe.yaml"


@FUZZ
@given(data=YAML_BYTES)
@example(data=b"[" * 1200)  # nesting deeper than the parser's recursion
@example(data=b"{" * 1200)
@example(data=b"cluster: c1\nconcurrency: " + b"9" * 5000)  # int beyond the text limit
@example(data=b"cluster: c1\ndefaults: &a {budget: *a}\n")  # an alias that contains itself
@example(data=BOMB)  # a billion values from ten lines
@example(data=b"cluster: c1\n? [1, 2]\n: x\n")  # a key that is a list
@example(data=b'cluster: c1\n"\\ud800": 1\n')  # a key that is a lone surrogate
@example(data=b"\xff\xfe\x00\x00")
def test_any_file_loads_or_names_every_problem(config_file: Path, data: bytes) -> None:
    config_file.write_bytes(data)
    settings_or_none = check_like(lambda: load_settings(config_file, environ={}))
    if settings_or_none is not None:
        assert not math.isnan(settings_or_none.defaults.interval)
