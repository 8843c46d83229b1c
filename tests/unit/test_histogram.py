from meshprobe.state.histogram import Histogram


def test_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    h = Histogram([0.1, 0.5, 1.0])
    for v in (0.05, 0.1, 0.3, 0.9, 7.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2), ("0.5", 3), ("1.0", 4), ("+Inf", 5)]
    assert h.count == 5
    assert abs(h.sum - 8.35) < 1e-9
