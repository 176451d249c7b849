import pytest

from jejaring_devtools.stats import percentile


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order does not matter
    assert percentile(list(reversed(values)), 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 99)
