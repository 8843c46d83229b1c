"""What one probe attempt turns into: a result whose detail is bounded, whatever a server said."""

from meshprobe.model import Reason
from meshprobe.probes.env import DETAIL_LIMIT, Attempt


def test_a_huge_detail_is_cut_and_says_how_much_was_cut() -> None:
    result = Attempt().result(Reason.TLS_IDENTITY, "expected a, leaf has " + "x" * 54_000)
    assert len(result.detail) <= DETAIL_LIMIT
    assert result.detail.startswith("expected a, leaf has xxx")
    assert result.detail.endswith("chars more)")


def test_a_short_detail_is_kept_whole() -> None:
    assert Attempt().result(Reason.DNS, "cannot resolve x").detail == "cannot resolve x"
    assert Attempt().result().detail == "ok"
