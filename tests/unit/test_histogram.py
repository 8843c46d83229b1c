from meshprobe.histogram import Histogram


def test_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    h = Histogram([0.1, 0.5, 1.0])
    for v in (0.05, 0.1, 0.3, 0.9, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("0.5", 3), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5
    assert abs(h.sum - 8.35) < 1e-9


def test_quantile_interpolates_like_histogram_quantile() -> None:
    h = Histogram([0.01, 0.02, 0.04])
    for _ in range(10):
        h.observe(0.015)
    assert h.quantile(0.5) == 0.015  # halfway through the (0.01, 0.02] bucket
    assert Histogram([1.0]).quantile(0.5) is None
