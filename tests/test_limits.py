from __future__ import annotations

import threading

from wsendpoints._limits import MAX_KEYS, KeyedRateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_keyed_rate_limit_counts_per_key_in_a_sliding_window() -> None:
    clock = Clock()
    limit = KeyedRateLimit(2, 10, clock=clock)
    assert limit.allow("a")
    clock.now = 5.0
    assert [limit.allow("a"), limit.allow("a"), limit.allow("b")] == [True, False, True]
    clock.now = 9.9
    assert not limit.allow("a")
    clock.now = 10.0  # the first event has left the window
    assert [limit.allow("a"), limit.allow("a")] == [True, False]


def test_keyed_rate_limit_forgets_expired_keys() -> None:
    clock = Clock()
    limit = KeyedRateLimit(1, 1, clock=clock)
    for n in range(100):
        limit.allow(f"old{n}")
    clock.now = 1.0
    limit.allow("new")
    assert len(limit) == 1


def test_keyed_rate_limit_keeps_at_most_max_keys() -> None:
    clock = Clock()
    limit = KeyedRateLimit(1, 60, max_keys=3, clock=clock)
    for key in "abcd":
        assert limit.allow(key)
        clock.now += 1
    assert len(limit) == 3
    assert limit.allow("a")  # forgotten, the least recently active: it starts afresh
    assert not limit.allow("d")
    assert MAX_KEYS == 10_000


def test_keyed_rate_limit_is_exact_across_threads() -> None:
    limit = KeyedRateLimit(500, 60)
    allowed: list[bool] = []

    def join() -> None:
        results = [limit.allow("one") for _ in range(200)]
        allowed.extend(results)

    threads = [threading.Thread(target=join) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert allowed.count(True) == 500
