"""`MemoryBroker`: rooms within one process."""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace

from ..exceptions import BrokerClosedError
from .base import Broker, Deliver, History, Message

__all__ = ["MemoryBroker"]

logger = logging.getLogger("wsendpoints")


@dataclass(eq=False, slots=True)
class _Kept:
    """A room's history: its latest messages, and until when they are kept."""

    messages: deque[Message] = field(default_factory=deque)
    size: int = 0
    expires: float = 0.0


class MemoryBroker(Broker):
    """Rooms in this process's memory, shared by every event loop and thread of the process.

    `publish` hands the message to each subscriber before it returns, under one lock, so every
    subscriber sees a room's messages in the same order.

    Ids are `"{epoch}-{n}"`: `epoch` is random for each broker (so each run of the process),
    and `n` counts every message this broker published, in any room. An id from before a
    restart, or from another broker, is recognised as foreign and never misread as a position.

    History is kept per room as publishers ask (`publish(..., history_size=, history_ttl=)`),
    in a buffer of `history_size` messages that is dropped `history_ttl` seconds after the
    room's latest message (at the broker's next `publish`, `history` or `histories` call, in
    any room: no timer): an empty room leaves nothing behind once its history has expired.

    Example:
        ```python
        class Lobby(RoomEndpoint):
            broker = MemoryBroker()
        ```
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, tuple[Deliver, ...]] = {}
        self._presence: dict[str, dict[str, str]] = {}
        self._closed = False
        self._epoch = secrets.token_hex(4)
        self._count = itertools.count(1)
        self._kept: dict[str, _Kept] = {}
        self._expiries: list[tuple[float, str]] = []
        """A heap of `(expires, room)`, one entry per kept room: see `_expire`."""
        self._clock: Callable[[], float] = time.monotonic

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the broker was closed")

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        """Hand `message`, with its id, to every subscriber of `room`; keep it as `history_size` asks.

        Raises:
            BrokerClosedError: If the broker was closed.
        """
        self._check_open()
        with self._lock:
            message = replace(message, id=f"{self._epoch}-{next(self._count)}")
            if history_size > 0 or room in self._kept:
                self._keep(room, message, history_size, history_ttl)
            for deliver in self._subscribers.get(room, ()):
                try:
                    deliver(message)
                except Exception:
                    logger.exception("a subscriber of room %r failed to take a message", room)

    def subscribe(
        self, room: str, deliver: Deliver, paused: Callable[[], bool] | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Call `deliver` with each message published to `room` until the context exits.

        `paused` is accepted and ignored: `publish` delivers at once, and the rooms hold their
        publishers back themselves while their members are behind.

        Raises:
            BrokerClosedError: On entering, if the broker was closed.
        """
        return _Subscription(self, room, deliver)

    def _add(self, room: str, deliver: Deliver) -> None:
        self._check_open()
        with self._lock:
            self._subscribers[room] = (*self._subscribers.get(room, ()), deliver)

    def _remove(self, room: str, deliver: Deliver) -> None:
        with self._lock:
            rest = list(self._subscribers[room])
            rest.remove(deliver)
            if rest:
                self._subscribers[room] = tuple(rest)
            else:
                del self._subscribers[room]

    async def join(self, room: str, member: str, user: str) -> int:
        self._check_open()
        with self._lock:
            present = self._presence.setdefault(room, {})
            present[member] = user
            return len(present)

    async def leave(self, room: str, member: str) -> None:
        with self._lock:
            present = self._presence.get(room)
            if present is not None:
                present.pop(member, None)
                if not present:
                    del self._presence[room]

    async def members(self, room: str) -> list[str]:
        with self._lock:
            return sorted(set(self._presence.get(room, {}).values()))

    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        """Return `room`'s kept messages, oldest first: see `Broker.history`."""
        self._check_open()
        with self._lock:
            self._expire()
            kept = self._kept.get(room)
            messages = list(kept.messages) if kept is not None else []
        if since is not None:
            ids = [message.id for message in messages]
            if since not in ids:  # no longer kept, another broker's or another run's, or garbage
                return History([], recovered=False)
            newer = messages[ids.index(since) + 1 :]
            return History(newer if limit is None else newer[:limit], recovered=True)
        if limit is not None:
            messages = messages[max(0, len(messages) - limit) :]
        return History(messages, recovered=True)

    def position(self, message_id: str) -> tuple[int, ...] | None:
        """Return `(n,)` for an id this broker gave, else None."""
        epoch, _, number = message_id.partition("-")
        if epoch != self._epoch or not (number.isascii() and number.isdigit()):
            return None
        return (int(number),)

    def _keep(self, room: str, message: Message, size: int, ttl: float) -> None:
        """Add `message` to `room`'s history (call with the lock held)."""
        now = self._clock()
        self._expire(now)
        kept = self._kept.get(room)
        if kept is None:
            kept = self._kept[room] = _Kept(expires=now + ttl)
            heapq.heappush(self._expiries, (kept.expires, room))
        kept.size = max(kept.size, size)
        kept.expires = max(kept.expires, now + ttl)
        kept.messages.append(message)
        if len(kept.messages) > kept.size:
            kept.messages.popleft()

    def _expire(self, now: float | None = None) -> None:
        """Drop the histories whose time is up (call with the lock held).

        The heap holds one entry per kept room, with the expiry it had when pushed: an entry
        found early is pushed again with the room's current expiry, so the heap never outgrows
        the rooms.
        """
        now = self._clock() if now is None else now
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, room = heapq.heappop(expiries)
            kept = self._kept[room]
            if kept.expires <= now:
                del self._kept[room]
            else:
                heapq.heappush(expiries, (kept.expires, room))

    async def aclose(self) -> None:
        self._closed = True
        with self._lock:
            self._kept.clear()
            self._expiries.clear()

    def rooms(self) -> list[str]:
        """Return the rooms with a subscriber or a member, sorted: empty rooms leave nothing behind."""
        with self._lock:
            return sorted(set(self._subscribers) | set(self._presence))

    def histories(self) -> list[str]:
        """Return the rooms whose history is kept, sorted: a history is dropped `history_ttl` after its last message."""
        with self._lock:
            self._expire()
            return sorted(self._kept)


class _Subscription:
    """`MemoryBroker.subscribe()`: a class, not a generator, because every idle member holds one (0.4 KB less each)."""

    __slots__ = ("_broker", "_deliver", "_room")

    def __init__(self, broker: MemoryBroker, room: str, deliver: Deliver) -> None:
        self._broker, self._room, self._deliver = broker, room, deliver

    async def __aenter__(self) -> None:
        self._broker._add(self._room, self._deliver)

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker._remove(self._room, self._deliver)
