"""`Room`: one room's members in this process, their backlog counters and the publishers waiting on them.

Flow control lives here. Each member's queue has a high-water mark (half of `max_queue` and of
`max_queue_bytes`) and a low-water mark (a quarter). A member whose queue crosses the high-water
mark is *behind* and is counted here; it stops counting once its queue is back under the
low-water mark. While anyone is behind, `hold()` makes publishers wait: a member's receive loop
stops reading its socket (so TCP pushes back on its client) and `broadcast()` awaits. The cost
per delivery is O(1): counters move only when a queue crosses a mark, never by a scan.

One member must not hold its room hostage. While publishers wait, they judge the members still
behind (once per 50 ms, a scan of those behind only): a member is *slow* when one of its sends
has waited on its peer for a quarter of `slow_after` (the peer stopped reading), or when it has
stayed behind for `slow_after` seconds while most of the room was not (when more than half of
the room is behind, the server or the clients are simply busy, and everyone waits). A slow
member stops counting: publishers go on, its queue fills, and its `slow_consumer` policy
applies (close 1013, or drop messages).

A publisher waits at most its `timeout` (the endpoint's `send_timeout`); then it publishes
anyway, and members whose queues are full meet their `slow_consumer` policy.

Rooms are shared by every event loop and thread of the process (each `TestClient` session runs
its own loop thread): the counters are changed under one lock, and only when a queue crosses a
mark, so the lock costs nothing per message.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.lowlevel

from .._loop import LoopHandle, Waiter
from ..brokers.base import Broker, Message
from .resume import with_id

if TYPE_CHECKING:  # pragma: no cover - imports for the type checker only
    from .member import Member

__all__ = ["Item", "ItemCache", "Room"]

Item = tuple[dict[str, str], int]
"""A queued "websocket.send" event and the size of its text in UTF-8 bytes."""

_JUDGE_EVERY = 0.05
"""How often (seconds) a waiting publisher looks for slow members."""


def make_item(text: str) -> Item:
    """Return the send event of `text` and its size in bytes."""
    return {"type": "websocket.send", "text": text}, len(text) if text.isascii() else len(text.encode())


class ItemCache:
    """The queue item of the latest message, made once for all the members it goes to in a row.

    One cached pair instead of a dict: read and replaced whole, so any thread may use it. A
    member reads `last` itself and calls `item` only for a new message: a call less per delivery.
    With `stamp`, items are JSON-mode envelopes with the message's `"id"` (`with_id`).
    """

    __slots__ = ("_stamp", "last")

    def __init__(self, *, stamp: bool) -> None:
        self._stamp = stamp
        self.last: tuple[Message | None, Item] = (None, make_item(""))

    def item(self, message: Message) -> Item:
        """Return the queue item of `message`."""
        last = self.last
        if last[0] is message:
            return last[1]
        text = message.payload
        if self._stamp:
            # A message to one user (`send_to`) goes without its id: it is not in the room's
            # history, so a client must never resume from it.
            text = with_id(text, None if message.to is not None else message.id)
        item = make_item(text)
        self.last = (message, item)
        return item


class Room:
    """The members of one room in this process, which of them are behind, and the publishers waiting.

    Get one with `Room.of(broker, key)`; it lives while it has members.
    """

    __slots__ = (
        "__weakref__",
        "_behind",
        "_busy_at",
        "_judged_at",
        "_lock",
        "_members",
        "_waiters",
        "items",
        "key",
        "stamped_items",
    )

    _registry: ClassVar[weakref.WeakKeyDictionary[Broker, dict[str, Room]]] = weakref.WeakKeyDictionary()
    """Each broker's rooms in this process: looked up once per join and per `broadcast()`, not per delivery."""
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._members: set[Member] = set()
        self._behind: set[Member] = set()
        self._waiters: list[tuple[LoopHandle, Waiter]] = []
        self._busy_at = self._judged_at = 0.0
        self.items = ItemCache(stamp=False)
        self.stamped_items = ItemCache(stamp=True)

    @classmethod
    def of(cls, broker: Broker, key: str) -> Room:
        """Return the room `key` of `broker` in this process, made on first use."""
        with cls._registry_lock:
            rooms = cls._registry.setdefault(broker, {})
            room = rooms.get(key)
            if room is None:
                room = rooms[key] = cls(key)
            return room

    @classmethod
    def find(cls, broker: Broker, key: str) -> Room | None:
        """Return the room `key` of `broker` if it has members in this process."""
        rooms = cls._registry.get(broker)
        return None if rooms is None else rooms.get(key)

    def add(self, member: Member) -> None:
        """Count `member` as one of this room's members."""
        with self._lock:
            self._members.add(member)

    def discard(self, broker: Broker, member: Member) -> None:
        """Forget `member`; the room leaves the registry with its last member."""
        self.drained(member)
        with self._lock:
            self._members.discard(member)
            empty = not self._members
        if empty:
            with self._registry_lock:
                rooms = self._registry.get(broker, {})
                if rooms.get(self.key) is self and not self._members:
                    del rooms[self.key]

    def item(self, message: Message) -> Item:
        """Return the queue item of `message`, made once for all the members it goes to in a row.

        JSON-mode members read `stamped_items` instead: their envelopes carry the message's id.
        """
        return self.items.item(message)

    @property
    def members(self) -> int:
        """How many members the room has in this process."""
        return len(self._members)

    @property
    def behind(self) -> int:
        """How many members are behind and not judged slow."""
        return len(self._behind)

    def paused(self) -> bool:
        """Whether publishers are held: a broker that reads ahead checks it before reading more.

        Asking judges the members holding the room, as a waiting publisher does: where the room's
        publishers are in other processes, nobody here waits in `hold()`, and a stuck member would
        otherwise hold the broker's reader until its `send_timeout`.
        """
        if self._behind:
            self.judge(time.monotonic())
        return bool(self._behind)

    def fell_behind(self, member: Member) -> None:
        """Count `member` as behind (its queue crossed the high-water mark)."""
        with self._lock:
            if member in self._members:
                member.behind_since = time.monotonic()
                self._behind.add(member)

    def drained(self, member: Member) -> None:
        """Stop counting `member` as behind; wake the publishers when nobody is."""
        with self._lock:
            self._behind.discard(member)
            waiters = self._release()
        for handle, waiter in waiters:
            handle.call(waiter.set)

    def _release(self) -> list[tuple[LoopHandle, Waiter]]:
        """Take the waiting publishers if nobody is behind (call with the lock held)."""
        if self._behind:
            return []
        waiters, self._waiters = self._waiters, []
        return waiters

    async def hold(self, timeout: float) -> None:  # noqa: ASYNC109 - on timeout it goes on, it does not fail
        """Wait until nobody is behind, at most `timeout` seconds; judge the members holding the room meanwhile."""
        if not self._behind:
            return
        handle = LoopHandle.current()
        with anyio.move_on_after(timeout):
            while True:
                waiter = handle.waiter()
                with self._lock:
                    if not self._behind:
                        break
                    self._waiters.append((handle, waiter))
                with anyio.move_on_after(_JUDGE_EVERY):
                    await waiter.wait()
                self.judge(time.monotonic())
        # Await once more in the frame that caught the cancellations: on Python 3.11 the caller's
        # line tracing (and so coverage) goes astray otherwise.
        await anyio.lowlevel.checkpoint()

    def judge(self, now: float) -> None:
        """Stop counting the members that hold the room up on their own (see the module's docstring)."""
        with self._lock:
            if now - self._judged_at < _JUDGE_EVERY:
                return  # several publishers may wait: one judgement per period is enough
            self._judged_at = now
            if len(self._behind) * 2 > len(self._members):
                self._busy_at = now
            for member in list(self._behind):
                if member.is_slow(now, self._busy_at):
                    member.slow = True
                    self._behind.discard(member)
            waiters = self._release()
        for handle, waiter in waiters:
            handle.call(waiter.set)

    def joined(self, broker: Broker, member: Member) -> AbstractAsyncContextManager[None]:
        """Subscribe `member` (its `deliver`) to this room on `broker` for the length of the context, passing `paused`.

        Brokers written before `paused` existed (a two-parameter `subscribe`) are called without it.
        """
        return _Joined(self, broker, member)


class _Joined:
    """`Room.joined()`: a class, not a generator, because every idle member holds one (0.4 KB less each, measured)."""

    __slots__ = ("_broker", "_member", "_room", "_subscription")

    def __init__(self, room: Room, broker: Broker, member: Member) -> None:
        self._room, self._broker, self._member = room, broker, member
        self._subscription: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> None:
        room, broker, deliver = self._room, self._broker, self._member.deliver
        try:
            if _takes_paused(type(broker)):
                subscription = broker.subscribe(room.key, deliver, paused=room.paused)
            else:
                subscription = broker.subscribe(room.key, deliver)
            await subscription.__aenter__()
        except BaseException:
            self._left()
            raise
        self._subscription = subscription

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._subscription is not None
        try:
            return await self._subscription.__aexit__(exc_type, exc, tb)
        finally:
            self._left()

    def _left(self) -> None:
        """The member is no longer subscribed: the room forgets it, and it its screen (which holds its endpoint)."""
        self._member.drop_screen()
        self._room.discard(self._broker, self._member)


@functools.cache
def _takes_paused(broker_class: type[Broker]) -> bool:
    return "paused" in inspect.signature(broker_class.subscribe).parameters
