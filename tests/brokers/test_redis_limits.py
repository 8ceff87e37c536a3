"""`RedisBroker`'s budgets and failure modes, each tested by the attack or fault it stops, on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from tests.bounded import bounded
from tests.brokers.test_redis import LogWatcher, admin, eventually, logs
from tests.redis_server import RedisServer
from wsendpoints import BrokerError, BrokerUnavailableError, Message, TooManyRoomsError
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.brokers.redis.connection import Clients, Shared
from wsendpoints.brokers.redis.keys import Keys
from wsendpoints.brokers.redis.reader import Reader
from wsendpoints.brokers.redis.writer import APPEND, RESERVE, Writer
from wsendpoints.testing import Collector

__all__ = ["admin", "logs"]  # fixtures taken from test_redis

pytestmark = pytest.mark.redis

CONTROL = "".join(chr(n) for n in range(32)) * 2048
"""64 KiB of control characters: what JSON escaping used to grow six times over."""


def entry_bytes(fields: dict[bytes, bytes]) -> int:
    return sum(len(name) + len(value) for name, value in fields.items())


async def admits(broker: RedisBroker, room: str) -> bool:
    """Publish to `room`; return whether it was taken, False if it would be a room past `max_rooms`."""
    try:
        await broker.publish(room, Message("welcome"))
    except TooManyRoomsError:
        return False
    return True


@pytest.fixture
def stopped(own_redis: RedisServer) -> Iterator[RedisServer]:
    """`own_redis`, which the test may freeze with SIGSTOP: it is always let go again (SIGCONT)."""
    assert own_redis.process is not None
    try:
        yield own_redis
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)


# -- what one client can put into Redis ---------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_entry_is_the_message_plus_a_small_fixed_overhead(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async with RedisBroker(redis_url) as broker:
        await broker.publish("r", Message(CONTROL, sender="member-1"))
        entries: Any = await admin.xrange(b"wsendpoints:room:r")
        [(_, fields)] = entries
        assert len(CONTROL) == 65_536
        assert fields[b"payload"] == CONTROL.encode()
        assert entry_bytes(fields) <= len(CONTROL) + 160
        usage = await admin.memory_usage(b"wsendpoints:room:r", samples=0)
        assert usage is not None
        assert usage <= 96 * 1024  # one 64 KiB entry in a jemalloc size class, and the stream's own bytes


@pytest.mark.anyio
@bounded(60)
async def test_redis_broker_bounds_what_one_prefix_holds(own_redis: RedisServer) -> None:
    """64 KiB messages of control characters into 40 new rooms: Redis holds no more than `max_rooms` of them.

    The ceiling stated in the README: `max_rooms x (stream_bytes + one message)` of entries, times the
    allocator's rounding (measured about 1.3 for 64 KiB entries), plus presence.
    """
    max_rooms, stream_bytes = 10, 128 * 1024
    async with redis.asyncio.Redis.from_url(own_redis.url) as admin:
        before = (await admin.info("memory"))["used_memory"]
        async with RedisBroker(own_redis.url, max_rooms=max_rooms, stream_bytes=stream_bytes, stream_ttl=2) as broker:
            refused = 0
            for room in range(40):
                for _ in range(6):
                    try:
                        await broker.publish(f"r{room}", Message(CONTROL, sender="member-1"))
                    except TooManyRoomsError:
                        refused += 1
            assert refused == 30 * 6
            with pytest.raises(TooManyRoomsError, match="max_rooms=10"):
                await broker.join("r10", "m1", "ann")
            assert await broker.join("r0", "m1", "ann") == 1
            grown = (await admin.info("memory"))["used_memory"] - before
            ceiling = max_rooms * (stream_bytes + len(CONTROL)) * 1.5 + 1024 * 1024
            assert grown < ceiling, f"Redis grew by {grown} bytes, over the ceiling of {ceiling}"
            for room in range(max_rooms):
                entries: Any = await admin.xrange(f"wsendpoints:room:r{room}".encode())
                assert sum(entry_bytes(fields) for _, fields in entries) <= stream_bytes + entry_bytes(entries[0][1])
            assert await admin.exists(b"wsendpoints:room:r10") == 0
            # Rooms end with their streams (stream_ttl): then new rooms are welcome again.
            await broker.leave("r0", "m1")
            await eventually(partial(admits, broker, "new"), True, within=10)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_trims_a_stream_to_its_bytes(redis_url: str, admin: redis.asyncio.Redis) -> None:
    async with RedisBroker(redis_url, stream_bytes=1000) as broker:
        for n in range(30):
            await broker.publish("r", Message(f"{n:03}" + "x" * 97))
        entries: Any = await admin.xrange(b"wsendpoints:room:r")
        sizes = [len(fields[b"meta"]) + len(fields[b"payload"]) for _, fields in entries]
        assert sum(sizes) <= 1000 + sizes[0]
        assert [fields[b"payload"][:3] for _, fields in entries][-1] == b"029"
        assert [int(fields[b"n"]) for _, fields in entries] == list(range(31 - len(entries), 31))


# -- holding back, and falling behind --------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_leaves_a_paused_room_in_redis_and_counts_what_it_missed(
    redis_url: str, logs: LogWatcher
) -> None:
    paused = True
    asked = 0

    def is_paused() -> bool:
        nonlocal asked
        asked += 1
        return paused

    async def reader_asked_again() -> None:
        seen = asked
        with anyio.fail_after(2):
            while asked < seen + 3:  # noqa: ASYNC110 - the reader asks on its own clock, every 50 ms while paused
                await anyio.sleep(0.01)

    async with RedisBroker(redis_url, stream_bytes=2000) as broker:
        got, other = Collector(), Collector()
        async with broker.subscribe("r", got, paused=is_paused), broker.subscribe("other", other):
            for n in range(5):
                await broker.publish("r", Message(f"a{n}"))
            await reader_asked_again()
            assert got.payloads() == []
            paused = False
            await got.wait_for(5)
            assert got.payloads() == [f"a{n}" for n in range(5)]
            assert broker.missed == 0
            paused = True
            await broker.publish("other", Message("makes the reader look again"))
            await other.wait_for(1)
            await reader_asked_again()
            for n in range(100):
                await broker.publish("r", Message(f"b{n}"))
            await reader_asked_again()
            assert len(got.messages) == 5
            paused = False
            await logs.wait_for("fell behind room 'r' by more than its stream keeps")
            delivered = got.payloads()[5:]
            assert 0 < len(delivered) < 100
            assert delivered == [f"b{n}" for n in range(100 - len(delivered), 100)]
            assert broker.missed == 100 - len(delivered)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_reads_ahead_a_bounded_number_of_bytes(redis_url: str, admin: redis.asyncio.Redis) -> None:
    async def read_with_count(monitor: Any, count: int) -> None:
        with anyio.fail_after(5):
            while True:
                command: str = (await monitor.next_command())["command"]
                if command.startswith("XREAD") and "wsendpoints:room:r " in command and f"COUNT {count} " in command:
                    return

    async with RedisBroker(redis_url, read_bytes=200 * 1024) as broker:
        got = Collector()
        async with broker.subscribe("r", got), admin.monitor() as monitor:
            await broker.publish("r", Message("small"))
            await got.wait_for(1)
            await read_with_count(monitor, 3)  # entries as large as the first guess (64 KiB): 3 fit in 200 KiB
        async with broker.subscribe("r", got):
            await broker.publish("r", Message("x" * 128 * 1024))  # more than a monitor line can carry
            await got.wait_for(2)
        async with broker.subscribe("r", got), admin.monitor() as monitor:
            await broker.publish("r", Message("small"))
            await got.wait_for(3)
            await read_with_count(monitor, 1)  # one 128 KiB entry at a time


# -- Redis refusing, hung, or the broker failing -----------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_raises_when_redis_is_out_of_memory_and_recovers(
    own_redis: RedisServer, logs: LogWatcher
) -> None:
    async with redis.asyncio.Redis.from_url(own_redis.url) as admin, RedisBroker(own_redis.url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await broker.join("r", "m1", "ann")
            await admin.config_set("maxmemory", 1)
            try:
                with pytest.raises(BrokerError, match="refused: command not allowed when used memory > 'maxmemory'"):
                    await broker.publish("r", Message("refused"))
                with pytest.raises(BrokerError, match="refused: command not allowed when used memory > 'maxmemory'"):
                    await broker.join("new", "m2", "bob")
                assert broker.dropped == 1
                assert logs.warnings("refused 1 messages")
            finally:
                await admin.config_set("maxmemory", 0)
            await broker.publish("r", Message("accepted"))
            await got.wait_for(1)
            assert got.payloads() == ["accepted"]
            assert await broker.join("new", "m2", "bob") == 1


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_buffers_while_redis_is_a_read_only_replica(own_redis: RedisServer) -> None:
    async with redis.asyncio.Redis.from_url(own_redis.url) as admin, RedisBroker(own_redis.url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # type: ignore[no-untyped-call]  # a primary that is not there
            try:
                await broker.publish("r", Message("during the failover"))
                await broker.publish("r", Message("buffered"))
            finally:
                await admin.execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]
            await got.wait_for(2, within=10)
            assert got.payloads() == ["during the failover", "buffered"]
            assert broker.dropped == 0


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_first_uses_with_redis_hung_each_end_within_connect_timeout(stopped: RedisServer) -> None:
    assert stopped.process is not None
    os.kill(stopped.process.pid, signal.SIGSTOP)
    broker = RedisBroker(stopped.url, connect_timeout=1.0)
    ended: list[float] = []

    async def join(n: int) -> None:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailableError):
            await broker.join("r", f"m{n}", "ann")
        ended.append(time.monotonic() - started)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(join, n)
    assert len(ended) == 10
    assert max(ended) < 1.0 + 1.0, ended
    await broker.aclose()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_joins_with_redis_hung_each_end_within_connect_timeout(stopped: RedisServer) -> None:
    """No lock is held across a round trip: ten joins wait side by side, not one after another."""
    assert stopped.process is not None
    async with RedisBroker(stopped.url, connect_timeout=1.0) as broker:
        await broker.join("warm", "m0", "ann")
        os.kill(stopped.process.pid, signal.SIGSTOP)
        ended: list[float] = []

        async def subscribe(n: int) -> None:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError):
                async with broker.subscribe(f"r{n}", print):
                    pass  # pragma: no cover - never reached: Redis cannot say where the stream stands
            ended.append(time.monotonic() - started)

        async def join(n: int) -> None:
            started = time.monotonic()
            with pytest.raises(BrokerUnavailableError):
                await broker.join(f"r{n}", f"m{n}", "ann")
            ended.append(time.monotonic() - started)

        for attempt in (subscribe, join):
            ended.clear()
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(attempt, n)
            assert len(ended) == 10
            assert max(ended) < 1.0 + 1.0, (attempt.__name__, ended)
        os.kill(stopped.process.pid, signal.SIGCONT)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_starts_a_room_once_for_subscribers_arriving_together(redis_url: str) -> None:
    async with RedisBroker(redis_url) as broker:
        first, second = Collector(), Collector()

        subscribed = [anyio.Event(), anyio.Event()]

        async def stay(deliver: Collector, started: anyio.Event) -> None:
            async with broker.subscribe("r", deliver):
                started.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stay, first, subscribed[0])  # both look the stream up at once; one starts the room
            tg.start_soon(stay, second, subscribed[1])
            with anyio.fail_after(5):
                for started in subscribed:
                    await started.wait()
            assert broker.rooms() == ["r"]
            await broker.publish("r", Message("both"))
            await first.wait_for(1)
            await second.wait_for(1)
            tg.cancel_scope.cancel()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_publish_raises_after_its_reader_failed(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, logs: LogWatcher
) -> None:
    def broken(self: Reader, reading: Any, reply: Any) -> None:
        raise RuntimeError("a bug in the reader")

    monkeypatch.setattr(Reader, "_dispatch", broken)
    async with RedisBroker(redis_url) as broker, broker.subscribe("r", print):

        async def refused() -> str:
            while True:
                try:
                    await broker.publish("r", Message("after"))
                except BrokerError as exc:
                    return str(exc)

        await broker.publish("r", Message("read by a broken reader"))
        with anyio.fail_after(5):
            reason = await refused()
        assert "stopped after an internal error" in reason
        assert "a bug in the reader" in reason
        with pytest.raises(BrokerError, match="stopped after an internal error"):
            await broker.join("r", "m1", "ann")
    assert [r for r in logs.records if r.getMessage() == "RedisBroker stopped after an internal error"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_closing_drops_a_message_a_publisher_is_appending(stopped: RedisServer) -> None:
    """The broker closing (`abandon`) while a publisher appends its message itself: counted dropped, released once."""
    assert stopped.process is not None
    shared = Shared("p", Keys("wsendpoints", "p"), stopped.url, ttl_ms=10_000, max_backoff=1.0)
    writer = Writer(
        shared, buffer_size=10, buffer_bytes=1024, stream_maxlen=10, stream_bytes=1024, stream_ttl=10, max_rooms=0
    )
    async with redis.asyncio.Redis.from_url(stopped.url, protocol=2) as commands:
        clients = Clients(commands, commands, commands.register_script(APPEND), commands.register_script(RESERVE))
        await commands.set(shared.keys.writer, b"1", px=10_000)
        os.kill(stopped.process.pid, signal.SIGSTOP)
        publishing = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"hello", 1))

        async def on_its_way() -> bool:
            return writer.writing

        await eventually(on_its_way, True)
        writer.abandon(None)
        os.kill(stopped.process.pid, signal.SIGCONT)
        with anyio.fail_after(5):
            await publishing  # Redis answers for a message no longer queued
        assert (len(writer.queue), writer.queued_bytes, shared.dropped) == (0, 0, 1)
        assert await commands.xlen(shared.keys.room("r")) == 1


@pytest.mark.anyio
@bounded(30)
async def test_redis_writer_flush_waits_for_a_publisher_appending_its_message(stopped: RedisServer) -> None:
    """Closing sends what is queued after the message a publisher is appending itself: once each, in order."""
    assert stopped.process is not None
    shared = Shared("p", Keys("wsendpoints", "p"), stopped.url, ttl_ms=10_000, max_backoff=1.0)
    writer = Writer(
        shared, buffer_size=10, buffer_bytes=1024, stream_maxlen=10, stream_bytes=1024, stream_ttl=10, max_rooms=0
    )
    key = shared.keys.room("r")
    async with redis.asyncio.Redis.from_url(stopped.url, protocol=2) as commands:
        clients = Clients(commands, commands, commands.register_script(APPEND), commands.register_script(RESERVE))
        await commands.set(shared.keys.writer, b"1", px=10_000)
        os.kill(stopped.process.pid, signal.SIGSTOP)
        first = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"first", 1))

        async def on_its_way() -> bool:
            return writer.writing

        await eventually(on_its_way, True)
        second = asyncio.ensure_future(writer.publish(clients, "r", b"{}", b"second", 2))  # queued behind it
        flushing = asyncio.ensure_future(writer.flush(clients))
        os.kill(stopped.process.pid, signal.SIGCONT)
        with anyio.fail_after(5):
            await asyncio.gather(first, second, flushing)
        entries: Any = await commands.xrange(key)
        assert [fields[b"payload"] for _, fields in entries] == [b"first", b"second"]
        assert not writer.queue


# -- the outage buffer in bytes ------------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_outage_buffer_is_bounded_in_bytes(own_redis: RedisServer, logs: LogWatcher) -> None:
    async with (
        RedisBroker(own_redis.url) as watcher,
        RedisBroker(own_redis.url, buffer_bytes=3500) as broker,
    ):
        got = Collector()
        async with watcher.subscribe("r", got):
            for n in range(5):  # connected: what is kept for a replay stays within the budget too
                await broker.publish("r", Message(f"warm{n}" + "x" * 1000))
            await got.wait_for(5)
            await anyio.to_thread.run_sync(own_redis.stop)
            with anyio.fail_after(5):
                for n in range(8):
                    await broker.publish("r", Message(f"m{n}" + "x" * 1000))
            assert broker.dropped == 5
            assert len(logs.warnings("buffer full (3 messages")) == 1
            await anyio.to_thread.run_sync(own_redis.start)
            await got.wait_for(5 + 3, within=10)
            assert [p[:2] for p in got.payloads()[5:]] == ["m0", "m1", "m2"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"buffer_bytes": 0}, ValueError, "buffer_bytes must be at least 1, got 0"),
        ({"stream_bytes": "1"}, TypeError, "stream_bytes must be an int"),
        ({"read_bytes": -1}, ValueError, "read_bytes must be at least 1"),
        ({"max_rooms": 0}, ValueError, "max_rooms must be at least 1"),
    ],
)
def test_redis_broker_rejects_bad_budgets(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RedisBroker("redis://127.0.0.1:6379/0", **options)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_without_a_room_limit_keeps_no_room_set(redis_url: str, admin: redis.asyncio.Redis) -> None:
    async with RedisBroker(redis_url, max_rooms=None, presence_ttl=0.3) as broker:
        await broker.join("r", "m1", "ann")
        await broker.publish("r", Message("x"))
        async with admin.monitor() as monitor:
            with anyio.fail_after(5):  # a heartbeat, which has no room to count
                while "PEXPIRE wsendpoints:members:r" not in (await monitor.next_command())["command"]:
                    pass
        assert await broker.members("r") == ["ann"]
    assert await admin.exists(b"wsendpoints:rooms") == 0
    entries: Any = await admin.xrange(b"wsendpoints:room:r")
    [(_, fields)] = entries
    assert json.loads(fields[b"meta"])["seq"] == 1
