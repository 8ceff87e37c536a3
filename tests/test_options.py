from __future__ import annotations

from typing import Any

import pytest

from wsendpoints._options import check_pair


@pytest.mark.parametrize("value", [None, (10, 1), [5, 0.5]])
def test_check_pair_accepts_count_and_seconds(value: Any) -> None:
    check_pair("rate_limit", value)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (10, TypeError, r"rate_limit must be None or a pair \(count, seconds\), got 10"),
        ((1, 2, 3), TypeError, "must be None or a pair"),
        ((0, 1), ValueError, r"rate_limit\[0\] must be at least 1"),
        ((1, 0), ValueError, r"rate_limit\[1\] must be positive and finite"),
        ((1, None), TypeError, r"rate_limit\[1\] must be a number of seconds, got None"),
    ],
)
def test_check_pair_rejects_bad_values(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_pair("rate_limit", value)
