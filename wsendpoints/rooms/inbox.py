"""`Inbox`: what of a room's messages reaches one member.

A member subscribes to its room before it enters the room's presence, so that it misses
nothing published after it entered; the inbox holds what arrives meanwhile, and once the
broker says where the member entered (`Entry.after`), drops what was published before (the
member's presence snapshot covers it). After that it passes the room's messages on, keeps
only the messages addressed to its own user name (`Broker.publish_to`), and turns a kick
into a call to `kick(code, reason)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..brokers.base import Deliver, Message, message_order

__all__ = ["Inbox"]


class Inbox:
    """The `Deliver` a member subscribes with.

    `deliver` may be called from any thread; `open` from the member's own.

    Args:
        user: The member's user name.
        deliver: Where it passes messages on: the member's `take` (not its `deliver`, which
            screens through this inbox), which queues them for sending.
        kick: Called, from the thread of the delivery, with the close code and reason of a
            kick addressed to the member's user.
        limit: How many messages it holds at most until it is opened (the member's queue
            bound): past that, it hands what it holds, and all that follows, to `deliver` in
            order, whose slow-consumer policy then applies, and skips nothing as published
            before the member entered.
        order: Where a message id stands in its room (later messages: greater), or None for an
            id it does not know; by default `message_order`.
        steady: Called once the inbox passes every message to the whole room on unchecked
            (opened, with nothing left to skip): the member may then queue those itself
            (`Member.unscreen`), and hand the inbox only messages to one user.
    """

    __slots__ = ("_after", "_deliver", "_held", "_kick", "_limit", "_order", "_steady", "user")

    _lock = threading.Lock()
    """One lock for every inbox, taken only while one is held or opened: joins are short and rare
    next to deliveries, and every idle member is smaller by a lock."""

    def __init__(
        self,
        user: str,
        deliver: Deliver,
        kick: Callable[[int, str], object],
        limit: int,
        order: Callable[[str], tuple[int, ...] | None] = message_order,
        steady: Callable[[], object] | None = None,
    ) -> None:
        self.user = user
        self._deliver = deliver
        self._kick = kick
        self._limit = limit
        self._held: list[Message] | None = []
        self._after: tuple[int, ...] | None = None
        self._order = order
        self._steady = steady

    def open(self, after: str | None) -> None:
        """Start passing messages on: those held, and all to come, published after `after`."""
        with self._lock:
            held = self._held
            if held is None:  # it gave up holding: nothing to skip
                return
            self._after = None if after is None else self._order(after)
            for message in held:
                self._pass(message)
            self._held = None
            if self._after is None:
                self._settle()

    def deliver(self, message: Message) -> None:
        """Take one message of the room: hold it, drop it, or pass it on."""
        if self._held is None and self._after is None and message.to is None:
            self._deliver(message)  # the steady state (the member queues these itself once told: `steady`)
            return
        if self._held is None or not self._hold(message):
            self._pass(message)

    def _hold(self, message: Message) -> bool:
        """Keep `message` until the inbox is opened; False if it was opened meanwhile (by another thread)."""
        with self._lock:
            held = self._held
            if held is None:
                return False
            if len(held) < self._limit:
                held.append(message)
                return True
            self._held = None  # over the limit before it is opened: on, in order, unchecked
            for message_held in held:
                self._pass(message_held)
            self._settle()
            return False

    def _settle(self) -> None:
        """Tell the member that messages to the whole room pass unchecked from now on."""
        if self._steady is not None:
            self._steady()

    def _pass(self, message: Message) -> None:
        after = self._after
        if after is not None:
            position = None if message.id is None else self._order(message.id)
            if position is not None:  # a message without a known id is passed on, and proves nothing
                if position <= after:
                    return  # published before the member entered
                self._after = None  # the room's order: everything from here on is newer
                if self._held is None:  # opening settles once all it held has passed
                    self._settle()
        to = message.to
        if to is not None:
            if to != self.user:
                return
            if message.close is not None:
                self._kick(message.close, message.payload)
                return
        self._deliver(message)
