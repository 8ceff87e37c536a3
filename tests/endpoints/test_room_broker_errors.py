"""A broker failing on a member's path (join, publish, leave) closes that member 1013, with a WARNING only.

TestClient tests with brokers that fail on purpose, then the same attacks under uvicorn on a real
redis-server: Redis out of memory, Redis hung (SIGSTOP), and more rooms than `max_rooms`.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ClientFactory
from tests.endpoints.test_room import room_app
from tests.redis_server import RedisServer
from tests.servers import UvicornThread
from wsendpoints import BrokerError, CloseCode, MemoryBroker, Message, RoomEndpoint, TooManyRoomsError
from wsendpoints.brokers.base import Entry
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.testing import expect_close, receive_text


class Refusing(MemoryBroker):
    """A broker whose backend refuses to store messages (as Redis does when out of memory)."""

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        if message.payload.endswith("refused"):
            raise BrokerError("the backend refused: out of memory")
        await super().publish(room, message, history_size=history_size, history_ttl=history_ttl)


class Full(MemoryBroker):
    """A broker that holds as many rooms as it may."""

    async def enter(self, room: str, member: str, user: str, **options: Any) -> Entry:
        raise TooManyRoomsError("too many rooms (max_rooms=1)")


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


def test_room_publish_refused_closes_the_sender_1013(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = RoomEndpoint.configure(broker=Refusing())
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        assert receive_text(ann) == "bob joined the chat"
        bob.send_text("this is refused")
        assert expect_close(bob) == (CloseCode.TRY_AGAIN_LATER, "try again later")
        assert receive_text(ann) == "bob left the chat"
        with client.websocket_connect("/rooms/lobby/eve") as eve:
            assert receive_text(ann) == "eve joined the chat"
            ann.send_text("still served")
            assert receive_text(eve) == "ann: still served"
    assert "closing '/rooms/lobby/bob' with 1013 'try again later'" in caplog.text
    assert "the backend refused: out of memory" in caplog.text
    no_errors(caplog)


def test_room_join_past_the_room_limit_closes_1013_too_many_rooms(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Full()
    client = client_factory(room_app(RoomEndpoint.configure(broker=broker)))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        assert expect_close(ann) == (CloseCode.TRY_AGAIN_LATER, "too many rooms")
    assert broker.rooms() == []
    no_errors(caplog)


# -- under uvicorn, on a real redis-server --------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A `redis-server` for this test alone."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def server_on(own_redis: RedisServer) -> Iterator[tuple[RedisServer, type[RoomEndpoint], str]]:
    """uvicorn serving rooms on `own_redis` (connect_timeout 1 s, 2 rooms at most, echo on); Redis always thawed."""
    endpoint = RoomEndpoint.configure(
        broker=RedisBroker(own_redis.url, connect_timeout=1.0, max_rooms=2),
        join_template=None,
        leave_template=None,
        echo_template="{text}",
    )
    server = UvicornThread(Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", endpoint)]))
    base = server.start()
    try:
        yield own_redis, endpoint, base
    finally:
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGCONT)
        server.stop()


async def closed(ws: ClientConnection) -> tuple[int, str]:
    """Read `ws` until it closes (within 10 s); return the code and reason of the server's close frame."""
    with anyio.fail_after(10):
        await ws.wait_closed()  # what it still receives meanwhile is buffered, then dropped
    close = ws.protocol.close_rcvd
    assert close is not None, "no close frame"
    return close.code, close.reason


async def joined(ws: ClientConnection) -> ClientConnection:
    """Return `ws` once it has joined its room: its echo comes back (after what others sent before it)."""
    await ws.send("ping")
    with anyio.fail_after(5):
        while await ws.recv() != "ping":
            pass
    return ws


async def close_of(base: str, path: str) -> tuple[int, str, float]:
    """Connect to `path`; return the close code and reason it gets, and after how many seconds."""
    started = time.monotonic()
    async with connect(base + path) as ws:
        code, reason = await closed(ws)
    return code, reason, time.monotonic() - started


@pytest.mark.redis
@pytest.mark.server
@pytest.mark.anyio
async def test_room_with_redis_out_of_memory_closes_1013_and_recovers(
    server_on: tuple[RedisServer, type[RoomEndpoint], str], caplog: pytest.LogCaptureFixture
) -> None:
    own_redis, _, base = server_on
    async with (
        redis.asyncio.Redis.from_url(own_redis.url) as admin,
        connect(base + "/rooms/a/ann") as ann,
        connect(base + "/rooms/a/carl") as carl,
    ):
        await joined(carl)
        await joined(ann)
        with anyio.fail_after(5):  # the room's stream is there
            assert await carl.recv() == "ann: ping"
        await admin.config_set("maxmemory", 1)
        try:
            codes = [(await close_of(base, path))[:2] for path in ("/rooms/b/bob", "/rooms/b/eve", "/rooms/a/sam")]
            await ann.send("refused")
            codes.append(await closed(ann))
        finally:
            await admin.config_set("maxmemory", 0)
        assert codes == [(CloseCode.TRY_AGAIN_LATER, "try again later")] * 4
        async with connect(base + "/rooms/b/bob") as bob, connect(base + "/rooms/b/eve") as eve:
            await joined(bob)
            await joined(eve)
            await bob.send("hello")
            with anyio.fail_after(5):
                assert await eve.recv() == "bob: hello"
    assert "command not allowed when used memory > 'maxmemory'" in caplog.text
    no_errors(caplog)


@pytest.mark.redis
@pytest.mark.server
@pytest.mark.anyio
async def test_room_ten_joins_with_redis_hung_each_end_within_connect_timeout(
    server_on: tuple[RedisServer, type[RoomEndpoint], str], caplog: pytest.LogCaptureFixture
) -> None:
    own_redis, _, base = server_on
    assert own_redis.process is not None
    async with connect(base + "/rooms/a/ann"):  # connected to Redis before it hangs
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        closes: list[tuple[int, str, float]] = []

        async def join(n: int) -> None:
            closes.append(await close_of(base, f"/rooms/r{n}/u{n}"))

        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(join, n)
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert len(closes) == 10
    assert {(code, reason) for code, reason, _ in closes} == {(CloseCode.TRY_AGAIN_LATER, "try again later")}
    assert max(seconds for _, _, seconds in closes) < 1.0 + 1.0, closes
    no_errors(caplog)


@pytest.mark.redis
@pytest.mark.server
@pytest.mark.anyio
async def test_room_one_room_past_max_rooms_closes_1013_too_many_rooms(
    server_on: tuple[RedisServer, type[RoomEndpoint], str], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, base = server_on
    async with connect(base + "/rooms/a/ann") as ann, connect(base + "/rooms/b/bob") as bob:
        await joined(ann)
        await joined(bob)
        assert (await close_of(base, "/rooms/c/eve"))[:2] == (CloseCode.TRY_AGAIN_LATER, "too many rooms")
        async with connect(base + "/rooms/a/sam") as sam:  # a room that is there takes new members
            await joined(sam)
            with anyio.fail_after(5):
                assert await ann.recv() == "sam: ping"
    no_errors(caplog)
