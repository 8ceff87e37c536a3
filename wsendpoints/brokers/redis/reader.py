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
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from ...exceptions import BrokerUnavailableError
from ..base import Deliver, Message
from .connection import FAILED, LOST, Backoff, Clients, Shared, logger
from .wire import StreamId, id_text, parse_entry, parse_id, text
from .writer import Writer

__all__ = ["BLOCK_MS", "Reader"]

BLOCK_MS = 10_000
"""How long one XREAD waits for news before it is sent again."""

_READ_COUNT = 500
"""Most entries one XREAD takes from each stream."""

_ORIGINS = 1024
"""Per room, how many publishing processes a reader remembers the last `seq` of."""

_WAKE_TTL_MS = 60_000


@dataclass(eq=False, slots=True)
class _Room:
    """A room this process reads: its stream, where reading stands, and its subscribers here."""

    name: str
    key: bytes
    position: StreamId
    delivers: list[Deliver] = field(default_factory=list)
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

    def __init__(self, shared: Shared, writer: Writer) -> None:
        self.shared = shared
        self.writer = writer
        self.rooms: dict[str, _Room] = {}
        self.opening = asyncio.Lock()
        self.wake_id = "0-0"

    async def add(self, clients: Clients, room: str, deliver: Deliver) -> None:
        """Call `deliver` with each entry appended to `room`'s stream from now on.

        Raises:
            BrokerUnavailableError: If Redis cannot be reached to find where the room's stream stands.
        """
        async with self.opening:
            state = self.rooms.get(room)
            if state is None:
                state = await self._open(clients, room)
            state.delivers.append(deliver)

    async def remove(self, clients: Clients | None, room: str, deliver: Deliver) -> None:
        """Stop calling `deliver`; stop reading `room` after its last subscriber (waking the reader if `clients`)."""
        state = self.rooms[room]
        state.delivers.remove(deliver)
        if not state.delivers:
            del self.rooms[room]
            if clients is not None:
                await self.wake(clients)

    async def _open(self, clients: Clients, room: str) -> _Room:
        """Start reading `room` from the last entry of its stream."""
        key = self.shared.keys.room(room)
        try:
            last: list[Any] = await clients.commands.xrevrange(key, count=1)  # type: ignore[assignment]
        except ResponseError:  # not a stream: the reader skips it, with a WARNING, until it is one
            last = []
        except LOST as exc:
            raise BrokerUnavailableError(f"cannot reach Redis at {self.shared.safe_url}: {exc}") from exc
        state = _Room(room, key, parse_id(last[0][0]) if last else (0, 0))
        self.rooms[room] = state
        await self.wake(clients)
        return state

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
                reading = {room.key: room for room in self.rooms.values() if not room.broken}
                streams = {self.shared.keys.wake: self.wake_id} | {
                    key: id_text(room.position) for key, room in reading.items()
                }
                reply = await clients.reader.xread(streams, count=_READ_COUNT, block=BLOCK_MS)  # type: ignore[arg-type]
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
            self._dispatch(reading, reply)

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

    def _dispatch(self, reading: dict[bytes, _Room], reply: Any) -> None:
        for key, entries in reply:
            if key == self.shared.keys.wake:
                self.wake_id = entries[-1][0].decode()
                continue
            room = reading[key]  # if it was left meanwhile, it has no subscribers
            for raw_id, fields in entries:
                room.position = parse_id(raw_id)
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
