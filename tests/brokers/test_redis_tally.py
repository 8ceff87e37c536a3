"""A room's tally, the small hash its appends keep beside its stream: numbering, bytes, TTLs, cost.

Each append reads the tally rather than the stream's last entry, looks at the stream's head only
when it may hold more than `stream_bytes`, and refreshes the room's `max_rooms` score about once
a second. These tests hold it to what the stream promised before: entries numbered 1, 2, 3...
with no number twice, whatever happens to the tally or the stream (lost, deleted, expired,
tampered with), and no room counted for less long than its stream lives.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from tests.bounded import bounded
from tests.brokers.test_redis import admin, eventually
from tests.brokers.test_redis_limits import admits
from wsendpoints import Message, TooManyRoomsError
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.testing import Collector

__all__ = ["admin"]  # a fixture taken from test_redis

pytestmark = pytest.mark.redis

STREAM, TALLY = b"wsendpoints:room:r", b"wsendpoints:tally:r"


async def numbers(admin: redis.asyncio.Redis, key: bytes = STREAM) -> list[tuple[int, int, bytes]]:
    """Return each entry's `(n, at, payload)`, and check that `at` counts the stream's bytes."""
    entries: Any = await admin.xrange(key)
    return [(int(fields[b"n"]), int(fields[b"at"]), fields[b"payload"]) for _, fields in entries]


def sizes(entries: list[Any]) -> list[int]:
    return [len(fields[b"meta"]) + len(fields[b"payload"]) for _, fields in entries]


async def check_counted(admin: redis.asyncio.Redis, key: bytes = STREAM) -> None:
    """`n` goes 1, 2, 3... and `at` is the running sum of the entries' bytes."""
    entries: Any = await admin.xrange(key)
    running = 0
    for n, ((_, fields), size) in enumerate(zip(entries, sizes(entries), strict=True), start=1):
        running += size
        assert (int(fields[b"n"]), int(fields[b"at"])) == (n, running)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_numbers_messages_and_notices_in_one_count(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """Greetings and farewells, appended by the presence scripts, go through the same tally as messages."""
    async with RedisBroker(redis_url) as broker:
        await broker.enter("r", "m1", "ann", greeting=Message("ann joined"), farewell=Message("ann left"))
        await broker.publish("r", Message("one"))
        await broker.enter("r", "m2", "bob", greeting=Message("bob joined"))
        await broker.publish("r", Message("two"))
        await broker.depart("r", "m1")
        await broker.publish("r", Message("three"))
        assert [payload for _, _, payload in await numbers(admin)] == [
            b"ann joined",
            b"one",
            b"bob joined",
            b"two",
            b"ann left",
            b"three",
        ]
        await check_counted(admin)
        n, at = await admin.hmget(TALLY, [b"n", b"at"])
        assert (n, at) == (b"6", str((await numbers(admin))[-1][1]).encode())


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_numbers_on_from_the_stream_when_its_tally_is_lost(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """A tally deleted, or overwritten with something else: the next append reads the stream's last entry."""
    async with RedisBroker(redis_url) as broker:
        for n in range(3):
            await broker.publish("r", Message(f"m{n}"))
        await admin.delete(TALLY)
        await broker.publish("r", Message("m3"))
        await admin.set(TALLY, b"not a hash")
        await broker.publish("r", Message("m4"))
        await broker.publish("r", Message("m5"))
        assert [payload for _, _, payload in await numbers(admin)] == [f"m{n}".encode() for n in range(6)]
        await check_counted(admin)
        assert broker.dropped == 0


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_numbers_on_when_a_tally_outlives_its_stream(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """The stream deleted under a reader while its tally lives: the new stream is numbered on, nothing missed."""
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            for n in range(3):
                await broker.publish("r", Message(f"m{n}"))
            await got.wait_for(3)
            await admin.delete(STREAM)
            await broker.publish("r", Message("m3"))
            await broker.publish("r", Message("m4"))
            await got.wait_for(5)
        assert got.payloads() == [f"m{n}" for n in range(5)]
        assert [(n, payload) for n, _, payload in await numbers(admin)] == [(4, b"m3"), (5, b"m4")]
        assert broker.missed == 0
        history = await broker.history("r")
        assert [message.payload for message in history.messages] == ["m3", "m4"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_drops_a_message_to_a_room_key_that_is_not_a_stream(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """With a tally in place the append learns it from XADD itself: the message is dropped, the room goes on."""
    async with RedisBroker(redis_url) as broker:
        await broker.publish("r", Message("kept"))
        await admin.delete(STREAM)
        await admin.set(STREAM, b"someone else's")
        await broker.publish("r", Message("dropped"))
        assert (broker.dropped, broker.malformed) == (1, 1)
        await admin.delete(STREAM)
        await broker.publish("r", Message("again"))
        assert [(n, payload) for n, _, payload in await numbers(admin)] == [(2, b"again")]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_counts_a_room_and_keeps_its_tally_while_its_stream_lives(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """The room's score and its tally's TTL are refreshed about once a second, each ahead of the stream's TTL.

    One room allowed, a second refused while the first is busy; once the first room's stream
    expires, its tally and its place among the rooms follow within two seconds.
    """
    async with RedisBroker(redis_url, max_rooms=1, stream_ttl=1.0) as broker:
        started = time.monotonic()
        for n in range(30):  # 1.5 s and more: the refreshes take turns with plain appends
            await broker.publish("r", Message(f"m{n}"))
            seconds, micros = await admin.time()
            now = seconds * 1000 + micros // 1000
            stream_ttl, tally_ttl = await admin.pttl(STREAM), await admin.pttl(TALLY)
            score = await admin.zscore(b"wsendpoints:rooms", STREAM)
            assert score is not None
            assert 0 < stream_ttl <= 1000
            assert stream_ttl < tally_ttl <= 3000
            assert now + stream_ttl <= score <= now + 2000
            await anyio.sleep(0.05)
        assert time.monotonic() - started > 1.5
        with pytest.raises(TooManyRoomsError):
            await broker.publish("other", Message("refused"))

        async def gone() -> tuple[int, int]:
            return await admin.exists(STREAM), await admin.exists(TALLY)

        await eventually(gone, (0, 0), within=5)
        await eventually(partial(admits, broker, "other"), True, within=5)


@pytest.mark.anyio
@bounded(60)
async def test_redis_broker_reads_a_stream_head_only_when_it_may_outgrow_its_bytes(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """A long-lived room of small messages, kept short by `stream_maxlen`, long past `stream_bytes` in all.

    Each append used to read the stream's head (XRANGE) once the room had seen `stream_bytes`:
    now only when the tally says the stream may hold more than that, a few times in 1,000
    messages here; and the room's score (ZADD) once a second or so.
    """
    async with RedisBroker(redis_url, stream_maxlen=100, stream_bytes=20_000) as broker:
        await admin.config_resetstat()
        started = time.monotonic()
        for n in range(1000):  # about 110 KB in all
            await broker.publish("r", Message(f"{n:04}" + "x" * 28))
        elapsed = time.monotonic() - started
        stats = await admin.info("commandstats")
        entries: Any = await admin.xrange(STREAM)
        assert 100 <= len(entries) <= 200
        assert sum(sizes(entries)) <= 20_000
        assert [int(fields[b"n"]) for _, fields in entries] == list(range(1001 - len(entries), 1001))
        assert stats["cmdstat_xrange"]["calls"] <= 10
        assert stats["cmdstat_zadd"]["calls"] <= elapsed + 2
        assert "cmdstat_xrevrange" not in stats or stats["cmdstat_xrevrange"]["calls"] <= 1


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_trims_large_messages_to_the_stream_bytes_one_by_one(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """A room of 4 KiB messages at its byte budget: each append drops about one entry, exactly to the budget."""
    async with RedisBroker(redis_url, stream_bytes=40_000) as broker:
        for n in range(60):
            await broker.publish("r", Message(f"{n:03}" + "x" * 4093))
            entries: Any = await admin.xrange(STREAM)
            assert sum(sizes(entries)) <= 40_000 + sizes(entries)[0]
        assert len(entries) in (9, 10)
        assert entries[-1][1][b"payload"][:3] == b"059"
        lo = int(await admin.hget(TALLY, b"lo") or b"0")
        first = entries[0][1]
        assert lo == int(first[b"at"]) - sizes(entries)[0]  # the bytes before the first entry, exactly


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_tally_keeps_the_last_seq_of_live_processes_and_forgets_those_gone(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """One field per publishing process; past 36 fields in all, those without a heartbeat go at the next refresh."""
    async with RedisBroker(redis_url) as first, RedisBroker(redis_url) as second:
        await first.publish("r", Message("one"))
        await second.publish("r", Message("two"))
        await first.publish("r", Message("three"))
        live: dict[Any, Any] = {f"o:{first.process_id}".encode(): b"2", f"o:{second.process_id}".encode(): b"1"}

        async def origins() -> dict[bytes, bytes]:
            fields: Any = await admin.hgetall(TALLY)
            return {name: value for name, value in fields.items() if name.startswith(b"o:")}

        assert await origins() == live
        gone: dict[Any, Any] = {f"o:gone{n}".encode(): b"1" for n in range(30)}
        await admin.hset(TALLY, mapping={**gone, b"due": b"0"})  # 32 processes and n, at, due: kept
        await first.publish("r", Message("four"))
        live[f"o:{first.process_id}".encode()] = b"3"
        assert await origins() == {**live, **gone}
        more: dict[Any, Any] = {f"o:gone{n}".encode(): b"1" for n in range(30, 34)}
        await admin.hset(TALLY, mapping={**more, b"due": b"0"})  # past 36 fields: those gone go
        await second.publish("r", Message("five"))
        live[f"o:{second.process_id}".encode()] = b"2"
        assert await origins() == live
        assert [payload for _, _, payload in await numbers(admin)] == [b"one", b"two", b"three", b"four", b"five"]
