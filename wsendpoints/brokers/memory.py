"""`MemoryBroker`: rooms within one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from ..exceptions import BrokerClosedError
from .base import Broker, Deliver, Message

__all__ = ["MemoryBroker"]

logger = logging.getLogger("wsendpoints")


class MemoryBroker(Broker):
    """Rooms in this process's memory, shared by every event loop and thread of the process.

    `publish` hands the message to each subscriber before it returns, under one lock, so every
    subscriber sees a room's messages in the same order.

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

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the broker was closed")

    async def publish(self, room: str, message: Message) -> None:
        self._check_open()
        with self._lock:
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
