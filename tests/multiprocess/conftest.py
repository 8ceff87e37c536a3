"""Fixtures for multi-process tests: a real `redis-server`, and the two app servers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from tests.multiprocess.servers import AppServer
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A `redis-server` for the module's tests."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer) -> Iterator[tuple[AppServer, AppServer]]:
    """Two uvicorn processes, `app_one` and `app_two`, sharing rooms through `redis_server`."""
    with AppServer("app_one", redis_server.url) as one, AppServer("app_two", redis_server.url) as two:
        yield one, two


@pytest.fixture
def start_server() -> Iterator[Callable[[str, str, float], AppServer]]:
    """Start app servers for one test: `start_server(module, redis_url, presence_ttl)`; all stop at its end."""
    with ExitStack() as stack:

        def start(module: str, redis_url: str, presence_ttl: float) -> AppServer:
            server = AppServer(module, redis_url, presence_ttl)
            stack.callback(server.stop)
            server.start()
            return server

        yield start
