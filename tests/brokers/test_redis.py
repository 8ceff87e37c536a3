from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypedDict, TypeVar

import anyio
import anyio.abc
import pytest
import redis
import redis.asyncio
from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser

from tests.bounded import bounded
from tests.redis_server import RedisServer
from wsendpoints import BrokerClosedError, BrokerError, BrokerUnavailableError, Message
from wsendpoints.brokers.base import message_order
from wsendpoints.brokers.redis import RedisBroker
from wsendpoints.testing import Collector, check_broker

pytestmark = pytest.mark.redis

T = TypeVar("T")


class LogWatcher(logging.Handler):
    """Keeps the records of the logger `wsendpoints` and lets a test wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._arrived = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._arrived.set()

    def warnings(self, containing: str = "") -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == logging.WARNING and containing in r.getMessage()]

    async def wait_for(self, containing: str, within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while not self.warnings(containing):
                self._arrived = anyio.Event()
                await self._arrived.wait()


@pytest.fixture
def logs() -> Iterator[LogWatcher]:
    watcher = LogWatcher()
    logger = logging.getLogger("wsendpoints")
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the session's Redis, to look at and tamper with our keys."""
    client = redis.asyncio.Redis.from_url(redis_url, protocol=2)
    yield client
    await client.aclose()


async def eventually(probe: Callable[[], Awaitable[T]], expected: T, within: float = 5.0) -> None:
    """Poll `probe` until it returns `expected`: for what Redis does on its own clock (key expiry)."""
    with anyio.fail_after(within):
        while await probe() != expected:  # noqa: ASYNC110 - Redis expires keys on its own clock: no event to await
            await anyio.sleep(0.02)


def in_order(payloads: list[str], name: str) -> list[int]:
    return [int(p[len(name) :]) for p in payloads if p.startswith(name)]


# -- the contract and the wire -----------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_passes_the_contract(redis_url: str) -> None:
    await check_broker(RedisBroker(redis_url))


