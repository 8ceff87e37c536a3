"""`KeyedRateLimit`: at most `count` events within `seconds` per key, in bounded memory.

No imports of ours. Thread-safe: rooms serve connections on several event-loop threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["MAX_KEYS", "KeyedRateLimit"]

MAX_KEYS = 10_000
"""How many keys (client addresses) one limit tracks at most."""


class KeyedRateLimit:
    """A sliding-window log per key: `allow(key)` is True for at most `count` calls within `seconds`.

    Memory is bounded by `max_keys` x `count` timestamps. Keys are kept in the order of their
    last allowed event, so expired keys are dropped from the front as new ones come; when all
    `max_keys` are still active, the least recently active key is forgotten (it may then start
    afresh: an attacker with more than `max_keys` addresses is not held by this limit alone).
    """

    def __init__(
        self, count: int, seconds: float, max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.count = count
        self.seconds = seconds
        self.max_keys = max_keys
        self._clock = clock
        self._logs: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many keys are tracked now."""
        return len(self._logs)

    def allow(self, key: str) -> bool:
        """Record an event for `key` and return True, unless `key` already had `count` within `seconds`."""
        with self._lock:
            now = self._clock()
            horizon = now - self.seconds
            logs = self._logs
            log = logs.get(key)
            if log is None:
                while logs:  # forget keys whose last event has left the window, oldest first
                    oldest = next(iter(logs.values()))
                    if oldest[-1] > horizon and len(logs) < self.max_keys:
                        break
                    logs.popitem(last=False)
                log = logs[key] = deque(maxlen=self.count)
            while log and log[0] <= horizon:
                log.popleft()
            if len(log) >= self.count:
                return False
            log.append(now)
            logs.move_to_end(key)
            return True
