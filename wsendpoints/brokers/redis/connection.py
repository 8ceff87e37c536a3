"""What the parts of a `RedisBroker` share: its settings and counters, its connections, backoff.

No part of the broker imports another's state through here; each gets a `Shared` and the
`Clients` of the event loop it serves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...exceptions import BrokerError, BrokerUnavailableError
from .keys import Keys
from .wire import text

__all__ = ["FAILED", "LOST", "Backoff", "Clients", "Shared", "logger", "reaching_redis", "redact"]

logger = logging.getLogger("wsendpoints")

LOST = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when Redis cannot be reached (`TimeoutError` is an `OSError`)."""

FAILED = (RedisError, OSError, asyncio.TimeoutError)
"""Anything a Redis command can end with: refused (`ResponseError`), unreachable, or timed out.

The broker's background loops catch these and only these: any other exception is a bug, and
ends the loop where it can be seen rather than being retried forever.
"""

_MIN_BACKOFF = 0.05


def redact(url: str) -> str:
    """Return `url` with its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class Backoff:
    """Exponential backoff from 50 ms up to `maximum` seconds, with jitter."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0

    def next(self) -> float:
        delay = min(self.maximum, _MIN_BACKOFF * 2.0**self.attempts)
        self.attempts = min(self.attempts + 1, 32)
        return delay * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Clients:
    """The connections of one broker in the event loop it serves."""

    commands: Redis
    """A pool for commands: appending, presence, heartbeat."""
    reader: Redis
    """The one connection that reads the rooms' streams."""
    append: AsyncScript
    """The writer's script (see `writer`), registered on `commands`."""
    reserve: AsyncScript
    """The script that counts a room among the `max_rooms` (see `writer`), registered on `commands`."""

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.reader.aclose()


@dataclass(eq=False, slots=True)
class Shared:
    """A broker's settings, keys and counters, which outlive the event loops it serves."""

    process_id: str
    keys: Keys
    safe_url: str
    """The Redis URL without its password, for logs and errors."""
    ttl_ms: int
    """`presence_ttl` in milliseconds: the lifetime of the heartbeat, presence and writer mark."""
    max_backoff: float
    malformed: int = 0
    dropped: int = 0
    missed: int = 0

    def skip_malformed(self, what: str, key: bytes, value: object) -> None:
        """Count and log something on our keys that we did not write."""
        self.malformed += 1
        logger.warning("RedisBroker ignored a malformed %s at key %r: %.200r", what, text(key), value)


@contextmanager
def reaching_redis(safe_url: str) -> Iterator[None]:
    """Turn what redis-py raises into `BrokerError` (refused) or `BrokerUnavailableError` (unreachable)."""
    try:
        yield
    except ResponseError as exc:
        raise BrokerError(f"Redis at {safe_url} refused: {exc}") from exc
    except LOST as exc:
        raise BrokerUnavailableError(f"cannot reach Redis at {safe_url}: {exc}") from exc