@pytest.mark.anyio
@bounded(30)
async def test_replies_are_parsed_by_hiredis_unless_it_is_hidden(redis_url: str) -> None:
    """The `redis` extra brings hiredis, which redis-py parses with; without it, its own parser.

    `make test` runs these tests once as installed and once with hiredis hidden
    (`-p tests.without_hiredis`): this says which parser each run went through.
    """
    hidden = "hiredis" in sys.modules and sys.modules["hiredis"] is None
    async with RedisBroker(redis_url) as broker:
        await broker.members("room")  # connects
        assert broker._link is not None
        assert broker._link.clients is not None
        pool = broker._link.clients.commands.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        parser = type(connection._parser)
        await pool.release(connection)
    assert parser is (_AsyncRESP2Parser if hidden else _AsyncHiredisParser)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_passes_the_contract_twice_on_one_redis(redis_url: str) -> None:
    """Two applications on one Redis database, kept apart by `prefix`, pass it at the same time."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(check_broker, RedisBroker(redis_url, prefix="one"))
        tg.start_soon(check_broker, RedisBroker(redis_url, prefix="two"))


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_writes_the_text_itself_under_percent_encoded_keys(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("chat/a:b*[c]?é %", got):
            await broker.publish("chat/a:b*[c]?é %", Message("hello", sender="m1"))
            await got.wait_for(1)
        key = b"wsendpoints:room:chat%2Fa%3Ab%2A%5Bc%5D%3F%C3%A9%20%25"
        entries: Any = await admin.xrange(key)
        [(entry_id, fields)] = entries
        assert got.messages == [Message("hello", "m1", entry_id.decode())]
        assert fields[b"payload"] == b"hello"
        assert json.loads(fields[b"meta"]) == {"origin": broker.process_id, "seq": 1, "sender": "m1"}
        assert (fields[b"n"], fields[b"at"]) == (b"1", str(len(fields[b"meta"]) + 5).encode())
        assert list(fields) == [b"meta", b"payload", b"n", b"at"]
        assert 0 < await admin.pttl(key) <= 3_600_000


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_prefixes_keep_applications_apart(redis_url: str) -> None:
    async with RedisBroker(redis_url, prefix="one") as one, RedisBroker(redis_url, prefix="two") as two:
        heard_by_one, heard_by_two = Collector(), Collector()
        async with one.subscribe("r", heard_by_one), two.subscribe("r", heard_by_two):
            await one.join("r", "m1", "ann")
            await two.publish("r", Message("for two"))
            await one.publish("r", Message("for one"))
            await heard_by_one.wait_for(1)
            await heard_by_two.wait_for(1)
            assert heard_by_one.payloads() == ["for one"]
            assert heard_by_two.payloads() == ["for two"]
            assert await two.members("r") == []


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_delivers_across_processes_in_one_order(redis_url: str) -> None:
    """Three brokers publish at once; every subscriber of every broker sees one order."""
    brokers = [RedisBroker(redis_url) for _ in range(3)]
    seen = [Collector() for _ in range(6)]
    try:
        async with (
            brokers[0].subscribe("r", seen[0]),
            brokers[0].subscribe("r", seen[1]),
            brokers[1].subscribe("r", seen[2]),
            brokers[1].subscribe("r", seen[3]),
            brokers[2].subscribe("r", seen[4]),
            brokers[2].subscribe("r", seen[5]),
        ):

            async def publish_all(broker: RedisBroker, name: str) -> None:
                for n in range(200):
                    await broker.publish("r", Message(f"{name}{n}", sender=name))

            async with anyio.create_task_group() as tg:
                for broker, name in zip(brokers, "abc", strict=True):
                    tg.start_soon(publish_all, broker, name)
            for collector in seen:
                await collector.wait_for(600)
    finally:
        for broker in brokers:
            await broker.aclose()
    for collector in seen:
        assert collector.payloads() == seen[0].payloads()
        assert [m.id for m in collector.messages] == [m.id for m in seen[0].messages]
    for name in "abc":
        assert in_order(seen[0].payloads(), name) == list(range(200))


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_refuses_a_lone_surrogate(redis_url: str) -> None:
    async with RedisBroker(redis_url) as broker:
        with pytest.raises(UnicodeEncodeError):
            await broker.publish("r", Message("\ud800"))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"url": "http://localhost"}, ValueError, "Redis URL"),
        ({"url": None}, TypeError, "url must be a str, got None"),
        ({"prefix": ""}, ValueError, "prefix must not be empty"),
        ({"presence_ttl": 0}, ValueError, "presence_ttl must be positive and finite, got 0"),
        ({"connect_timeout": True}, TypeError, "connect_timeout must be a number of seconds, got True"),
        ({"max_backoff": float("inf")}, ValueError, "max_backoff must be positive and finite, got inf"),
        ({"buffer_size": 1.5}, TypeError, "buffer_size must be an int, got 1.5"),
        ({"stream_maxlen": 0}, ValueError, "stream_maxlen must be at least 1, got 0"),
    ],
)
def test_redis_broker_rejects_bad_options(options: dict[str, Any], error: type[Exception], message: str) -> None:
    arguments = {"url": "redis://127.0.0.1:6379/0", **options}
    with pytest.raises(error, match=message):
        RedisBroker(**arguments)


# -- garbage on our keys -----------------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_skips_stream_entries_it_did_not_write(
    redis_url: str, admin: redis.asyncio.Redis, logs: LogWatcher
) -> None:
    def meta(**fields: Any) -> bytes:
        return json.dumps({"origin": "o", "seq": 1, "sender": None} | fields).encode()

    garbage: list[dict[bytes, bytes]] = [
        {b"junk": b"1"},
        {b"data": json.dumps({"payload": "p", "sender": None, "origin": "o", "seq": 1}).encode()},  # the old format
        {b"meta": meta()},
        {b"payload": b"p"},
        {b"meta": b"not json", b"payload": b"p"},
        {b"meta": meta(), b"payload": b"\xff\xfe"},
        {b"meta": b"[1, 2]", b"payload": b"p"},
        {b"meta": b"[" * 100 + b"]" * 100, b"payload": b"p"},
        {b"meta": json.dumps({"origin": "o", "sender": None}).encode(), b"payload": b"p"},
        {b"meta": meta(origin=1), b"payload": b"p"},
        {b"meta": meta(sender=2), b"payload": b"p"},
        {b"meta": meta(seq=True), b"payload": b"p"},
        {b"meta": b'{"origin": "o", "sender": null, "seq": NaN}', b"payload": b"p"},
        {b"meta": meta(to=3), b"payload": b"p"},
        {b"meta": meta(close=1008), b"payload": b"p"},
        {b"meta": meta(to="a", close="x"), b"payload": b"p"},
    ]
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            for fields in garbage:
                await admin.xadd(b"wsendpoints:room:r", fields)  # type: ignore[arg-type]
            await broker.publish("r", Message("after"))
            await got.wait_for(1)
            assert got.payloads() == ["after"]
            assert broker.malformed == len(garbage)
            assert len(logs.warnings("ignored a malformed stream entry")) == len(garbage)
            await broker.publish("r", Message("still listening"))
            await got.wait_for(2)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_drops_what_a_process_sends_again(redis_url: str, admin: redis.asyncio.Redis) -> None:
    """Entries carry their process and sequence number: a second copy is not delivered again."""
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await broker.publish("r", Message("one"))
            await broker.publish("r", Message("two"))
            entries: Any = await admin.xrange(b"wsendpoints:room:r")
            [_, (_, second)] = entries
            await admin.xadd(b"wsendpoints:room:r", second)
            await broker.publish("r", Message("three"))
            await got.wait_for(3)
            assert got.payloads() == ["one", "two", "three"]
            assert broker.malformed == 0


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_sends_its_last_second_again_after_redis_lost_its_data(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    """What Redis confirmed just before it lost its data may not have reached every reader."""
    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            await broker.publish("r", Message("old"))
            await anyio.sleep(1.1)  # "old" leaves the last second
            await broker.publish("r", Message("recent"))
            lost = [f"wsendpoints:writer:{broker.process_id}", "wsendpoints:tally:r"]
            await admin.delete(*lost)  # as after a restart without data (the stream kept, to see the copy)
            await broker.publish("r", Message("new"))
            await got.wait_for(3)
            assert got.payloads() == ["old", "recent", "new"]
        entries: Any = await admin.xrange(b"wsendpoints:room:r")
        assert [fields[b"payload"] for _, fields in entries] == [b"old", b"recent", b"recent", b"new"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_remembers_the_last_1024_publishers_of_a_room(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    def entry(origin: int) -> dict[bytes, bytes]:
        meta = json.dumps({"origin": f"o{origin}", "seq": 1, "sender": None}).encode()
        return {b"meta": meta, b"payload": f"o{origin}".encode()}

    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", got):
            async with admin.pipeline(transaction=False) as pipe:
                for origin in range(1025):
                    pipe.xadd(b"wsendpoints:room:r", entry(origin))  # type: ignore[arg-type]
                pipe.xadd(b"wsendpoints:room:r", entry(1024))  # type: ignore[arg-type]
                pipe.xadd(b"wsendpoints:room:r", entry(0))  # type: ignore[arg-type]
                await pipe.execute()
            await got.wait_for(1026)
            assert got.payloads() == [f"o{n}" for n in range(1025)] + ["o0"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_skips_a_room_whose_key_is_not_a_stream(
    redis_url: str, admin: redis.asyncio.Redis, logs: LogWatcher
) -> None:
    async with RedisBroker(redis_url, presence_ttl=0.3, max_backoff=0.1) as broker:
        in_a, in_b, in_c = Collector(), Collector(), Collector()
        await admin.set(b"wsendpoints:room:c", b"garbage")
        async with broker.subscribe("a", in_a), broker.subscribe("b", in_b), broker.subscribe("c", in_c):
            await admin.set(b"wsendpoints:room:a", b"garbage")
            await broker.publish("b", Message("b1"))
            await in_b.wait_for(1)
            await broker.publish("b", Message("b2"))
            await in_b.wait_for(2)
            assert broker.malformed == 2
            assert len(logs.warnings("where a room's stream belongs (room skipped until repaired)")) == 2
            await broker.publish("a", Message("lost"))
            assert broker.dropped == 1
            assert broker.malformed == 3
            await admin.delete(b"wsendpoints:room:a", b"wsendpoints:room:c")
            await broker.publish("a", Message("a1"))
            await broker.publish("c", Message("c1"))
            await in_a.wait_for(1)
            await in_c.wait_for(1)
            assert in_a.payloads() == ["a1"]
            assert in_c.payloads() == ["c1"]
            assert in_b.payloads() == ["b1", "b2"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_retries_when_redis_refuses_to_read(redis_url: str, logs: LogWatcher) -> None:
    with redis.Redis.from_url(redis_url) as admin:
        admin.execute_command("ACL", "SETUSER", "limited", "on", "nopass", "~*", "&*", "+@all", "-xread")
        try:
            url = redis_url.replace("redis://", "redis://limited:x@")
            async with RedisBroker(url, max_backoff=0.1) as broker:
                got = Collector()
                async with broker.subscribe("r", got):
                    await broker.publish("r", Message("waits"))
                    await logs.wait_for("refused to read the rooms")
                    admin.execute_command("ACL", "SETUSER", "limited", "+xread")
                    await got.wait_for(1)
                    assert got.payloads() == ["waits"]
                    assert broker.malformed == 0
        finally:
            admin.execute_command("ACL", "DELUSER", "limited")


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_skips_presence_entries_it_did_not_write(
    redis_url: str, admin: redis.asyncio.Redis, logs: LogWatcher
) -> None:
    async with RedisBroker(redis_url) as broker:
        assert await broker.join("r", "m1", "ann") == 1
        await admin.hset(
            b"wsendpoints:members:r",
            mapping={
                b"x1": b"not json",
                b"x2": b'{"user": "eve"}',
                b"x3": b'{"user": 1, "process": "p"}',
                b"x4": b"[]",
            },
        )
        assert await broker.members("r") == ["ann"]
        assert broker.malformed == 4
        assert len(logs.warnings("ignored a malformed presence entry")) == 4


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_writes_its_members_again_when_redis_lost_them(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async with RedisBroker(redis_url) as broker:
        await broker.join("r", "m1", "ann")
        await admin.flushall()  # as a restart without data does
        assert await broker.join("r", "m2", "bob") == 2
        assert await broker.members("r") == ["ann", "bob"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_join_raises_when_the_presence_key_is_not_a_hash(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async with RedisBroker(redis_url) as broker:
        await admin.set(b"wsendpoints:members:r", b"garbage")
        with pytest.raises(BrokerError, match="WRONGTYPE"):
            await broker.join("r", "m1", "ann")
        with pytest.raises(BrokerError, match="WRONGTYPE"):
            await broker.members("r")
        await admin.delete(b"wsendpoints:members:r")
        assert await broker.members("r") == []
        assert await broker.join("r", "m2", "bob") == 1


# -- connections and subscriptions --------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_reads_with_one_connection_per_process(redis_url: str, admin: redis.asyncio.Redis) -> None:
    async with RedisBroker(redis_url) as one, RedisBroker(redis_url) as two:
        got = Collector()
        async with anyio.create_task_group() as tg:
            for broker in (one, two):
                for room in ("a", "b", "c"):
                    for _ in range(3):
                        await tg.start(_stay_subscribed, broker, room, got)
            assert one.rooms() == two.rooms() == ["a", "b", "c"]
            for n, broker in enumerate((one, two)):
                await broker.join("a", f"m{n}", "ann")
            await one.publish("a", Message("x"))
            await got.wait_for(6)
            clients = await admin.client_list()
            for broker in (one, two):
                readers = [c for c in clients if c["name"] == f"wsendpoints:reader:{broker.process_id}"]
                assert len(readers) == 1
                assert readers[0]["cmd"] == "xread"
                pool = [c for c in clients if c["name"] == f"wsendpoints:commands:{broker.process_id}"]
                assert 1 <= len(pool) <= 3
            tg.cancel_scope.cancel()


async def _stay_subscribed(
    broker: RedisBroker, room: str, got: Collector, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    async with broker.subscribe(room, got):
        task_status.started()
        await anyio.sleep_forever()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_stops_reading_a_room_when_its_last_subscriber_leaves(
    redis_url: str, admin: redis.asyncio.Redis
) -> None:
    async def next_read(monitor: Any, broker: RedisBroker, wanted: Callable[[str], bool]) -> str:
        """Return the next XREAD of `broker`'s reader that is `wanted`."""
        while True:
            command: str = (await monitor.next_command())["command"]
            if command.startswith("XREAD") and f"wsendpoints:wake:{broker.process_id}" in command and wanted(command):
                return command

    async with RedisBroker(redis_url) as broker, admin.monitor() as monitor:
        async with broker.subscribe("stay", print):
            with anyio.fail_after(5):
                async with broker.subscribe("leave", print), broker.subscribe("leave", print):
                    assert broker.rooms() == ["leave", "stay"]
                    await next_read(monitor, broker, lambda command: "wsendpoints:room:leave " in command)
                assert broker.rooms() == ["stay"]
                command = await next_read(monitor, broker, lambda command: "wsendpoints:room:leave " not in command)
                assert "wsendpoints:room:stay " in command
        assert broker.rooms() == []


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_survives_a_failing_subscriber_and_one_cancelled_publish(redis_url: str) -> None:
    def failing(message: Message) -> None:
        raise RuntimeError("boom")

    async with RedisBroker(redis_url) as broker:
        got = Collector()
        async with broker.subscribe("r", failing), broker.subscribe("r", got):
            with anyio.move_on_after(0):
                await broker.publish("r", Message("cancelled, but sent"))
            await broker.publish("r", Message("next"))
            await got.wait_for(2)
            assert got.payloads() == ["cancelled, but sent", "next"]


