"""The reader: one blocking XREAD per process, on one connection, for all the rooms it has subscribers in.

Each room is read from the last entry this process saw, so every subscriber everywhere gets the
stream's one order, and a reader that lost its connection carries on where it stopped. Entries
sent again after Redis lost its data are dropped by `origin` and `seq`. A room whose key holds
something other than a stream is left out (with a WARNING) until it is repaired.

The wake stream of this process (see `keys`) is read with the rooms: appending to it makes the
XREAD return, so that a room started or stopped is read or left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from ...exceptions import BrokerUnavailableError
from ..base import Deliver, Message
from .connection import FAILED, LOST, Backoff, Clients, Shared, logger
from .wire import StreamId, id_text, number, parse_entry, parse_id, text
from .writer import Writer

__all__ = ["BLOCK_MS", "Reader"]

BLOCK_MS = 10_000
"""How long one XREAD waits for news before it is sent again."""

_READ_COUNT = 500
"""Most entries one XREAD takes from each stream."""

_PAUSED_BLOCK_MS = 50
"""While a room is paused, how long one XREAD waits before the reader asks `paused()` again."""

_FIRST_ENTRY_GUESS = 64 * 1024 + 512
"""The entry size the reader plans for until it has seen a larger one: a 64 KiB message and its `meta`."""

_ORIGINS = 1024
"""Per room, how many publishing processes a reader remembers the last `seq` of."""

_WAKE_TTL_MS = 60_000

_GATHER_SECONDS = 0.002
"""After an XREAD that brought messages, how long the reader lets the next ones gather before it reads again.

