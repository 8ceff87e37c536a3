"""`RedisBroker`: one set of rooms for every process and host connected to one Redis.

Install it with the extra: `pip install "wsendpoints[redis]"` (redis-py's asyncio client).

What it keeps in Redis, where `{p}` is the `prefix` and `{room}` the room name percent-encoded
(so that `/`, `:`, `*`, `?`, `[` or a shared beginning never make two rooms meet):

- `{p}:room:{room}`: a Redis Stream per room. `publish` appends to it (XADD, trimmed to about
  `stream_maxlen` entries, expiring `stream_ttl` seconds after its last message). Each process
  reads all the rooms it has subscribers in with one blocking XREAD on one connection, from the
  last entry it saw, so every subscriber everywhere gets the stream's one order, and a reader that
  lost its connection carries on where it stopped. An entry is one field, `data`, holding JSON:
  `{"payload": str, "sender": str | null, "origin": process id, "seq": int}`.
- `{p}:members:{room}`: a hash per room, member id -> JSON `{"user": str, "process": process id}`.
- `{p}:process:{id}`: a process's heartbeat, refreshed every `presence_ttl / 3` seconds and
  expiring after `presence_ttl`; members of a process whose heartbeat is gone are pruned.
- `{p}:writer:{id}` and `{p}:wake:{id}`: how a process notices that Redis lost its data (it
  then sends its last second of messages again; readers drop what they already have by
  `origin` and `seq`), and how it makes its reader pick up a room it starts or stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _json
from .._options import check_number, check_size, check_text
from ..exceptions import BrokerClosedError, BrokerError, BrokerUnavailableError
from .base import Broker, Deliver, Message

__all__ = ["RedisBroker"]

logger = logging.getLogger("wsendpoints")

_LOST = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when Redis cannot be reached (`TimeoutError` is an `OSError`)."""

_BLOCK_MS = 10_000
"""How long one XREAD waits for news before it is sent again."""

_READ_COUNT = 500
"""Most entries one XREAD takes from each stream."""

_BATCH = 500
"""Most messages appended to Redis in one round trip."""

_REPLAY_SECONDS = 1.0
"""After Redis lost its data, messages it confirmed this long before the loss are sent again."""

_ORIGINS = 1024
"""Per room, how many publishing processes a reader remembers the last `seq` of."""

_WAKE_TTL_MS = 60_000
_GOODBYE_SECONDS = 1.0
"""How long closing may spend sending what is left and removing this process's presence."""

_MIN_BACKOFF = 0.05

_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local ids = {}
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'stream' or kind == 'none' then
    ids[i - 1] = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i + 1])
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    ids[i - 1] = 0
  end
end
return ids
"""
"""Append a batch of messages (KEYS[2:], ARGV[3:]) unless KEYS[1], the writer's mark, is gone.

Returns nil when the mark is gone (Redis lost its data: nothing is appended), else per message
its entry id, or 0 when the room's key holds something other than a stream.
"""

_StreamId = tuple[int, int]


def _parse_id(raw: bytes) -> _StreamId:
    milliseconds, _, sequence = raw.partition(b"-")
    return int(milliseconds), int(sequence)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _redact(url: str) -> str:
    """Return `url` with its password, if any, replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _parse_entry(fields: dict[bytes, bytes]) -> tuple[str, str | None, str, int] | None:
    """Return a stream entry's `(payload, sender, origin, seq)`, or None if we did not write it."""
    try:
        data = _json.loads(fields[b"data"])
        payload, sender, origin, seq = data["payload"], data["sender"], data["origin"], data["seq"]
    except (KeyError, TypeError, ValueError):
        return None
    typed = isinstance(payload, str) and isinstance(origin, str) and type(seq) is int  # a bool is no seq
    if typed and (sender is None or isinstance(sender, str)):
        return payload, sender, origin, seq
    return None


def _parse_presence(value: bytes) -> tuple[str, str] | None:
    """Return a presence entry's `(user, process)`, or None if we did not write it."""
    try:
        data = _json.loads(value)
        user, process = data["user"], data["process"]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(user, str) and isinstance(process, str):
        return user, process
    return None


