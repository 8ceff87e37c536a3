"""`Member`: one connection's bounded outbound queue and the writer that drains it.

A room hands each message to every member's queue and moves on; only the member's own writer
awaits its socket. So one member that stops reading delays nobody else: its queue fills and
it is closed (or it drops messages, as configured), or its send stalls past `send_timeout`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from threading import get_ident
from typing import Any, Literal

import anyio

from .._loop import LoopHandle, Waiter
from ..brokers.base import Message

__all__ = ["Event", "Member", "SlowConsumerPolicy", "event_for"]

SlowConsumerPolicy = Literal["close", "drop_oldest", "drop_newest"]

Event = dict[str, Any]
"""An ASGI "websocket.send" event, ready to hand to the server."""

_last: tuple[Message | None, Event] = (None, {})


def event_for(message: Message) -> Event:
    """Return the send event of `message`, made once for all the members a broker hands it to in a row."""
    global _last
    last = _last  # one read: another thread may replace the pair, never half of it
    if last[0] is message:
        return last[1]
    event = {"type": "websocket.send", "text": message.payload}
    _last = (message, event)
    return event


class Member:
    """A member of a room: its id, its outbound queue and its writer.

    `deliver` (a broker's `Deliver`) and `push` may be called from any thread; `run` is the
    writer and runs in the member's own event loop.

    Attributes:
        id: The member's id, unique across processes; messages whose `sender` it is are skipped.
        dropped: How many messages the "drop_oldest"/"drop_newest" policies dropped.
        stalled: Why the writer gave up ("slow consumer", "send timeout"), or None.
    """

    __slots__ = (
        "_handle",
        "_max_queue",
        "_policy",
        "_progress",
        "_queue",
        "_scope",
        "_seen",
        "_send_timeout",
        "_sending",
        "_sent",
        "_waiter",
        "dropped",
        "id",
        "overflowed",
        "stalled",
    )

    def __init__(self, member_id: str, max_queue: int, policy: SlowConsumerPolicy, send_timeout: float) -> None:
        self.id = member_id
        self.dropped = 0
        self.overflowed = False
        self.stalled: str | None = None
        self._max_queue = max_queue
        self._policy = policy
        self._send_timeout = send_timeout
        self._queue: deque[Event] = deque()
        self._waiter: Waiter | None = None
        self._scope: anyio.CancelScope | None = None
        self._sending = False
        self._sent = 0
        self._seen = -1  # the watchdog's first look always counts as progress
        self._progress = 0.0
        self._handle = LoopHandle.current()

    def deliver(self, message: Message) -> None:
        """Queue `message` unless this member sent it."""
        if message.sender != self.id:
            last = _last  # event_for(), inlined: this runs once per member for every message
            self._put(last[1] if last[0] is message else event_for(message))

    def push(self, payload: str) -> None:
        """Queue the text `payload` for sending, applying the slow-consumer policy when the queue is full."""
        self._put({"type": "websocket.send", "text": payload})

    def _put(self, event: Event) -> None:
        queue = self._queue
        if len(queue) >= self._max_queue:
            if self._policy == "drop_newest":
                self.dropped += 1
                return
            if self._policy == "close":
                if not self.overflowed:
                    self.overflowed = True
                    self._handle.call(self._abort)
                return
            with suppress(IndexError):  # the writer may have emptied the queue meanwhile, on another thread
                queue.popleft()
            self.dropped += 1
        queue.append(event)
        waiter = self._waiter
        if waiter is not None:
            if get_ident() == self._handle.thread:
                self._waiter = None
                waiter.set()
            else:
                self._handle.call(self._wake)

    def push_first(self, payload: str) -> None:
        """Queue the text `payload` ahead of everything queued so far (a joiner's presence snapshot)."""
        self._queue.appendleft({"type": "websocket.send", "text": payload})
        if self._waiter is not None:
            self._handle.call(self._wake)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    def _abort(self) -> None:
        self._wake()
        if self._scope is not None:
            self._scope.cancel()

    def check_stall(self, now: float) -> None:
        """Stop the writer if a send has made no progress for `send_timeout` seconds (the watchdog calls this)."""
        if not self._sending or self._sent != self._seen:
            self._seen, self._progress = self._sent, now
        elif now - self._progress > self._send_timeout and self._scope is not None:
            self._scope.cancel()

    async def run(
        self, send: Callable[[Event], Awaitable[None]], on_stall: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        """Send queued events with `send` until cancelled, or until the member stalls.

        Returns when the queue overflowed under the "close" policy, or when sending made no
        progress for `send_timeout` seconds; `stalled` then says which, and `on_stall` is
        awaited with it first. (Awaiting it here, in the frame that caught the cancellation,
        rather than in the caller also keeps Python 3.11's line tracing, and so coverage, exact.)

        On asyncio the loop's watchdog looks for stalls, so a send costs no timer; on trio each
        send moves a deadline.
        """
        queue = self._queue
        handle = self._handle
        clock = handle.clock
        timeout = self._send_timeout
        own_deadline = not handle.has_watchdog
        with anyio.CancelScope() as scope:
            self._scope = scope
            if not own_deadline:
                handle.watch(self, timeout)
            try:
                while not self.overflowed:
                    if not queue:
                        self._waiter = waiter = handle.waiter()
                        # Check again: another thread may have pushed before it could see the new waiter.
                        if not queue and not self.overflowed:  # pragma: no branch - that race is rare
                            await waiter.wait()
                        self._waiter = None
                        continue
                    self._sending = True
                    if own_deadline:
                        while queue and not self.overflowed:
                            scope.deadline = clock() + timeout
                            await send(queue.popleft())
                        scope.deadline = math.inf
                    else:  # the watchdog sees progress in `_sent`: no clock, no timer per send
                        while queue and not self.overflowed:
                            await send(queue.popleft())
                            self._sent += 1
                    self._sending = False
            finally:
                handle.unwatch(self)
        self._scope = None
        self.stalled = "slow consumer" if self.overflowed else "send timeout"
        if on_stall is not None:
            await on_stall(self.stalled)
