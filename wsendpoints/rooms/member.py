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
from typing import Literal

import anyio

from .._loop import LoopHandle
from ..brokers.base import Message

__all__ = ["Member", "SlowConsumerPolicy"]

SlowConsumerPolicy = Literal["close", "drop_oldest", "drop_newest"]

REFRESH = 32
"""How many sends of one batch may share a send deadline."""


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
        "_queue",
        "_scope",
        "_send_timeout",
        "_wakeup",
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
        self._queue: deque[str] = deque()
        self._wakeup: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._handle = LoopHandle()

    def deliver(self, message: Message) -> None:
        """Queue `message` unless this member sent it."""
        if message.sender != self.id:
            self.push(message.payload)

    def push(self, payload: str) -> None:
        """Queue `payload` for sending, applying the slow-consumer policy when the queue is full."""
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
        queue.append(payload)
        if self._wakeup is not None:
            self._handle.call(self._wake)

    def push_first(self, payload: str) -> None:
        """Queue `payload` ahead of everything queued so far (a joiner's presence snapshot)."""
        self._queue.appendleft(payload)
        if self._wakeup is not None:
            self._handle.call(self._wake)

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()

    def _abort(self) -> None:
        self._wake()
        if self._scope is not None:
            self._scope.cancel()

    async def run(
        self, send: Callable[[str], Awaitable[None]], on_stall: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        """Send queued payloads with `send` until cancelled, or until the member stalls.

        Returns when the queue overflowed under the "close" policy, or when sending made no
        progress for `send_timeout` seconds; `stalled` then says which, and `on_stall` is
        awaited with it first. (Awaiting it here, in the frame that caught the cancellation,
        rather than in the caller also keeps Python 3.11's line tracing, and so coverage, exact.)
        """
        queue = self._queue
        timeout = self._send_timeout
        clock = self._handle.clock
        with anyio.CancelScope() as scope:
            self._scope = scope
            while not self.overflowed:
                if not queue:
                    self._wakeup = wakeup = anyio.Event()
                    # Check again: another thread may have pushed before it could see the new `_wakeup`.
                    if not queue and not self.overflowed:  # pragma: no branch - that race is rare
                        await wakeup.wait()
                    self._wakeup = None
                    continue
                # Each batch must make progress: the deadline moves on every REFRESH sends, so a member
                # that takes nothing for `timeout` seconds is stopped, and one that is merely slow is not.
                scope.deadline = clock() + timeout
                sent = 0
                while queue and not self.overflowed:
                    await send(queue.popleft())
                    sent += 1
                    if sent % REFRESH == 0:
                        scope.deadline = clock() + timeout
                scope.deadline = math.inf
        self._scope = None
        self.stalled = "slow consumer" if self.overflowed else "send timeout"
        if on_stall is not None:
            await on_stall(self.stalled)
