"""`RedisBroker`: one set of rooms for every process and host connected to one Redis.

Install it with the extra: `pip install "wsendpoints[redis]"` (redis-py's asyncio client).

The broker is made of parts, each in its module, which this one wires together:

- `keys`: the name of every key it keeps in Redis;
- `wire`: what it writes into them (bytes in, bytes out, no I/O);
- `writer`: publishing, the outage buffer, sending again after Redis lost its data;
- `reader`: one blocking XREAD per process for all its rooms, and the dispatch to subscribers;
- `presence`: members, heartbeats and their TTLs;
- `history`: a room's recent messages, read back from its stream;
- `connection`: the settings and counters the parts share, the connections, backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..._options import check_number, check_size, check_text
from ...exceptions import BrokerClosedError, BrokerError, BrokerUnavailableError
from ..base import Broker, Deliver, Entry, History, Message
from .connection import FAILED, Clients, Shared, logger, redact
from .history import read_history, stream_position
from .keys import Keys
from .presence import Presence
from .reader import BLOCK_MS, Reader
from .wire import encode_entry
from .writer import APPEND, RESERVE, Writer

__all__ = ["RedisBroker"]

_GOODBYE_SECONDS = 1.0
"""How long closing may spend sending what is left and removing this process's presence."""


class _Link:
    """What a broker has in the event loop it serves: its connections, its parts, the task running them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: Writer, reader: Reader, presence: Presence) -> None:
        self.loop = loop
        self.connecting: asyncio.Task[Clients] | None = None
        """The one connection attempt that every first use waits for (no lock is held across it)."""
        self.clients: Clients | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        """What ended the supervisor, if it ended on its own: a bug, which every later use reports."""
        self.writer = writer
        self.reader = reader
        self.presence = presence


class RedisBroker(Broker):
    """Rooms shared by every process and host connected to one Redis, on Redis Streams.

    Every subscriber, in any process, receives a room's messages in the one order of the room's
    stream, its own process's included: nothing takes a local short cut. Each process reads
    with one Redis connection, whatever its number of rooms and members, plus a small pool for
    commands. A stream entry is the message's own UTF-8 bytes and a small JSON `meta` field;
    anything on our keys that we did not write is skipped with one WARNING on the logger
    `wsendpoints` and counted in `malformed`.

    What one client can make Redis hold is bounded: each room's stream keeps `stream_bytes`
    (plus one message) and about `stream_maxlen` messages, and one `prefix` holds at most
    `max_rooms` live rooms (a stream or members): one more raises `TooManyRoomsError`. Redis
    refusing (out of memory, say) raises `BrokerError` in `publish` and `join`; Redis hung
    raises `BrokerUnavailableError` within `connect_timeout`, and no lock is held meanwhile.

    If Redis goes away, subscriptions and members stay. `publish` keeps up to `buffer_size`
    messages and `buffer_bytes` bytes in memory (past that it drops them, counting them in `dropped`, with a WARNING),
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
        buffer_bytes: Bytes of messages kept while Redis is unreachable.
        stream_maxlen: About how many messages each room's stream keeps (at least this many, within
            `stream_bytes`): the room's history, so at least the endpoints' `history_size`.
        stream_bytes: Bytes of messages each room's stream keeps, plus the one that straddles the line.
        stream_ttl: Seconds after its last message that a room's stream is deleted, so for how
            long a member can recover what it missed: at least the endpoints' `history_ttl`.
        max_rooms: Most live rooms (with a stream or members) under `prefix`; None for no limit.
        read_bytes: About how many bytes one process reads from Redis at once.
        connect_timeout: Seconds to wait for a connection or a reply before calling Redis unreachable.
        max_backoff: Longest wait in seconds between two reconnection attempts.

    Attributes:
        process_id: This broker's id, in its Redis keys and client names (`CLIENT LIST`).
        malformed: How many entries, presence records or keys it skipped as not ours.
        dropped: How many published messages never reached Redis (buffer full, closed with
            Redis unreachable, refused by Redis, past `max_rooms`, or a room key holding
            something other than a stream).
        missed: How many messages this process found trimmed from a stream before it read them.

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
        buffer_bytes: int = 32 * 1024 * 1024,
        stream_maxlen: int = 1_000,
        stream_bytes: int = 1024 * 1024,
        stream_ttl: float = 3_600.0,
        max_rooms: int | None = 1_000,
        read_bytes: int = 4 * 1024 * 1024,
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
        for name, size in [
            ("buffer_size", buffer_size),
            ("buffer_bytes", buffer_bytes),
            ("stream_maxlen", stream_maxlen),
            ("stream_bytes", stream_bytes),
            ("read_bytes", read_bytes),
        ]:
            check_size(optional=False)(name, size)
        check_size()("max_rooms", max_rooms)
        self.url = url
        self.prefix = prefix
        self.presence_ttl = presence_ttl
        self.buffer_size = buffer_size
        self.buffer_bytes = buffer_bytes
        self.stream_maxlen = stream_maxlen
        self.stream_bytes = stream_bytes
        self.stream_ttl = stream_ttl
        self.max_rooms = max_rooms
        self.read_bytes = read_bytes
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self.process_id = uuid.uuid4().hex
        self._shared = Shared(
            process_id=self.process_id,
            keys=Keys(prefix, self.process_id),
            safe_url=redact(url),
            ttl_ms=max(1, int(presence_ttl * 1000)),
            max_backoff=max_backoff,
        )
        self._seq = 0
        self._closed = False
        self._link: _Link | None = None

    @property
    def malformed(self) -> int:
        """How many entries, presence records or keys it skipped as not ours."""
        return self._shared.malformed

    @property
    def dropped(self) -> int:
        """How many published messages never reached Redis."""
        return self._shared.dropped

    @property
    def missed(self) -> int:
        """How many messages this process's reader found trimmed from a stream before it read them."""
        return self._shared.missed

    # -- the Broker interface --------------------------------------------------------------

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        """Append `message` to `room`'s stream; while Redis is unreachable, buffer it.

        Returns once Redis has the message, or at once while Redis is unreachable. The stream
        entry's id is the message's id. The stream is the room's history, kept as `stream_maxlen`
        and `stream_ttl` say (set them at least `history_size` and `history_ttl`: they are the
        broker's, for every room, and `history_size`/`history_ttl` are not looked at here).

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If this is the first use and Redis cannot be reached.
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerError: If Redis refused the message (e.g. out of memory), or the broker stopped.
            UnicodeEncodeError: If the payload holds a lone surrogate, which no text frame can carry.
        """
        link, clients = await self._ready()
        self._seq += 1
        meta, payload = encode_entry(
            message.payload, message.sender, self.process_id, self._seq, message.to, message.close
        )
        await link.writer.publish(clients, room, meta, payload, self._seq)

    @asynccontextmanager
    async def subscribe(
        self, room: str, deliver: Deliver, paused: Callable[[], bool] | None = None
    ) -> AsyncIterator[None]:
        """Call `deliver` with each message appended to `room`'s stream from now until the context exits.

        While `paused()` returns True (it is asked before each read of the room, and every 50 ms
        while it holds), the room's new messages stay in Redis: the stream holds the backlog. If
        the backlog outgrows the stream (`stream_bytes`, `stream_maxlen`), what was trimmed
        before it was read is counted in `missed`, with a WARNING.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached to find where the room's stream stands.
        """
        link, clients = await self._ready()
        await link.reader.add(clients, room, deliver, paused)
        try:
            yield
        finally:
            await link.reader.remove(self._still_connected(link), room, deliver, paused)

    async def join(self, room: str, member: str, user: str) -> int:
        """Add `member` named `user` to `room`'s presence, shared by every process.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        return (await self.enter(room, member, user)).count

    async def enter(
        self,
        room: str,
        member: str,
        user: str,
        *,
        greeting: Message | None = None,
        farewell: Message | None = None,
        unique: bool = False,
        max_members: int | None = None,
        history_size: int = 0,
        history_ttl: float = 0.0,
    ) -> Entry:
        """Add `member` named `user` to `room`'s presence, shared by every process, in one atomic step.

        The greeting, if the name is new in the room, and the farewell, when its last member
        leaves or drops out with its dead process, are appended to the room's stream by
        the same step (see `scripts`), so each is sent once, however many processes serve the
        name. `Entry.after` is the room's last stream entry as the member entered. The stream
        is the history, as for `publish`: `history_size` and `history_ttl` are not looked at.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            TooManyRoomsError: If `room` would be a new room past `max_rooms`.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
            UnicodeEncodeError: If a notice holds a lone surrogate.
        """
        link, clients = await self._ready()
        notices = [None if notice is None else self._notice_entry(notice) for notice in (greeting, farewell)]
        try:
            return await link.presence.enter(
                clients,
                room,
                member,
                user,
                greeting=notices[0],
                farewell=notices[1],
                unique=unique,
                max_members=max_members,
            )
        except BrokerError:
            link.presence.forget(room, member)  # no round trip more on a failing path: the heartbeat sends it
            raise

    def _notice_entry(self, notice: Message) -> tuple[bytes, bytes]:
        """Return the stream entry (`meta`, `payload`) of a presence notice: `seq` 0, as it is never sent again."""
        return encode_entry(notice.payload, notice.sender, self.process_id, 0)

    async def depart(self, room: str, member: str) -> bool:
        """Remove `member` from `room`'s presence; append its farewell if it was its name's last member.

        Never raises: if Redis cannot be reached, the member is removed there (and the farewell
        appended) once it can, and this returns False.
        """
        link = self._link
        if link is None:  # never connected: no member is known
            return False
        return await link.presence.leave(self._still_connected(link), room, member)

    async def publish_to(self, room: str, user: str, message: Message) -> int | None:
        """Append `message`, addressed to `user`, to `room`'s stream; return None.

        The members of `user` may be in any process: how many there are is not known here.
        """
        await self.publish(room, Message(message.payload, message.sender, None, user, message.close))
        return None

    async def leave(self, room: str, member: str) -> None:
        """Remove `member` from `room`'s presence; never raises.

        If Redis cannot be reached, the member is removed there once it can.
        """
        await self.depart(room, member)

    async def members(self, room: str) -> list[str]:
        """Return the user names present in `room` in every live process, sorted, each once.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's presence key holds something else.
        """
        link, clients = await self._ready()
        return await link.presence.members(clients, room)

    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        """Return `room`'s messages still in its stream: see `Broker.history`.

        Raises:
            BrokerClosedError: If the broker was closed.
            BrokerUnavailableError: If Redis cannot be reached.
            BrokerError: If Redis refuses, e.g. because the room's key holds something other than a stream.
        """
        _, clients = await self._ready()
        return await read_history(self._shared, clients, room, since, limit)

    def position(self, message_id: str) -> tuple[int, ...] | None:
        """Return a stream entry id as `(milliseconds, sequence)`, or None if it is not one."""
        return stream_position(message_id)

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

    def _still_connected(self, link: _Link) -> Clients | None:
        """Return the link's clients, or None once they are closed or closing."""
        return None if self._closed or link.failure is not None else link.clients

    def rooms(self) -> list[str]:
        """Return the rooms this process reads (those with a subscriber here), sorted."""
        return [] if self._link is None else sorted(self._link.reader.rooms)

    # -- connecting ------------------------------------------------------------------------

    async def _ready(self) -> tuple[_Link, Clients]:
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
            link = self._link = self._new_link(loop)
        if link.failure is not None:
            raise BrokerError(f"RedisBroker stopped after an internal error: {link.failure!r}")
        if link.clients is not None:
            return link, link.clients
        if link.connecting is None:
            link.connecting = loop.create_task(self._connect(link))
        return link, await asyncio.shield(link.connecting)

    def _new_link(self, loop: asyncio.AbstractEventLoop) -> _Link:
        max_rooms = self.max_rooms or 0
        writer = Writer(
            self._shared,
            buffer_size=self.buffer_size,
            buffer_bytes=self.buffer_bytes,
            stream_maxlen=self.stream_maxlen,
            stream_bytes=self.stream_bytes,
            stream_ttl=self.stream_ttl,
            max_rooms=max_rooms,
        )
        presence = Presence(
            self._shared, max_rooms, stream_maxlen=self.stream_maxlen, stream_ttl_ms=writer.stream_ttl_ms
        )
        return _Link(loop, writer, Reader(self._shared, writer, self.read_bytes), presence)

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

    async def _connect(self, link: _Link) -> Clients:
        """Connect, register this process and start the parts, all within `connect_timeout`.

        Every first use waits for this one task; a failed attempt is forgotten, so the next use tries again.
        """
        commands = self._client("commands", self.connect_timeout)
        reader = self._client("reader", BLOCK_MS / 1000 + self.connect_timeout)
        clients = Clients(commands, reader, commands.register_script(APPEND), commands.register_script(RESERVE))
        try:
            await asyncio.wait_for(self._hello(link, commands), self.connect_timeout)
        except FAILED as exc:
            link.connecting = None
            await clients.aclose()
            raise BrokerUnavailableError(f"cannot reach Redis at {self._shared.safe_url}: {exc}") from exc
        link.clients = clients
        link.supervisor = link.loop.create_task(self._supervise(link, clients))
        await asyncio.sleep(0)  # let it start: a task cancelled before it starts would not clean up
        return clients

    async def _hello(self, link: _Link, commands: Redis) -> None:
        await commands.ping()
        await link.presence.register(commands)
        await commands.set(self._shared.keys.writer, b"1", px=self._shared.ttl_ms)

    async def _supervise(self, link: _Link, clients: Clients) -> None:
        """Run the reader, writer and heartbeat until cancelled; then say goodbye and disconnect."""
        tasks = [
            link.loop.create_task(link.reader.run(clients)),
            link.loop.create_task(link.writer.run(clients)),
            link.loop.create_task(self._beat_forever(link, clients)),
        ]
        error: BrokerError | None = None
        try:
            await asyncio.gather(*tasks)
        except Exception as exc:  # a bug in a part: said once, loudly, and raised by every later use
            logger.exception("RedisBroker stopped after an internal error")
            link.failure = exc
            error = BrokerError(f"RedisBroker stopped after an internal error: {exc!r}")
        finally:
            try:
                while not all(task.done() for task in tasks):
                    for task in tasks:  # again and again: Python < 3.12's wait_for, in redis-py, can swallow one
                        task.cancel()
                    await asyncio.wait(tasks, timeout=0.1)
                with contextlib.suppress(*FAILED):  # Redis unreachable or slow: what is left is counted dropped
                    await asyncio.wait_for(self._goodbye(link, clients), _GOODBYE_SECONDS)
            finally:  # even if the loop, shutting down, cancels this task once more
                link.writer.abandon(error)
                await clients.aclose()

    async def _goodbye(self, link: _Link, clients: Clients) -> None:
        await link.writer.flush(clients)
        await link.presence.goodbye(clients)

    async def _beat_forever(self, link: _Link, clients: Clients) -> None:
        """Every `presence_ttl / 3` seconds: the heartbeat, and another look at rooms left out as broken."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            with contextlib.suppress(*FAILED):  # the reader and writer tell of outages; this tries again soon
                await link.presence.beat(clients)
            with contextlib.suppress(*FAILED):
                await link.reader.retry_broken(clients)