# -- presence ------------------------------------------------------------------------------


class LoopThread:
    """An event loop of its own, as another process would have, that can be frozen and thawed."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None

    async def run(self, coroutine: Awaitable[T]) -> T:
        """Run `coroutine` to its end in the loop, which then stands still ("hangs")."""
        return await anyio.to_thread.run_sync(self.loop.run_until_complete, coroutine)

    def thaw(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever)
        self.thread.start()

    async def close(self) -> None:
        """Stop the loop, let what still runs in it finish, and close it."""
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            await anyio.to_thread.run_sync(self.thread.join)
        await self.run(self._settle())
        self.loop.close()

    @staticmethod
    async def _settle() -> None:
        # Bounded: a test that failed half-way may leave a task that would never end; cancel it.
        rest = asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rest, 5)


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_presence_drops_a_hung_process_and_takes_it_back(redis_url: str) -> None:
    hung_loop = LoopThread()
    hung = RedisBroker(redis_url, presence_ttl=0.3)
    try:
        async with RedisBroker(redis_url) as broker:
            assert await hung_loop.run(hung.join("r", "h1", "hung")) == 1
            assert await broker.join("r", "m1", "ann") == 2
            assert await broker.members("r") == ["ann", "hung"]
            started = time.monotonic()
            await eventually(lambda: broker.members("r"), ["ann"])
            assert time.monotonic() - started < 0.3 + 1.0
            hung_loop.thaw()
            await eventually(lambda: broker.members("r"), ["ann", "hung"])
            await hung.aclose()  # from another loop: the loop it serves stops it
            await eventually(lambda: broker.members("r"), ["ann"])
            with pytest.raises(BrokerClosedError):
                await hung.publish("r", Message("x"))
    finally:
        await hung_loop.close()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_serves_one_open_event_loop_at_a_time(redis_url: str) -> None:
    other_loop = LoopThread()
    broker = RedisBroker(redis_url)
    try:
        await other_loop.run(broker.join("r", "m1", "ann"))
        with pytest.raises(RuntimeError, match="one event loop at a time"):
            await broker.members("r")
        await other_loop.run(broker.aclose())
    finally:
        await other_loop.close()


def test_redis_broker_made_outside_an_event_loop_serves_each_loop_in_turn(redis_url: str) -> None:
    """As with `TestClient`, each session its own loop: closing a loop removes its members."""
    broker = RedisBroker(redis_url)

    async def session(member: str) -> int:
        got = Collector()
        async with broker.subscribe("r", got):
            count = await broker.join("r", member, "ann")
            await broker.publish("r", Message(member))
            await got.wait_for(1)
            assert got.payloads() == [member]
        return count

    async def first_session() -> int:
        return await session("m1")

    async def last_session() -> int:
        count = await session("m2")
        await broker.aclose()
        return count

    # One comprehension, not two statements: Python 3.11's line tracing can lose the line after an
    # `asyncio.run` whose loop cancelled the broker's reader, which would make coverage miss it.
    assert [asyncio.run(run()) for run in (first_session, last_session)] == [1, 1]


def test_redis_broker_needs_asyncio(redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="asyncio only"):
        anyio.run(RedisBroker(redis_url).members, "r", backend="trio")


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_leave_never_raises(redis_url: str) -> None:
    broker = RedisBroker(redis_url)
    await broker.leave("r", "never joined")
    await broker.join("r", "m1", "ann")
    await broker.leave("r", "someone else")
    await broker.aclose()
    await broker.leave("r", "m1")


# -- faults --------------------------------------------------------------------------------


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_unreachable_at_startup_raises_quickly(logs: LogWatcher) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"redis://:secret@127.0.0.1:{port}/0"
        broker = RedisBroker(url)
        for use in (broker.publish("r", Message("x")), broker.join("r", "m", "u")):
            with anyio.fail_after(2), pytest.raises(BrokerUnavailableError, match="cannot reach Redis at") as caught:
                await use
            assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)
            assert "secret" not in str(caught.value)
        with anyio.fail_after(2), pytest.raises(BrokerUnavailableError):
            async with broker.subscribe("r", print):
                pass  # pragma: no cover - never reached
        await broker.aclose()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_connects_once_redis_is_there(own_redis: RedisServer) -> None:
    await anyio.to_thread.run_sync(own_redis.stop)
    broker = RedisBroker(own_redis.url)
    with pytest.raises(BrokerUnavailableError):
        await broker.members("r")
    await anyio.to_thread.run_sync(own_redis.start)
    async with anyio.create_task_group() as tg:  # two first uses at once: one connection
        tg.start_soon(broker.join, "r", "m1", "ann")
        tg.start_soon(broker.join, "r", "m2", "bob")
    assert await broker.members("r") == ["ann", "bob"]
    await broker.aclose()


@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_loses_nothing_when_redis_restarts_empty(
    own_redis: RedisServer, logs: LogWatcher, how: str
) -> None:
    """Redis goes away for 2 s while two processes publish and comes back without its data."""
    options: dict[str, Any] = {"presence_ttl": 1.5, "max_backoff": 0.5}
    async with RedisBroker(own_redis.url, **options) as one, RedisBroker(own_redis.url, **options) as two:
        seen = {"one-a": Collector(), "one-b": Collector(), "two": Collector()}
        async with (
            one.subscribe("r", seen["one-a"]),
            one.subscribe("r", seen["one-b"]),
            two.subscribe("r", seen["two"]),
        ):
            await one.join("r", "m1", "ann")
            await two.join("r", "m2", "bob")
            restarted = anyio.Event()
            counts = {"x": 0, "y": 0}

            async def publish(broker: RedisBroker, name: str) -> None:
                after = 0
                while after < 100:
                    await broker.publish("r", Message(f"{name}{counts[name]}", sender=name))
                    counts[name] += 1
                    after += restarted.is_set()
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish, one, "x")
                tg.start_soon(publish, two, "y")
                await anyio.sleep(0.3)
                await anyio.to_thread.run_sync(own_redis.kill if how == "kill" else own_redis.stop)
                await anyio.sleep(2)
                await anyio.to_thread.run_sync(own_redis.start)
                restarted.set()
            total = counts["x"] + counts["y"]
            for collector in seen.values():
                await collector.wait_for(total, within=15)
            await eventually(lambda: one.members("r"), ["ann", "bob"])
        assert seen["one-a"].payloads() == seen["one-b"].payloads()
        for collector in seen.values():
            assert len(collector.messages) == total
            for name in "xy":
                assert in_order(collector.payloads(), name) == list(range(counts[name]))
        assert one.dropped == two.dropped == one.malformed == two.malformed == 0
    assert logs.warnings("lost Redis at")
    assert logs.warnings("could not append to Redis")
    assert logs.warnings("appends to Redis at")
    assert logs.warnings("reads from Redis at")
    assert logs.warnings("lost this process's data")


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_delivers_nothing_twice_when_redis_restarts_with_its_data(
    own_redis: RedisServer, logs: LogWatcher
) -> None:
    async with RedisBroker(own_redis.url, max_backoff=0.2) as one, RedisBroker(own_redis.url, max_backoff=0.2) as two:
        got_one, got_two = Collector(), Collector()
        async with one.subscribe("r", got_one), two.subscribe("r", got_two), one.subscribe("empty", print):
            for n in range(50):
                await one.publish("r", Message(f"x{n}"))
                await two.publish("r", Message(f"y{n}"))
            await got_one.wait_for(100)
            await got_two.wait_for(100)
            await anyio.to_thread.run_sync(lambda: own_redis.restart(save=True))
            await logs.wait_for("reads from Redis at")
            for n in range(50, 100):
                await one.publish("r", Message(f"x{n}"))
                await two.publish("r", Message(f"y{n}"))
            await got_one.wait_for(200)
            await got_two.wait_for(200)
            await one.publish("r", Message("last"))
            await got_one.wait_for(201)
            await got_two.wait_for(201)
        assert not logs.warnings("lost this process's data")
        for got in (got_one, got_two):
            assert len(got.messages) == 201
            assert in_order(got.payloads(), "x") == list(range(100))
            assert in_order(got.payloads(), "y") == list(range(100))


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_presence_while_redis_is_away(own_redis: RedisServer) -> None:
    """Joining fails, leaving is remembered, and what is left reaches Redis once it is back."""
    async with RedisBroker(own_redis.url, presence_ttl=0.6, max_backoff=0.2) as broker:
        await broker.join("r", "m1", "ann")
        await broker.join("r", "m2", "bob")
        await anyio.to_thread.run_sync(lambda: own_redis.stop(save=True))
        await broker.leave("r", "m2")
        with pytest.raises(BrokerUnavailableError):
            await broker.join("r", "m3", "eve")
        with pytest.raises(BrokerUnavailableError):
            await broker.members("r")
        with pytest.raises(BrokerUnavailableError):
            async with broker.subscribe("r", print):
                pass  # pragma: no cover - never reached
        await anyio.to_thread.run_sync(own_redis.start)
        await eventually(lambda: broker.members("r"), ["ann"])


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_counts_and_logs_a_buffer_overflow(own_redis: RedisServer, logs: LogWatcher) -> None:
    async with RedisBroker(own_redis.url) as watcher, RedisBroker(own_redis.url, buffer_size=5) as broker:
        got = Collector()
        async with watcher.subscribe("r", got):
            await broker.members("r")  # connected
            await anyio.to_thread.run_sync(own_redis.stop)
            with anyio.fail_after(5):
                for n in range(8):
                    await broker.publish("r", Message(f"m{n}"))
            assert broker.dropped == 3
            assert len(logs.warnings("buffer full (5 messages")) == 1
            await anyio.to_thread.run_sync(own_redis.start)
            await got.wait_for(5, within=10)
            assert got.payloads() == [f"m{n}" for n in range(5)]
            await logs.wait_for("dropped 3 messages while its buffer was full")


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_aclose_is_prompt(redis_url: str) -> None:
    broker = RedisBroker(redis_url)
    async with broker.subscribe("r", print):
        await broker.join("r", "m1", "ann")
        with anyio.fail_after(1):
            await broker.aclose()
    with pytest.raises(BrokerClosedError):
        await broker.publish("r", Message("x"))
    with pytest.raises(BrokerClosedError):
        await broker.members("r")
    await broker.aclose()
    async with RedisBroker(redis_url) as other:
        assert await other.members("r") == []


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_aclose_sends_what_is_queued(redis_url: str) -> None:
    async with RedisBroker(redis_url) as watcher:
        got = Collector()
        async with watcher.subscribe("r", got):
            broker = RedisBroker(redis_url)
            await broker.publish("r", Message("first"))
            publishing = [asyncio.ensure_future(broker.publish("r", Message(f"m{n}"))) for n in range(50)]
            await asyncio.sleep(0)  # they queue their messages, which the writer has yet to take
            await broker.aclose()
            await asyncio.gather(*publishing)
            await got.wait_for(51)
            assert got.payloads() == ["first"] + [f"m{n}" for n in range(50)]
            assert broker.dropped == 0


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_aclose_is_prompt_without_redis(own_redis: RedisServer, logs: LogWatcher) -> None:
    broker = RedisBroker(own_redis.url)
    await broker.join("r", "m1", "ann")
    await anyio.to_thread.run_sync(own_redis.stop)
    for n in range(3):
        await broker.publish("r", Message(f"m{n}"))
    with anyio.fail_after(1.5):
        await broker.aclose()
    assert broker.dropped == 3
    assert logs.warnings("closed with 3 messages that Redis at")


# -- the test server -------------------------------------------------------------------------


def test_redis_server_says_what_went_wrong() -> None:
    with pytest.raises(RuntimeError, match="'no-such-redis-server' is not installed"):
        RedisServer("no-such-redis-server")
    server = RedisServer()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        with pytest.raises(RuntimeError, match="redis-server did not start"):
            server.start()
    with server:
        with pytest.raises(RuntimeError, match="the server is running"):
            server.start()
        server.kill()
        server.kill()
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()


# -- presence per name -------------------------------------------------------------------


class Notices(TypedDict):
    greeting: Message
    farewell: Message


def notices(member: str, user: str) -> Notices:
    return {"greeting": Message(f"{user} joined", sender=member), "farewell": Message(f"{user} left", sender=member)}


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_announces_a_name_once_across_processes(redis_url: str) -> None:
    async with RedisBroker(redis_url) as one, RedisBroker(redis_url) as two:
        heard_one, heard_two = Collector(), Collector()
        async with one.subscribe("r", heard_one), two.subscribe("r", heard_two):
            assert (await one.enter("r", "a1", "alice", **notices("a1", "alice"))).first
            entry = await two.enter("r", "a2", "alice", **notices("a2", "alice"))
            assert (entry.count, entry.first, entry.users) == (2, False, ("alice",))
            taken = await two.enter("r", "a3", "alice", unique=True)
            assert taken.refused == "name taken"
            assert not await one.depart("r", "a1")
            assert await two.members("r") == ["alice"]
            await one.publish("r", Message("between"))
            assert await two.depart("r", "a2")
            for heard in (heard_one, heard_two):
                await heard.wait_for(3)
                assert heard.payloads() == ["alice joined", "between", "alice left"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_entry_marks_what_a_joiner_already_knows(redis_url: str) -> None:
    """A member that enters a room its process already reads skips the notices published before it entered."""
    async with RedisBroker(redis_url) as broker:
        early = Collector()
        async with broker.subscribe("r", early):
            await broker.enter("r", "b1", "bob", **notices("b1", "bob"))
            late = Collector()
            async with broker.subscribe("r", late):
                entry = await broker.enter("r", "c1", "cleo", **notices("c1", "cleo"))
                assert entry.users == ("bob", "cleo")
                await broker.publish("r", Message("after both"))
                while "after both" not in late.payloads():  # before it, perhaps "bob joined": it came before cleo
                    await late.wait_for(len(late.messages) + 1)
                assert entry.after is not None  # cleo's own greeting included: its member skips it anyway
                newer = [m.payload for m in late.messages if message_order(m.id or "") > message_order(entry.after)]
                assert newer == ["after both"]
                assert [m.payload for m in early.messages] == ["bob joined", "cleo joined", "after both"]


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_sends_a_dead_process_names_farewells_once(redis_url: str) -> None:
    """Killed: its members drop out within the presence TTL, and each name it alone had leaves once."""
    hung_loop = LoopThread()
    hung = RedisBroker(redis_url, presence_ttl=0.3)
    try:
        async with RedisBroker(redis_url, presence_ttl=0.3) as one, RedisBroker(redis_url, presence_ttl=0.3) as two:
            heard_one, heard_two = Collector(), Collector()
            async with one.subscribe("r", heard_one), two.subscribe("r", heard_two):
                await one.enter("r", "b1", "bob", **notices("b1", "bob"))
                await two.enter("r", "c1", "cleo", **notices("c1", "cleo"))
                for member, user in (("h1", "hal"), ("h2", "hal"), ("h3", "bob")):
                    await hung_loop.run(hung.enter("r", member, user, **notices(member, user)))
                for heard in (heard_one, heard_two):  # its heartbeat has stopped: it is dead after presence_ttl
                    await heard.wait_for(4, within=5)
                    assert heard.payloads() == ["bob joined", "cleo joined", "hal joined", "hal left"]
                assert await two.members("r") == ["bob", "cleo"]
                await one.publish("r", Message("last"))
                for heard in (heard_one, heard_two):
                    await heard.wait_for(5)
                    assert heard.payloads()[4:] == ["last"]
    finally:
        hung_loop.thaw()
        await hung.aclose()
        await hung_loop.close()


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_applies_a_missed_leave_with_its_farewell(own_redis: RedisServer) -> None:
    async with (
        RedisBroker(own_redis.url) as watcher,
        RedisBroker(own_redis.url, presence_ttl=0.6, max_backoff=0.2) as broker,
    ):
        heard = Collector()
        async with watcher.subscribe("r", heard):
            await broker.enter("r", "a1", "alice", **notices("a1", "alice"))
            await heard.wait_for(1)
            await anyio.to_thread.run_sync(lambda: own_redis.stop(save=True))
            assert not await broker.depart("r", "a1")  # not known to be the last: Redis is away
            await anyio.to_thread.run_sync(own_redis.start)
            await heard.wait_for(2, within=10)
            assert heard.payloads() == ["alice joined", "alice left"]
            assert await watcher.members("r") == []


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_says_goodbye_for_the_names_it_still_has(redis_url: str) -> None:
    async with RedisBroker(redis_url) as watcher:
        heard = Collector()
        async with watcher.subscribe("r", heard):
            broker = RedisBroker(redis_url)
            await broker.enter("r", "a1", "alice", **notices("a1", "alice"))
            await broker.enter("r", "a2", "alice", **notices("a2", "alice"))
            await broker.aclose()
            await heard.wait_for(2)
            assert heard.payloads() == ["alice joined", "alice left"]
            assert await watcher.members("r") == []


@pytest.mark.anyio
@bounded(30)
async def test_redis_broker_publish_to_carries_the_address_and_cannot_count(redis_url: str) -> None:
    async with RedisBroker(redis_url) as one, RedisBroker(redis_url) as two:
        heard = Collector()
        async with two.subscribe("r", heard):
            await two.enter("r", "a1", "alice")
            assert await one.publish_to("r", "alice", Message("psst")) is None
            assert await one.publish_to("r", "alice", Message("out", close=4001)) is None
            await heard.wait_for(2)
            assert [(m.payload, m.to, m.close) for m in heard.messages] == [
                ("psst", "alice", None),
                ("out", "alice", 4001),
            ]