Under load this turns one XREAD per message and process into one per 2 ms, and lets each
member's writer send several messages per wake-up: on the two-process benchmark it took the
servers' CPU per delivery from 14.7 to 10.4-11.8 µs and Redis's per message from 230 to 140 µs.
It costs at most 2 ms of latency, and only while messages follow each other that closely: the
first message after a quiet moment is read as it arrives.
"""


@dataclass(eq=False, slots=True)
class _Room:
    """A room this process reads: its stream, where reading stands, and its subscribers here."""

    name: str
    key: bytes
    position: StreamId
    delivers: list[Deliver] = field(default_factory=list)
    count: int | None = None
    """The number (`n`) of the last entry read, to notice entries trimmed before they were read."""
    pauses: dict[Callable[[], bool], int] = field(default_factory=dict)
    """The `paused` checks of its subscribers, each with how many pass it: while one says True, the room
    is not read. The members of one room in one process all pass the same check, asked once per XREAD."""
    seen: dict[str, int] = field(default_factory=dict)
    """Per publishing process (`origin`), the highest `seq` delivered: what is sent again is dropped."""
    broken: bool = False
    """The key holds something other than a stream; left out of reading until it is repaired."""


class Reader:
    """The rooms one process reads, and the task that reads them.

    Args:
        shared: The broker's settings and counters.
        writer: Told when Redis is lost and when it is found with our data, for its replay.
    """

    def __init__(self, shared: Shared, writer: Writer, read_bytes: int) -> None:
        self.shared = shared
        self.writer = writer
        self.read_bytes = read_bytes
        self.rooms: dict[str, _Room] = {}
        self.wake_id = "0-0"
        self.largest = _FIRST_ENTRY_GUESS
        """The largest entry seen, in bytes, which sets how many entries one XREAD asks for."""

    async def add(self, clients: Clients, room: str, deliver: Deliver, paused: Callable[[], bool] | None) -> None:
        """Call `deliver` with each entry appended to `room`'s stream from now on; hold back while `paused()`.

        No lock is held across the round trip: subscribers of other rooms, or of this one, go on
        at the same time, and the first to hear from Redis starts the room.

        Raises:
            BrokerUnavailableError: If Redis cannot be reached to find where the room's stream stands.
        """
        state = self.rooms.get(room)
        if state is None:
            position, count = await self._last_entry(clients, room)
            state = self.rooms.get(room)  # another subscriber may have started it meanwhile
            if state is None:
                state = self.rooms[room] = _Room(room, self.shared.keys.room(room), position, count=count)
                await self.wake(clients)
        state.delivers.append(deliver)
        if paused is not None:
            state.pauses[paused] = state.pauses.get(paused, 0) + 1

    async def remove(
        self, clients: Clients | None, room: str, deliver: Deliver, paused: Callable[[], bool] | None
    ) -> None:
        """Stop calling `deliver`; stop reading `room` after its last subscriber (waking the reader if `clients`)."""
        state = self.rooms[room]
        state.delivers.remove(deliver)
        if paused is not None:
            left = state.pauses.pop(paused) - 1
            if left:
                state.pauses[paused] = left
        if not state.delivers:
            del self.rooms[room]
            if clients is not None:
                await self.wake(clients)

    async def _last_entry(self, clients: Clients, room: str) -> tuple[StreamId, int | None]:
        """Return the id and number of the last entry of `room`'s stream: where reading it starts."""
        try:
            last: list[Any] = await clients.commands.xrevrange(self.shared.keys.room(room), count=1)  # type: ignore[assignment]
        except ResponseError:  # not a stream: the reader skips it, with a WARNING, until it is one
            last = []
        except LOST as exc:
            raise BrokerUnavailableError(f"cannot reach Redis at {self.shared.safe_url}: {exc}") from exc
        return (parse_id(last[0][0]), number(last[0][1])) if last else ((0, 0), 0)

    async def wake(self, clients: Clients) -> None:
        """Make the reader send its XREAD again, with the rooms as they are now."""
        with contextlib.suppress(*FAILED):  # it will, at the latest when its XREAD times out
            async with clients.commands.pipeline(transaction=False) as pipe:
                pipe.xadd(self.shared.keys.wake, {b"wake": b"1"}, maxlen=1, approximate=False)
                pipe.pexpire(self.shared.keys.wake, _WAKE_TTL_MS)
                await pipe.execute()

    async def run(self, clients: Clients) -> None:
        """Read and dispatch, forever; through outages, with backoff."""
        backoff = Backoff(self.shared.max_backoff)
        connected = lost = False
        while True:
            try:
                if not connected:
                    await self._reconnect(clients)
                    connected = True
                    backoff.reset()
                    if lost:
                        logger.warning("RedisBroker reads from Redis at %s again", self.shared.safe_url)
                reading, paused = self._reading()
                streams = {self.shared.keys.wake: self.wake_id} | {
                    key: id_text(room.position) for key, room in reading.items()
                }
                block = _PAUSED_BLOCK_MS if paused else BLOCK_MS
                reply = await self._xread(clients, streams, self._count(len(reading)), block)
            except ResponseError as exc:
                await self._find_broken(clients, exc)
                await asyncio.sleep(backoff.next())
                continue
            except FAILED as exc:
                if connected:
                    self.writer.note_lost()
                    logger.warning("RedisBroker lost Redis at %s (%s): reconnecting", self.shared.safe_url, exc)
                connected = False
                lost = True
                await asyncio.sleep(backoff.next())
                continue
            if self._dispatch(reading, reply):
                await asyncio.sleep(_GATHER_SECONDS)

    async def _xread(self, clients: Clients, streams: dict[bytes, str], count: int, block: int) -> Any:
        """Send one XREAD on the reader's own connection; return the reply as Redis sends it (fields flat).

        Straight through the connection rather than `Redis.xread`, without redis-py's per-command
        machinery (retry wrapper, hooks, timing, reply callback): 15-20 µs of CPU less per XREAD
        (about 100 -> 82 µs for a one-entry reply, measured alone on loopback).
        Like redis-py, the connection drops itself when a command fails or is cancelled halfway,
        and the next command connects again.
        """
        connection = clients.reader.connection
        if connection is None:  # pragma: no cover - `_reconnect` pinged through it before any read
            raise RuntimeError("the reader's connection is not open")
        await connection.send_command("XREAD", "COUNT", count, "BLOCK", block, "STREAMS", *streams, *streams.values())
        return await connection.read_response() or []

    def _reading(self) -> tuple[dict[bytes, _Room], bool]:
        """Return the rooms to read now, by key, and whether any was left out as paused."""
        reading: dict[bytes, _Room] = {}
        paused = False
        for room in self.rooms.values():
            if room.broken:
                continue
            if any(check() for check in room.pauses):
                paused = True
            else:
                reading[room.key] = room
        return reading, paused

    def _count(self, rooms: int) -> int:
        """Return how many entries one XREAD may take per stream: `read_bytes` in all, for entries as large as seen."""
        return max(1, min(_READ_COUNT, self.read_bytes // (self.largest * max(1, rooms))))

    async def _reconnect(self, clients: Clients) -> None:
        await clients.reader.ping()
        await self._reposition(clients)
        self.wake_id = "0-0"

    async def _reposition(self, clients: Clients) -> None:
        """Read each stream on from the last entry seen if it still holds it, else from its start.

        A stream without that entry is new (Redis lost its data, or the stream expired), or was
        trimmed past it while we were away: either way, all it holds is newer. What a reader had
        already (after a failover to a replica that lagged) is dropped by `origin` and `seq`.
        """
        rooms = list(self.rooms.values())
        async with clients.commands.pipeline(transaction=False) as pipe:
            pipe.exists(self.shared.keys.writer)
            for room in rooms:
                position = id_text(room.position)
                pipe.xrange(room.key, min=position, max=position, count=1)
            kept, *found = await pipe.execute(raise_on_error=False)
        if kept:  # Redis kept our data: the writer need not send anything again
            self.writer.note_kept()
        for room, entries in zip(rooms, found, strict=True):
            if not entries:  # the stream is gone, or new with lower ids
                room.position = (0, 0)

    async def _find_broken(self, clients: Clients, error: ResponseError) -> None:
        """After Redis refused an XREAD: leave out the rooms whose key is not a stream."""
        rooms = [room for room in self.rooms.values() if not room.broken]
        kinds: list[Any] = []
        with contextlib.suppress(*FAILED):  # Redis went away too: the next XREAD says so
            async with clients.commands.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.type(room.key)
                kinds = await pipe.execute()
        broken = [
            (room, text(kind)) for room, kind in zip(rooms, kinds, strict=False) if text(kind) not in ("stream", "none")
        ]
        for room, kind in broken:
            room.broken = True
            self.shared.skip_malformed(
                f"{kind} where a room's stream belongs (room skipped until repaired)", room.key, kind
            )
        if not broken:
            logger.warning("Redis at %s refused to read the rooms (%s): trying again", self.shared.safe_url, error)

    async def retry_broken(self, clients: Clients) -> None:
        """Read again the rooms left out whose key is a stream again (or gone)."""
        broken = [room for room in self.rooms.values() if room.broken]
        async with clients.commands.pipeline(transaction=False) as pipe:
            for room in broken:
                pipe.type(room.key)
            kinds = await pipe.execute(raise_on_error=False)  # none broken: no round trip
        repaired = [room for room, kind in zip(broken, kinds, strict=True) if text(kind) in ("stream", "none")]
        for room in repaired:
            room.broken = False
        if repaired:
            await self.wake(clients)

    def _count_missed(self, room: _Room, count: int | None) -> None:
        """Count the entries trimmed between the last one read and this one, numbered `count`."""
        if count is None:  # not ours
            return
        last, room.count = room.count, count
        missed = 0 if last is None else count - last - 1  # negative when the stream was made anew
        if missed > 0:
            self.shared.missed += missed
            logger.warning(
                "RedisBroker fell behind room %r by more than its stream keeps: %d messages missed "
                "(raise stream_bytes or stream_maxlen, or read faster)",
                room.name,
                missed,
            )

    def _dispatch(self, reading: dict[bytes, _Room], reply: Any) -> bool:
        """Hand each room's new entries to its subscribers; return whether there were any (not only a wake-up)."""
        read = False
        for key, entries in reply:
            if key == self.shared.keys.wake:
                self.wake_id = entries[-1][0].decode()
                continue
            read = True
            room = reading[key]  # if it was left meanwhile, it has no subscribers
            for raw_id, flat in entries:
                pairs = iter(flat)
                fields = dict(zip(pairs, pairs, strict=False))
                room.position = parse_id(raw_id)
                self._count_missed(room, number(fields))
                self.largest = max(self.largest, sum(len(value) for value in fields.values()))
                parsed = parse_entry(fields)
                if parsed is None:
                    self.shared.skip_malformed("stream entry", key, fields)
                    continue
                payload, sender, origin, seq, to, close = parsed
                last = room.seen.pop(origin, 0)
                room.seen[origin] = max(last, seq)
                if len(room.seen) > _ORIGINS:
                    del room.seen[next(iter(room.seen))]
                if 0 < seq <= last:  # sent again after Redis lost its data, and we had it (0: a presence notice)
                    continue
                message = Message(payload, sender, raw_id.decode(), to, close)
                for deliver in tuple(room.delivers):
                    try:
                        deliver(message)
                    except Exception:  # a subscriber's own code: it must not stop the others, nor the reader
                        logger.exception("a subscriber of room %r failed to take a message", room.name)
        return read
