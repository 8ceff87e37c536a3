"""A message sent to Redis twice, once per attempt, is appended once and lost never.

A message goes twice when its first attempt ran in Redis but its reply never came back: its
publisher (which appends a lone message itself) was cancelled, or Redis stalled past the
connection's timeout. Each test drives a `Writer` against a real redis-server, with the
append script or the client wrapped so that one reply is lost or late, as it is in those cases.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from tests.bounded import bounded
from tests.brokers.test_redis import admin, eventually
from tests.brokers.test_redis_limits import stopped
from tests.redis_server import RedisServer
from wsendpoints import Message
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.brokers.redis.connection import Clients, Shared
from wsendpoints.brokers.redis.keys import Keys
from wsendpoints.brokers.redis.writer import APPEND, RESERVE, Writer
from wsendpoints.testing import Collector

__all__ = ["admin", "stopped"]  # fixtures taken from test_redis and test_redis_limits

pytestmark = pytest.mark.redis

ROOM = b"wsendpoints:room:r"


def new_writer(url: str) -> Writer:
    shared = Shared("p", Keys("wsendpoints", "p"), url, ttl_ms=10_000, max_backoff=1.0)
    return Writer(
        shared, buffer_size=10, buffer_bytes=1024, stream_maxlen=10, stream_bytes=1024, stream_ttl=10, max_rooms=0
    )


class LostReply:
    """The append script, whose first reply never comes back although Redis ran it; `then` fails the rest."""

    def __init__(self, script: AsyncScript, then: Exception | None = None) -> None:
        self.script = script
        self.then = then
        self.calls = 0
        self.ran = asyncio.Event()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        self.calls += 1
        if self.calls > 1 and self.then is not None:
            raise self.then
        result = await self.script(keys=keys, args=args)
        if self.calls == 1:
            self.ran.set()
            await asyncio.Event().wait()  # the reply is lost: only cancelling gets past this
        return result


async def payloads(admin: redis.asyncio.Redis) -> list[bytes]:
    entries: Any = await admin.xrange(ROOM)
    return [fields[b"payload"] for _, fields in entries]


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_appends_once_a_message_whose_publisher_was_cancelled_before_the_reply(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """Sent again by the writer's task, the message is not appended again: Redis knows its `seq`."""
    writer = new_writer(redis_url)
    async with redis.asyncio.Redis.from_url(redis_url, protocol=2) as commands:
        lost = LostReply(commands.register_script(APPEND))
        clients = Clients(commands, commands, lost, commands.register_script(RESERVE))  # type: ignore[arg-type]
        await commands.set(writer.shared.keys.writer, b"1", px=10_000)
        publishing = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"once", 1))
        with anyio.fail_after(5):
            await lost.ran.wait()
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publishing
        with anyio.fail_after(5):
            await writer.flush(clients)  # what the writer's task does next: send it again
            await writer.publish(clients, "r", b"{}", b"next", 2)
        assert lost.calls == 3
        assert await payloads(admin) == [b"once", b"next"]
        assert not writer.queue


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_history_after_a_cancelled_publisher_has_each_message_once(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """A resuming client asks for what followed the message as it was delivered: nothing, not a second copy."""
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await broker.publish("r", Message("m0"))
            assert broker._link is not None
            assert broker._link.clients is not None
            clients = broker._link.clients
            lost = LostReply(clients.append)
            object.__setattr__(clients, "append", lost)  # the broker's own connections, one reply lost
            publishing = asyncio.ensure_future(broker.publish("r", Message("m1")))
            with anyio.fail_after(5):
                await lost.ran.wait()
            publishing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await publishing
            await broker.publish("r", Message("m2"))
            await got.wait_for(3)
        assert got.payloads() == ["m0", "m1", "m2"]
        assert await payloads(admin) == [b"m0", b"m1", b"m2"]
        history = await broker.history("r", since=got.messages[1].id)
        assert [message.payload for message in history.messages] == ["m2"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_cancelled_publisher_leaves_no_unretrieved_error(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refusing the message after its publisher was cancelled: nobody is told, and asyncio logs nothing."""
    writer = new_writer(redis_url)
    async with redis.asyncio.Redis.from_url(redis_url, protocol=2) as commands:
        lost = LostReply(commands.register_script(APPEND), then=ResponseError("OOM command not allowed"))
        clients = Clients(commands, commands, lost, commands.register_script(RESERVE))  # type: ignore[arg-type]
        await commands.set(writer.shared.keys.writer, b"1", px=10_000)
        publishing = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"refused later", 1))
        with anyio.fail_after(5):
            await lost.ran.wait()
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publishing
        del publishing
        running = asyncio.ensure_future(writer.run(clients))
        try:
            with caplog.at_level(logging.ERROR, logger="asyncio"):

                async def refused() -> int:
                    return writer.shared.dropped

                await eventually(refused, 1)
                gc.collect()
            assert not [r for r in caplog.records if r.name == "asyncio"]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_takes_a_publishers_timed_out_append_as_its_own_failed_attempt(
    stopped: RedisServer, admin_of_stopped: redis.asyncio.Redis
) -> None:
    """Redis stalls: a lone publish returns after its one attempt times out (not two), then goes in once."""
    assert stopped.process is not None
    writer = new_writer(stopped.url)
    async with redis.asyncio.Redis.from_url(stopped.url, protocol=2, socket_timeout=0.5) as commands:
        calls = 0
        script = commands.register_script(APPEND)

        async def counted(keys: list[Any], args: list[Any]) -> Any:
            nonlocal calls
            calls += 1
            return await script(keys=keys, args=args)

        clients = Clients(commands, commands, counted, commands.register_script(RESERVE))  # type: ignore[arg-type]
        await commands.set(writer.shared.keys.writer, b"1", px=10_000)
        running = asyncio.ensure_future(writer.run(clients))
        try:
            with anyio.fail_after(5):
                await writer.publish(clients, "r", b"{}", b"warm", 1)  # and the script loaded
            calls = 0
            os.kill(stopped.process.pid, signal.SIGSTOP)
            with anyio.fail_after(5):
                await writer.publish(clients, "r", b"{}", b"stalled", 2)
            assert calls == 1  # the writer's task backs off before trying again
            assert not writer.connected
            os.kill(stopped.process.pid, signal.SIGCONT)

            async def settled() -> tuple[bool, int]:
                return writer.connected, len(writer.queue)

            await eventually(settled, (True, 0), within=10)
            assert await payloads(admin_of_stopped) == [b"warm", b"stalled"]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


class LateSet(redis.asyncio.Redis):
    """A client whose next SET, once `armed` with an event, runs in Redis but whose reply never comes back."""

    armed: asyncio.Event | None = None

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().set(*args, **kwargs)
        if self.armed is not None:
            self.armed.set()
            self.armed = None
            await asyncio.Event().wait()
        return result


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_replays_after_data_loss_even_if_the_publisher_restoring_is_cancelled(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """Redis lost its data; the publisher that finds out is cancelled while the writer's mark is set again.

    The last second's messages are still sent again, before the publisher's own.
    """
    writer = new_writer(redis_url)
    commands = LateSet.from_url(redis_url, protocol=2)
    assert isinstance(commands, LateSet)
    async with commands:
        clients = Clients(commands, commands, commands.register_script(APPEND), commands.register_script(RESERVE))
        await commands.set(writer.shared.keys.writer, b"1", px=10_000)  # not armed: answered
        with anyio.fail_after(5):
            await writer.publish(clients, "r", b"{}", b"m1", 1)
        await admin.flushall()
        ran = commands.armed = asyncio.Event()
        publishing = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"m2", 2))
        with anyio.fail_after(5):
            await ran.wait()
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publishing
        with anyio.fail_after(5):
            await writer.flush(clients)
        assert await payloads(admin) == [b"m1", b"m2"]


@pytest.fixture
async def admin_of_stopped(stopped: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(stopped.url, protocol=2)
    yield client
    await client.aclose()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_replay_after_its_mark_expired_appends_nothing_redis_kept(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """Only the writer's mark gone (the process hung past `presence_ttl`, Redis kept its data): no copies."""
    async with RedisBroker(redis_url) as broker:
        await broker.publish("r", Message("recent"))
        await admin.delete(f"wsendpoints:writer:{broker.process_id}")
        await broker.publish("r", Message("new"))
        assert await payloads(admin) == [b"recent", b"new"]
