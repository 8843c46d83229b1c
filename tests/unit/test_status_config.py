"""The `status:` section: the ring size, bounded, and wrong values named with their field."""

from __future__ import annotations

import pytest

from meshprobe.config.settings import ConfigError, load_settings_from_mapping


def issues(status: object, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_settings_from_mapping({"cluster": "c1", "status": status}, environ=environ)
    return {issue.path: issue.reason for issue in caught.value.errors}


def test_default_and_environment() -> None:
    assert load_settings_from_mapping({"cluster": "c1"}).status.recent_results == 60
    env = {"MESHPROBE_STATUS__RECENT_RESULTS": "120"}
    assert load_settings_from_mapping({"cluster": "c1"}, environ=env).status.recent_results == 120


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "must be 1..1000, got 0: each result kept costs"),
        (1001, "must be 1..1000, got 1001"),
        (-5, "must be 1..1000, got -5"),
        (True, "must be a whole number of results, got a bool"),
        ("sixty", "must be a whole number of results, got 'sixty'"),
        (2.5, "must be a whole number of results, got 2.5"),
        ([60], "must be a whole number of results, got a list"),
    ],
)
def test_wrong_values_name_the_field_and_the_reason(value: object, reason: str) -> None:
    found = issues({"recent_results": value})
    assert list(found) == ["status.recent_results"]
    assert found["status.recent_results"].startswith(reason), found


def test_unknown_keys_and_a_bad_environment_value() -> None:
    assert issues({"recent_result": 10}) == {"status.recent_result": "unknown key"}
    found = issues({}, environ={"MESHPROBE_STATUS__RECENT_RESULTS": "0"})
    assert "must be 1..1000" in found["status.recent_results"]
