"""`MemoryBroker`: rooms within one process."""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from ..exceptions import BrokerClosedError
from .base import Broker, Deliver, Entry, Message

__all__ = ["MemoryBroker"]

logger = logging.getLogger("wsendpoints")


class MemoryBroker(Broker):
    """Rooms in this process's memory, shared by every event loop and thread of the process.

    `publish` hands the message to each subscriber before it returns, under one lock, so every
    subscriber sees a room's messages in the same order. Each message gets an id (`"0-<n>"`,
    increasing), so that a member that enters a room can skip what came before it; `enter`,
    `depart` and `publish_to` take the same lock, so each is atomic with the deliveries.

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
        self._farewell: dict[tuple[str, str], Message] = {}
        """`(room, member)` -> the farewell `enter` keeps for it."""
        self._ids = itertools.count(1)
        self._last_id = "0-0"
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the broker was closed")

    async def publish(self, room: str, message: Message) -> None:
        self._check_open()
        with self._lock:
            self._deliver(room, message)

    def _deliver(self, room: str, message: Message) -> None:
        """Hand `message`, with the next id, to `room`'s subscribers (call with the lock held)."""
        self._last_id = message_id = f"0-{next(self._ids)}"
        message = Message(message.payload, message.sender, message_id, message.to, message.close)
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
            self._leave(room, member)

    def _leave(self, room: str, member: str) -> str | None:
        """Remove `member`; return its user name if it was its name's last member (call with the lock held)."""
        self._farewell.pop((room, member), None)
        present = self._presence.get(room)
        if present is None or member not in present:
            return None
        user = present.pop(member)
        if not present:
            del self._presence[room]
        return None if user in present.values() else user

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
    ) -> Entry:
        self._check_open()
        with self._lock:
            present = self._presence.get(room, {})
            names = set(present.values())
            refused = "name taken" if unique and user in names else None
            if max_members is not None and len(present) >= max_members:
                refused = "room full"
            if refused is not None:
                return Entry(0, False, tuple(sorted(names)), self._last_id, refused)
            present = self._presence.setdefault(room, present)
            first = user not in names
            present[member] = user
            if farewell is not None:
                self._farewell[room, member] = farewell
            after = self._last_id
            if first and greeting is not None:
                self._deliver(room, greeting)
            return Entry(len(present), first, tuple(sorted({*names, user})), after)

    async def depart(self, room: str, member: str) -> bool:
        with self._lock:
            farewell = self._farewell.get((room, member))
            if self._leave(room, member) is None:
                return False
            if farewell is not None:
                self._check_open()
                self._deliver(room, farewell)
            return True

    async def publish_to(self, room: str, user: str, message: Message) -> int | None:
        """Send `message` to the members of `room` named `user`; return how many there are."""
        self._check_open()
        with self._lock:
            self._deliver(room, Message(message.payload, message.sender, None, user, message.close))
            return sum(name == user for name in self._presence.get(room, {}).values())

    async def members(self, room: str) -> list[str]:
        with self._lock:
            return sorted(set(self._presence.get(room, {}).values()))

    async def aclose(self) -> None:
        self._closed = True

    def rooms(self) -> list[str]:
        """Return the rooms with a subscriber or a member, sorted: empty rooms leave nothing behind."""
        with self._lock:
            return sorted(set(self._subscribers) | set(self._presence))


class _Subscription:
    """`MemoryBroker.subscribe()`: a class, not a generator, because every idle member holds one (0.4 KB less each)."""

    __slots__ = ("_broker", "_deliver", "_room")

    def __init__(self, broker: MemoryBroker, room: str, deliver: Deliver) -> None:
        self._broker, self._room, self._deliver = broker, room, deliver

    async def __aenter__(self) -> None:
        self._broker._add(self._room, self._deliver)

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker._remove(self._room, self._deliver)