class _Keys:
    """The Redis keys of one broker."""

    def __init__(self, prefix: str, process_id: str) -> None:
        self.prefix = prefix
        self.heartbeat = self.heartbeat_of(process_id)
        self.writer = self._key("writer", process_id)
        self.wake = self._key("wake", process_id)

    def _key(self, kind: str, name: str) -> bytes:
        return f"{self.prefix}:{kind}:{name}".encode("utf-8", "surrogatepass")

    def room(self, room: str) -> bytes:
        return self._key("room", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def members(self, room: str) -> bytes:
        return self._key("members", quote(room.encode("utf-8", "surrogatepass"), safe=""))

    def heartbeat_of(self, process_id: str) -> bytes:
        return self._key("process", process_id)


class _Backoff:
    """Exponential backoff from `_MIN_BACKOFF` up to `maximum` seconds, with jitter."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0

    def next(self) -> float:
        delay = min(self.maximum, _MIN_BACKOFF * 2.0**self.attempts)
        self.attempts = min(self.attempts + 1, 32)
        return delay * random.uniform(0.5, 1.0)


@dataclass(eq=False, slots=True)
class _Room:
    """A room this process reads: its stream, where reading stands, and its subscribers here."""

    name: str
    key: bytes
    position: _StreamId
    delivers: list[Deliver] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    """Per publishing process (`origin`), the highest `seq` delivered: what is sent again is dropped."""
    broken: bool = False
    """The key holds something other than a stream; left out of reading until it is repaired."""

    def id_text(self) -> str:
        return f"{self.position[0]}-{self.position[1]}"


@dataclass(eq=False, slots=True)
class _Outgoing:
    """A message on its way to a room's stream."""

    key: bytes
    data: bytes
    done: asyncio.Future[None] | None
    """Resolved once Redis has it (or once Redis is found unreachable); None for nobody waiting."""

    def settle(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)
        self.done = None


@dataclass(frozen=True, slots=True)
class _Clients:
    commands: Redis
    """A pool for commands: appending, presence, heartbeat."""
    reader: Redis
    """The one connection that reads the rooms' streams."""
    append: AsyncScript

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.reader.aclose()


class _Link:
    """What a broker has in the event loop it serves: connections, tasks, subscriptions, buffer, presence."""

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer_size: int) -> None:
        self.loop = loop
        self.lock = asyncio.Lock()
        self.clients: _Clients | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self.rooms: dict[str, _Room] = {}
        self.opening = asyncio.Lock()
        self.queue: deque[_Outgoing] = deque()
        self.queued = asyncio.Event()
        self.recent: deque[tuple[float, _Outgoing]] = deque(maxlen=buffer_size)
        self.connected = True
        self.overflow = 0
        self.lost_at: float | None = None
        self.wake_id = "0-0"
        self.local: dict[str, dict[str, str]] = {}
        self.pending_leaves: set[tuple[str, str]] = set()


