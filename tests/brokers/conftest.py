"""Fixtures for broker tests: a real `redis-server` for the whole session, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A `redis-server` on a free 127.0.0.1 port, shared by the session's tests; do not stop it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's `redis-server`, with every key deleted (FLUSHALL)."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A `redis-server` for this test alone, which it may stop, kill and restart."""
    with RedisServer() as server:
        yield server