class RedisBroker(Broker):
    """Rooms shared by every process and host connected to one Redis, on Redis Streams.

    Every subscriber, in any process, receives a room's messages in the one order of the room's
    stream, its own process's included: nothing takes a local short cut. Each process reads
    with one Redis connection, whatever its number of rooms and members, plus a small pool for
    commands. Everything on the wire is JSON; anything on our keys that we did not write is
    skipped with one WARNING on the logger `wsendpoints` and counted in `malformed`.

    If Redis goes away, subscriptions and members stay. `publish` keeps up to `buffer_size`
    messages in memory (past that it drops them, counting them in `dropped`, with a WARNING),
    the broker reconnects with exponential backoff up to `max_backoff` seconds, and then
    appends them in order and reads on from where each room stopped. If Redis came back empty
    (a restart without persistence), each process sends its last second of messages again and
    readers start the new streams from the beginning, dropping what they already had.

    The broker connects on first use, in the event loop that serves it, so it can be made at
    import time; Redis unreachable then raises `BrokerUnavailableError`. It needs asyncio.

    Example:
        ```python
        from wsendpoints.brokers.redis import RedisBroker

        Lobby = RoomEndpoint.configure(broker=RedisBroker("redis://localhost:6379/0"))
        ```

    Args:
        url: Redis URL, as redis-py takes it: `redis://[[user]:password@]host[:port][/db]`,
            `rediss://` for TLS, `unix:///path.sock`.
        prefix: Beginning of every key, to share one Redis database between applications.
        presence_ttl: Seconds after which the members of a process that stopped (killed, or
            hung) drop out of presence.
        buffer_size: Messages kept while Redis is unreachable.
        stream_maxlen: About how many messages each room's stream keeps.
        stream_ttl: Seconds after its last message that a room's stream is deleted.
        connect_timeout: Seconds to wait for a connection or a reply before calling Redis unreachable.
        max_backoff: Longest wait in seconds between two reconnection attempts.

    Attributes:
        process_id: This broker's id, in its Redis keys and client names (`CLIENT LIST`).
        malformed: How many entries, presence records or keys it skipped as not ours.
        dropped: How many published messages never reached Redis (buffer full, closed with
            Redis unreachable, or a room key holding something other than a stream).

    Raises:
        TypeError: If an option has the wrong type.
        ValueError: If `url` is not a Redis URL, or an option is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "wsendpoints",
        presence_ttl: float = 15.0,
        buffer_size: int = 10_000,
        stream_maxlen: int = 1_000,
        stream_ttl: float = 3_600.0,
        connect_timeout: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        check_text()("url", url)
        parse_url(url)  # raises ValueError for what redis-py cannot take
        check_text()("prefix", prefix)
        if not prefix:
            raise ValueError("prefix must not be empty")
        for name, seconds in [
            ("presence_ttl", presence_ttl),
            ("stream_ttl", stream_ttl),
            ("connect_timeout", connect_timeout),
            ("max_backoff", max_backoff),
        ]:
            check_number(optional=False)(name, seconds)
        check_size(optional=False)("buffer_size", buffer_size)
        check_size(optional=False)("stream_maxlen", stream_maxlen)
        self.url = url
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self.buffer_size = buffer_size
        self.stream_maxlen = stream_maxlen
        self.stream_ttl = stream_ttl
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self.process_id = uuid.uuid4().hex
        self.malformed = 0
        self.dropped = 0
        self._safe_url = _redact(url)
        self._keys = _Keys(prefix, self.process_id)
        self._beat_value = _json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
        self._ttl_ms = max(1, int(presence_ttl * 1000))
        self._seq = 0
        self._closed = False
        self._link: _Link | None = None

    # -- the Broker interface --------------------------------------------------------------

    async def publish(self, room: str, message: Message) -> None:
        """Append `message` to `room`'s stream; while Redis is unreachable, buffer it.

        Returns once Redis has the message, or at once while Redis is unreachable.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If this is the first use and Redis cannot be reached.
            UnicodeEncodeError: If the payload holds a lone surrogate, which no text frame can carry.
        """
        link, _ = await self._ready()
        self._seq += 1
        fields = {"payload": message.payload, "sender": message.sender, "origin": self.process_id, "seq": self._seq}
        data = _json.dumps(fields).encode()
        if len(link.queue) >= self.buffer_size:
            self.dropped += 1
            if not link.overflow:
                logger.warning(
                    "RedisBroker buffer full (%d messages not yet in Redis at %s): dropping messages until it has room",
                    self.buffer_size,
                    self._safe_url,
                )
            link.overflow += 1
            return
        outgoing = _Outgoing(self._keys.room(room), data, link.loop.create_future() if link.connected else None)
        link.queue.append(outgoing)
        link.queued.set()
        if outgoing.done is not None:
            await outgoing.done

    @asynccontextmanager
    async def subscribe(self, room: str, deliver: Deliver) -> AsyncIterator[None]:
        """Call `deliver` with each message appended to `room`'s stream from now until the context exits.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached to find where the room's stream stands.
        """
        link, clients = await self._ready()
        async with link.opening:
            state = link.rooms.get(room)
            if state is None:
                state = await self._open(link, clients, room)
            state.delivers.append(deliver)
        try:
            yield
        finally:
            state.delivers.remove(deliver)
            if not state.delivers:
                del link.rooms[room]
                if not self._closed:
                    await self._wake(clients)

    async def join(self, room: str, member: str, user: str) -> int:
        """Add `member` named `user` to `room`'s presence, shared by every process.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        link, clients = await self._ready()
        key = self._keys.members(room)
        entry = _json.dumps({"user": user, "process": self.process_id}).encode()
        link.local.setdefault(room, {})[member] = user
        try:
            with self._reaching_redis():
                async with clients.commands.pipeline(transaction=False) as pipe:
                    pipe.set(self._keys.heartbeat, self._beat_value, px=self._ttl_ms, get=True)
                    pipe.hset(key, member, entry)
                    pipe.pexpire(key, self._ttl_ms)
                    previous, _, _ = await pipe.execute()
                if previous is None:
                    await self._register(link, clients.commands)
                return len(await self._alive(clients, room))
        except BrokerError:
            await self.leave(room, member)
            raise

    async def leave(self, room: str, member: str) -> None:
        """Remove `member` from `room`'s presence; never raises.

        If Redis cannot be reached, the member is removed there once it can.
        """
        link = self._link
        present = {} if link is None else link.local.get(room, {})
        if member not in present:
            return
        assert link is not None  # a member is only known once connected
        assert link.clients is not None
        del present[member]
        if not present:
            del link.local[room]
        if self._closed:
            return
        try:
            await link.clients.commands.hdel(self._keys.members(room), member)
        except Exception:
            link.pending_leaves.add((room, member))

    async def members(self, room: str) -> list[str]:
        """Return the user names present in `room` in every live process, sorted, each once.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        _, clients = await self._ready()
        with self._reaching_redis():
            return sorted(set(await self._alive(clients, room)))

    async def aclose(self) -> None:
        """Stop reading, send what is buffered and remove this process's members, within about a second.

        Publishing afterwards raises `BrokerClosedError`.
        """
        self._closed = True
        link = self._link
        if link is None or link.supervisor is None or link.supervisor.done():
            return
        if link.loop is not asyncio.get_running_loop():  # the loop it serves stops it
            with contextlib.suppress(RuntimeError):  # that loop was closed without stopping its tasks
                link.loop.call_soon_threadsafe(link.supervisor.cancel)
            return
        link.supervisor.cancel()
        await asyncio.wait([link.supervisor])

    def rooms(self) -> list[str]:
        """Return the rooms this process reads (those with a subscriber here), sorted."""
        return [] if self._link is None else sorted(self._link.rooms)

    # -- connecting ------------------------------------------------------------------------

    async def _ready(self) -> tuple[_Link, _Clients]:
        """Return the link of the running event loop, connecting first if it is new."""
        if self._closed:
            raise BrokerClosedError("the broker was closed")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("RedisBroker runs on asyncio only (redis-py's asyncio client)") from None
        link = self._link
        if link is None or link.loop is not loop:
            if link is not None and not link.loop.is_closed():
                raise RuntimeError("RedisBroker serves one event loop at a time, and the one it serves is still open")
            link = self._link = _Link(loop, self.buffer_size)
        async with link.lock:
            if link.clients is None:
                link.clients = await self._connect(link)
            return link, link.clients

    def _client(self, role: str, socket_timeout: float) -> Redis:
        return Redis.from_url(
            self.url,
            protocol=2,
            single_connection_client=role == "reader",
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=socket_timeout,
            client_name=f"{quote(self.prefix, safe='')}:{role}:{self.process_id}",
        )

    async def _connect(self, link: _Link) -> _Clients:
        commands = self._client("commands", self.connect_timeout)
        reader = self._client("reader", _BLOCK_MS / 1000 + self.connect_timeout)
        clients = _Clients(commands, reader, commands.register_script(_APPEND))
        try:
            await commands.ping()
            await self._register(link, commands)
            await commands.set(self._keys.writer, b"1", px=self._ttl_ms)
        except Exception as exc:
            await clients.aclose()
            raise BrokerUnavailableError(f"cannot reach Redis at {self._safe_url}: {exc}") from exc
        link.supervisor = link.loop.create_task(self._supervise(link, clients))
        await asyncio.sleep(0)  # let it start: a task cancelled before it starts would not clean up
        return clients

    @contextmanager
    def _reaching_redis(self) -> Iterator[None]:
        try:
            yield
        except ResponseError as exc:
            raise BrokerError(f"Redis at {self._safe_url} refused: {exc}") from exc
        except _LOST as exc:
            raise BrokerUnavailableError(f"cannot reach Redis at {self._safe_url}: {exc}") from exc

    async def _supervise(self, link: _Link, clients: _Clients) -> None:
        """Run the reader, writer and heartbeat until cancelled; then say goodbye and disconnect."""
        tasks = [
            link.loop.create_task(self._read_forever(link, clients)),
            link.loop.create_task(self._write_forever(link, clients)),
            link.loop.create_task(self._beat_forever(link, clients)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            while not all(task.done() for task in tasks):
                for task in tasks:  # again and again: Python < 3.12's wait_for, in redis-py, can swallow one
                    task.cancel()
                await asyncio.wait(tasks, timeout=0.1)
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._goodbye(link, clients), _GOODBYE_SECONDS)
            finally:  # even if the loop, shutting down, cancels this task once more
                if link.queue:
                    self.dropped += len(link.queue)
                    logger.warning(
                        "RedisBroker closed with %d messages that Redis at %s did not take",
                        len(link.queue),
                        self._safe_url,
                    )
                for outgoing in link.queue:
                    outgoing.settle()
                await clients.aclose()

    async def _goodbye(self, link: _Link, clients: _Clients) -> None:
        while link.queue:
            await self._write_batch(link, clients)
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.delete(self._keys.heartbeat, self._keys.writer, self._keys.wake)
            for room, present in link.local.items():
                pipe.hdel(self._keys.members(room), *present)
            await pipe.execute()

    async def _wake(self, clients: _Clients) -> None:
        """Make the reader send its XREAD again, with the rooms as they are now."""
        with contextlib.suppress(Exception):  # it will, at the latest when its XREAD times out
            async with clients.commands.pipeline(transaction=False) as pipe:
                pipe.xadd(self._keys.wake, {b"wake": b"1"}, maxlen=1, approximate=False)
                pipe.pexpire(self._keys.wake, _WAKE_TTL_MS)
                await pipe.execute()

    # -- reading ---------------------------------------------------------------------------

    async def _open(self, link: _Link, clients: _Clients, room: str) -> _Room:
        """Start reading `room` from the last entry of its stream."""
        key = self._keys.room(room)
        try:
            last: list[Any] = await clients.commands.xrevrange(key, count=1)  # type: ignore[assignment]
        except ResponseError:  # not a stream: the reader skips it, with a WARNING, until it is one
            last = []
        except _LOST as exc:
            raise BrokerUnavailableError(f"cannot reach Redis at {self._safe_url}: {exc}") from exc
        state = _Room(room, key, _parse_id(last[0][0]) if last else (0, 0))
        link.rooms[room] = state
        await self._wake(clients)
        return state

    async def _read_forever(self, link: _Link, clients: _Clients) -> None:
        backoff = _Backoff(self.max_backoff)
        connected = lost = False
        while True:
            try:
                if not connected:
                    await self._reconnect_reader(link, clients)
                    connected = True
                    backoff.reset()
                    if lost:
                        logger.warning("RedisBroker reads from Redis at %s again", self._safe_url)
                reading = {room.key: room for room in link.rooms.values() if not room.broken}
                streams = {self._keys.wake: link.wake_id} | {key: room.id_text() for key, room in reading.items()}
                reply = await clients.reader.xread(streams, count=_READ_COUNT, block=_BLOCK_MS)  # type: ignore[arg-type]
            except ResponseError as exc:
                await self._find_broken(link, clients, exc)
                await asyncio.sleep(backoff.next())
                continue
            except Exception as exc:
                if connected:
                    link.lost_at = time.monotonic() if link.lost_at is None else link.lost_at
                    logger.warning("RedisBroker lost Redis at %s (%s): reconnecting", self._safe_url, exc)
                connected = False
                lost = True
                await asyncio.sleep(backoff.next())
                continue
            self._dispatch(link, reading, reply)

    async def _reconnect_reader(self, link: _Link, clients: _Clients) -> None:
        await clients.reader.ping()
        await self._reposition(link, clients)
        link.wake_id = "0-0"

    async def _reposition(self, link: _Link, clients: _Clients) -> None:
        """Read each stream on from the last entry seen if it still holds it, else from its start.

        A stream without that entry is new (Redis lost its data, or the stream expired), or was
        trimmed past it while we were away: either way, all it holds is newer. What a reader had
        already (after a failover to a replica that lagged) is dropped by `origin` and `seq`.
        """
        rooms = list(link.rooms.values())
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.exists(self._keys.writer)
            for room in rooms:
                pipe.xrange(room.key, min=room.id_text(), max=room.id_text(), count=1)
            kept, *found = await pipe.execute(raise_on_error=False)
        if kept:  # Redis kept our data: the writer need not send anything again
            link.lost_at = None
        for room, entries in zip(rooms, found, strict=True):
            if not entries:  # the stream is gone, or new with lower ids
                room.position = (0, 0)

    async def _find_broken(self, link: _Link, clients: _Clients, error: ResponseError) -> None:
        """After Redis refused an XREAD: leave out the rooms whose key is not a stream."""
        rooms = [room for room in link.rooms.values() if not room.broken]
        kinds: list[Any] = []
        with contextlib.suppress(Exception):  # Redis went away too: the next XREAD says so
            async with clients.commands.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.type(room.key)
                kinds = await pipe.execute()
        broken = [
            (room, _text(kind))
            for room, kind in zip(rooms, kinds, strict=False)
            if _text(kind) not in ("stream", "none")
        ]
        for room, kind in broken:
            room.broken = True
            self._malformed(f"{kind} where a room's stream belongs (room skipped until repaired)", room.key, kind)
        if not broken:
            logger.warning("Redis at %s refused to read the rooms (%s): trying again", self._safe_url, error)

    def _dispatch(self, link: _Link, reading: dict[bytes, _Room], reply: Any) -> None:
        for key, entries in reply:
            if key == self._keys.wake:
                link.wake_id = entries[-1][0].decode()
                continue
            room = reading[key]  # if it was left meanwhile, it has no subscribers
            for raw_id, fields in entries:
                room.position = _parse_id(raw_id)
                parsed = _parse_entry(fields)
                if parsed is None:
                    self._malformed("stream entry", key, fields)
                    continue
                payload, sender, origin, seq = parsed
                last = room.seen.pop(origin, 0)
                room.seen[origin] = max(last, seq)
                if len(room.seen) > _ORIGINS:
                    del room.seen[next(iter(room.seen))]
                if seq <= last:  # sent again after Redis lost its data, and we had it
                    continue
                message = Message(payload, sender, raw_id.decode())
                for deliver in tuple(room.delivers):
                    try:
                        deliver(message)
                    except Exception:
                        logger.exception("a subscriber of room %r failed to take a message", room.name)

    def _malformed(self, what: str, key: bytes, value: object) -> None:
        self.malformed += 1
        logger.warning("RedisBroker ignored a malformed %s at key %r: %.200r", what, _text(key), value)

    # -- writing ---------------------------------------------------------------------------

    async def _write_forever(self, link: _Link, clients: _Clients) -> None:
        backoff = _Backoff(self.max_backoff)
        while True:
            if not link.queue:
                link.queued.clear()
                await link.queued.wait()
                continue
            try:
                await self._write_batch(link, clients)
            except Exception as exc:
                if link.connected:
                    link.connected = False
                    logger.warning(
                        "RedisBroker could not append to Redis at %s (%s): buffering up to %d messages",
                        self._safe_url,
                        exc,
                        self.buffer_size,
                    )
                for outgoing in link.queue:
                    outgoing.settle()
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()

    async def _write_batch(self, link: _Link, clients: _Clients) -> None:
        """Append the first messages of the queue to their streams, or prepare to after Redis lost its data."""
        batch = list(itertools.islice(link.queue, _BATCH))
        ids = await clients.append(
            keys=[self._keys.writer, *(outgoing.key for outgoing in batch)],
            args=[self.stream_maxlen, max(1, int(self.stream_ttl * 1000)), *(outgoing.data for outgoing in batch)],
        )
        if ids is None:
            await self._restore(link, clients)
            return
        now = time.monotonic()
        for outgoing, entry_id in zip(batch, ids, strict=True):
            link.queue.popleft()
            if entry_id == 0:
                self.dropped += 1
                self._malformed("key where a room's stream belongs (message dropped)", outgoing.key, outgoing.data)
            else:
                link.recent.append((now, outgoing))
            outgoing.settle()
        while link.recent and link.recent[0][0] < now - _REPLAY_SECONDS and link.lost_at is None:
            link.recent.popleft()
        if not link.connected:
            link.connected = True
            logger.warning("RedisBroker appends to Redis at %s again", self._safe_url)
        if link.overflow:
            logger.warning("RedisBroker dropped %d messages while its buffer was full", link.overflow)
            link.overflow = 0

    async def _restore(self, link: _Link, clients: _Clients) -> None:
        """Redis lost our writer mark, so what it confirmed just before may be lost: queue it again."""
        logger.warning(
            "Redis at %s lost this process's data (restarted without persistence, or this process hung for "
            "longer than presence_ttl): sending its last messages again",
            self._safe_url,
        )
        await clients.commands.set(self._keys.writer, b"1", px=self._ttl_ms)
        since = (time.monotonic() if link.lost_at is None else link.lost_at) - _REPLAY_SECONDS
        again = [outgoing for confirmed, outgoing in link.recent if confirmed >= since]
        link.recent.clear()
        link.lost_at = None
        link.queue.extendleft(reversed(again))

    # -- presence --------------------------------------------------------------------------

    async def _beat_forever(self, link: _Link, clients: _Clients) -> None:
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            with contextlib.suppress(Exception):  # the reader and writer tell of outages; this tries again soon
                await self._beat(link, clients)

    async def _beat(self, link: _Link, clients: _Clients) -> None:
        """Refresh the heartbeat and this process's rooms; remove missed leaves; retry broken rooms."""
        rooms = list(link.local)
        leaves = list(link.pending_leaves)
        broken = [room for room in link.rooms.values() if room.broken]
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.heartbeat, self._beat_value, px=self._ttl_ms, get=True)
            pipe.pexpire(self._keys.writer, self._ttl_ms)  # refreshed, never made again: that is _restore's work
            for room_name in rooms:
                pipe.pexpire(self._keys.members(room_name), self._ttl_ms)
            for room_name, member in leaves:
                pipe.hdel(self._keys.members(room_name), member)
            for room in broken:
                pipe.type(room.key)
            results = await pipe.execute(raise_on_error=False)
        link.pending_leaves.difference_update(leaves)
        if results[0] is None:  # expired (we hung), or Redis lost its data
            await self._register(link, clients.commands)
        repaired = [
            room
            for room, kind in zip(broken, results[len(results) - len(broken) :], strict=True)
            if _text(kind) in ("stream", "none")
        ]
        for room in repaired:
            room.broken = False
        if repaired:
            await self._wake(clients)

    async def _register(self, link: _Link, commands: Redis) -> None:
        """Write the heartbeat and every member of this process."""
        async with commands.pipeline(transaction=False) as pipe:
            pipe.set(self._keys.heartbeat, self._beat_value, px=self._ttl_ms)
            for room, present in link.local.items():
                key = self._keys.members(room)
                entries = {
                    member: _json.dumps({"user": user, "process": self.process_id}) for member, user in present.items()
                }
                pipe.hset(key, mapping=entries)  # type: ignore[arg-type]
                pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def _alive(self, clients: _Clients, room: str) -> list[str]:
        """Return the users of `room`'s live members (one per member), pruning those of dead processes."""
        key = self._keys.members(room)
        raw: dict[bytes, bytes] = await clients.commands.hgetall(key)  # type: ignore[assignment]
        entries: list[tuple[bytes, str, str]] = []
        for member, value in raw.items():
            parsed = _parse_presence(value)
            if parsed is None:
                self._malformed("presence entry", key, value)
            else:
                entries.append((member, *parsed))
        processes = sorted({process for _, _, process in entries})
        async with clients.commands.pipeline(transaction=False) as pipe:
            for process in processes:
                pipe.exists(self._keys.heartbeat_of(process))
            beating = await pipe.execute()
        dead = {process for process, count in zip(processes, beating, strict=True) if not count}
        gone = [member for member, _, process in entries if process in dead]
        if gone:
            await clients.commands.hdel(key, *gone)
        return [user for _, user, process in entries if process not in dead]
