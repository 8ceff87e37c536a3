"""`Member`: one connection's bounded outbound queue and the writer that drains it.

A room hands each message to every member's queue and moves on; only the member's own writer
awaits its socket. So one member that stops reading delays nobody else: its queue fills and
it is closed (or it drops messages, as configured), or its send stalls past `send_timeout`.
"""

from __future__ import annotations

import asyncio
import math
from asyncio import InvalidStateError
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from functools import partial
from threading import get_ident
from typing import Any, Literal, cast

import anyio

from .._loop import LoopHandle, Wakeup
from ..brokers.base import Deliver, Message
from .resume import Gate
from .room import Item, Room, make_item

__all__ = ["Event", "Member", "SlowConsumerPolicy"]

SlowConsumerPolicy = Literal["close", "drop_oldest", "drop_newest"]

_TURN = 64
"""How many sends in a row, without waiting for messages, a writer makes before it lets the loop's other tasks run."""

_NO_SCOPE = nullcontext()
"""The writer's cancel scope on asyncio, where the task itself is cancelled: none."""

Event = dict[str, Any]
"""An ASGI "websocket.send" event, ready to hand to the server."""

_NO_QUEUE = cast("deque[Item]", ())
"""A member's queue until its first message: empty, and any change to it raises.

An empty deque takes 0.7 KB (its first block), a third of what an idle member costs beyond a
hand-written loop's; a member that is never sent anything never has one. The marks are -1 until
then, so the first message takes the careful way (`_put_past_high`), which makes the queue.
"""


class _Start:
    """An idle member's wakeup before its writer exists: the first message starts the writer.

    A member is woken with `set_result(None)` unless `done()`, as a writer's `Wakeup` is: so
    delivery pays nothing for it. A writer task and its frame take 1.1 KB, measured.
    """

    __slots__ = ("_start",)

    def __init__(self, start: Callable[[], object]) -> None:
        self._start = start

    def done(self) -> bool:
        return False

    def set_result(self, result: None, /) -> None:
        self._start()


class Member:
    """A member of a room: its id, its outbound queue and its writer.

    `deliver` (a broker's `Deliver`) may be called from any thread: from another thread it
    hands the message to the member's own event loop, so the queue and its counters are only
    ever changed in that loop's thread. `push`, `push_first` and `run` run in that loop.

    A member may be screened (`screen()`, the endpoint's `Inbox`): then what the broker delivers
    goes through the screen until it says the member is steady (`unscreen()`); from then on a
    message to the whole room is queued at once, and only messages to one user go through it.

    The queue is bounded by `max_queue` messages and `max_queue_bytes` bytes of text (a single
    message larger than `max_queue_bytes` still goes when the queue is empty). Half of either is
    its high-water mark and a quarter its low-water mark: see `Room` for what crossing them does.

    With `stamp`, each message goes out as its JSON envelope with the broker's id added.

    Attributes:
        id: The member's id, unique across processes; messages whose `sender` it is are skipped.
        gate: Once the member resumes (see `rooms.resume`), what its deliveries go through.
        dropped: How many messages the "drop_oldest"/"drop_newest" policies dropped.
        stalled: Why the writer gave up ("slow consumer", "send timeout"), or None.
        slow: Whether the room judged this member slow (it no longer holds publishers back).
    """

    __slots__ = (
        "_bytes",
        "_direct",
        "_handle",
        "_high",
        "_high_bytes",
        "_is_behind",
        "_items",
        "_look_at",
        "_looked_at",
        "_low",
        "_low_bytes",
        "_max_bytes",
        "_max_queue",
        "_muted",
        "_policy",
        "_progress",
        "_queue",
        "_room",
        "_screen",
        "_seen",
        "_send_timeout",
        "_sending",
        "_slow_after",
        "_stop",
        "_stopping",
        "_thread",
        "_waiter",
        "behind_since",
        "dropped",
        "gate",
        "id",
        "overflowed",
        "slow",
        "stalled",
    )

    def __init__(
        self,
        member_id: str,
        max_queue: int,
        policy: SlowConsumerPolicy,
        send_timeout: float,
        *,
        max_queue_bytes: int = 1024 * 1024,
        slow_after: float = 1.0,
        room: Room | None = None,
        stamp: bool = False,
    ) -> None:
        self.id = member_id
        self.gate: Gate | None = None
        self.dropped = 0
        self.overflowed = False
        self.slow = False
        self.stalled: str | None = None
        self.behind_since = 0.0
        self._max_queue = max_queue
        self._max_bytes = max_queue_bytes
        self._high = self._high_bytes = -1  # until the queue is made: see `_NO_QUEUE`
        self._low, self._low_bytes = max_queue // 4, max_queue_bytes // 4
        self._policy = policy
        self._send_timeout = send_timeout
        self._slow_after = slow_after
        self._room = Room("") if room is None else room
        self._items = self._room.stamped_items if stamp else self._room.items
        self._queue = _NO_QUEUE
        self._bytes = 0
        self._is_behind = False
        self._waiter: Wakeup | _Start | None = None
        self._stop: Callable[[], object] | None = None
        self._stopping = False
        self._muted = False
        self._sending: Event | None = None
        """The event being sent (None while idle or taking a turn): the writer's progress, for watchdog and room.

        One store per send rather than a count and a flag (in-process, per delivery in a paced
        fan-out, 21,060 -> 20,330 instructions). A new event is progress: an event the watchdog or
        the room has already seen is sent as a copy (a message delivered to the member twice).
        """
        self._seen: Event | None = None
        self._progress = 0.0
        self._looked_at: Event | None = None
        self._look_at = 0.0
        self._screen: Deliver | None = None
        self._direct = True
        """Whether a message to the whole room is queued at once: no screen, or a steady one, and no gate."""
        self._handle = LoopHandle.current()
        self._thread = self._handle.thread
        self._room.add(self)

    @property
    def queued(self) -> tuple[int, int]:
        """How many messages, and how many bytes of text, wait in the queue."""
        return len(self._queue), self._bytes

    def deliver(self, message: Message) -> None:
        """Queue `message` unless this member sent it: the broker's `Deliver`, from any thread.

        The steady state (see `screen()`) queues here, without a call: a message's way from the
        broker to a member's queue is one call, as in a hand-written fan-out (in-process, per
        delivery in a paced fan-out, 22,600 -> 21,060 instructions with the writer's own frames
        gone too; see `run`).
        """
        if not self._direct or message.to is not None:
            screen = self._screen
            if screen is None:
                self.take(message)
            else:
                screen(message)
            return
        if message.sender != self.id:
            last = self._items.last  # the item made for the member before: no call (ItemCache)
            item = last[1] if last[0] is message else self._items.item(message)
            if get_ident() != self._thread:
                self._handle.call(partial(self._put, item))
                return
            queue = self._queue
            total = self._bytes + item[1]
            if len(queue) >= self._high or total > self._high_bytes:
                self._put(item)  # a mark to cross: the careful way
                return
            queue.append(item)  # `_put`'s usual case, inline
            self._bytes = total
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                try:  # noqa: SIM105 - `suppress()` makes an object per call: +3,900 instructions per delivery, measured
                    waiter.set_result(None)
                except InvalidStateError:  # cancelled with the writer
                    pass

    def take(self, message: Message) -> None:
        """Queue `message` unless this member sent it, or hand it to the gate once resuming; from any thread.

        What a screen passes messages on to.
        """
        if message.sender == self.id:
            return
        if self.gate is not None:  # in the member's loop: the gate's state changes there only
            self._handle.call(partial(self.gate.take, message))
        elif get_ident() == self._thread:
            self._put(self._items.item(message))
        else:
            self._handle.call(partial(self._put, self._items.item(message)))

    def screen(self, screen: Deliver) -> None:
        """Pass every delivery through `screen` (it passes them on to `take`) until `unscreen()`; before subscribing."""
        self._screen = screen
        self._direct = False

    def drop_screen(self) -> None:
        """Forget the screen once the member is no longer subscribed.

        The screen (the endpoint's `Inbox`) holds the endpoint, which holds the member: kept, the
        cycle would keep a connection's objects alive after it ended, until a full collection.
        """
        self._screen = None

    def unscreen(self) -> None:
        """Queue messages to the whole room at once from now on, unless the member resumes; any thread may call it."""
        if self.gate is None:
            self._direct = True

    def put_message(self, message: Message) -> None:
        """Queue `message` whoever sent it (a resuming member's history), stamped as this member's are."""
        self._put(self._items.item(message))

    def resume(self, position: Callable[[str], tuple[int, ...] | None]) -> Gate:
        """Hold deliveries in a new gate (at most `max_queue` messages and `max_queue_bytes`) until it opens.

        Call it before the member subscribes: deliveries then go through the gate for good.
        """
        gate = self.gate = Gate(self, position, self._max_queue, self._max_bytes)
        self._direct = False
        return gate

    def refuse(self) -> None:
        """Apply the slow-consumer policy to a message there is no room for (held by a full gate)."""
        if self._policy != "close":
            self.dropped += 1
        elif not self.overflowed:
            self.overflowed = True
            self._abort()

    def fits(self, count: int, size: int) -> bool:
        """Whether `count` more messages of `size` bytes in all fit in the queue now."""
        return len(self._queue) + count <= self._max_queue and self._bytes + size <= self._max_bytes

    def push(self, payload: str) -> None:
        """Queue the text `payload` for sending, applying the slow-consumer policy when the queue is full."""
        self._put(make_item(payload))

    def _put(self, item: Item) -> None:
        queue = self._queue
        total = self._bytes + item[1]
        if len(queue) < self._high and total <= self._high_bytes:
            # Under the high-water mark after this one: neither full nor behind, nothing to
            # check (a burst's usual case; a muted member's marks are -1, so it never gets here).
            queue.append(item)
            self._bytes = total
        elif not self._put_past_high(item):
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            try:  # noqa: SIM105 - as in `deliver`
                waiter.set_result(None)
            except InvalidStateError:  # cancelled with the writer
                pass

    def _put_past_high(self, item: Item) -> bool:
        """Queue `item` at or past the high-water mark; return whether it was queued.

        Here the slow-consumer policy applies, and the room counts the member as behind.
        """
        if self._muted:
            return False
        queue = self._made_queue()
        size = item[1]
        if queue and (len(queue) >= self._max_queue or self._bytes + size > self._max_bytes):
            if self._policy == "drop_newest":
                self.dropped += 1
                return False
            if self._policy == "close":
                if not self.overflowed:
                    self.overflowed = True
                    self._abort()
                return False
            while queue and (len(queue) >= self._max_queue or self._bytes + size > self._max_bytes):
                self._bytes -= queue.popleft()[1]
                self.dropped += 1
        queue.append(item)
        self._bytes += size
        if not self._is_behind and (len(queue) > self._high or self._bytes > self._high_bytes) and not self.slow:
            self._is_behind = True
            self._room.fell_behind(self)
        return True

    def push_first(self, payload: str) -> None:
        """Queue the text `payload` ahead of everything queued so far (a joiner's presence snapshot)."""
        if self._muted:
            return
        item = make_item(payload)
        self._made_queue().appendleft(item)
        self._bytes += item[1]
        self._wake()

    def _made_queue(self) -> deque[Item]:
        """Return the queue, made at the first message (see `_NO_QUEUE`); not after `mute()`."""
        queue = self._queue
        if queue is _NO_QUEUE:
            queue = self._queue = deque()
            self._high, self._high_bytes = self._max_queue // 2, self._max_bytes // 2
        return queue

    def start_later(self, start: Callable[[], object]) -> None:
        """Have the first message queued call `start`, which starts the writer (`run`); at once if one is queued.

        So a member that is never sent anything has no writer task. Call it once, before `run`.
        """
        if self._queue:
            start()
        elif not self._muted:
            self._waiter = _Start(start)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        self._wake()
        self._halt()

    def mute(self) -> None:
        """Stop sending for good, once the connection has ended: what is queued, and all that comes, is dropped.

        So the writer can send straight to the server, with no check of the connection per send.
        """
        self._muted = True
        self._high = self._high_bytes = -1  # every `_put` takes the careful path, which drops
        if self._queue:
            self._queue.clear()
        if type(self._waiter) is _Start:  # no writer yet: none to start now
            self._waiter = None
        self._bytes = 0
        if self._is_behind:
            self._is_behind = False
            self._room.drained(self)
        self._halt()

    def _halt(self) -> None:
        """Stop the writer where it awaits, once: the queue overflowed, or a send stalled."""
        if self._stop is not None and not self._stopping:
            self._stopping = True
            self._stop()

    def is_slow(self, now: float, busy_at: float) -> bool:
        """Whether this member, behind, holds its room up on its own.

        True when one send has been waiting on the peer for a quarter of `slow_after` (it stopped
        reading), or when it has been behind for `slow_after` seconds since the room was last busy
        (`busy_at`, when most of the room was behind together). The room calls this, under its
        lock, while publishers wait.
        """
        sending = self._sending
        if sending is None or sending is not self._looked_at:
            self._looked_at, self._look_at = sending, now
        alone_for = now - max(self.behind_since, busy_at)
        stuck_for = now - max(self._look_at, self.behind_since)
        return alone_for >= self._slow_after or stuck_for >= self._slow_after / 4

    def check_stall(self, now: float) -> None:
        """Stop the writer if a send has made no progress for `send_timeout` seconds (the watchdog calls this).

        As `SendWatch` does, the clock starts at the first look that finds a send in flight, never
        at a look while idle: so a send is not judged stalled before `send_timeout`, and is within
        `send_timeout` plus the watchdog's period.
        """
        sending = self._sending
        if sending is None:
            self._seen = None  # idle: the next look that finds a send in flight notes its time
        elif sending is not self._seen:
            self._seen, self._progress = sending, now
        elif now - self._progress >= self._send_timeout:
            self._halt()

    async def run(
        self,
        send: Callable[[Event], Awaitable[None]],
        on_stall: Callable[[str], Awaitable[None]] | None = None,
        on_error: Callable[[Exception], Awaitable[None]] | None = None,
    ) -> None:
        """Send queued events with `send` until cancelled, or until the member stalls.

        Returns when the queue overflowed under the "close" policy, or when sending made no
        progress for `send_timeout` seconds; `stalled` then says which, and `on_stall` is
        awaited with it first. Returns quietly once `mute()` was called. What `send` (or
        `on_stall`) raises ends the writer: it is awaited with `on_error`, or raised without one. (Awaiting them
        here, in the frame that caught the exception, rather than in the caller also keeps
        Python 3.11's line tracing, and so coverage, exact.)

        On asyncio the loop's watchdog looks for stalls, so a send costs no timer; on trio each
        send moves a deadline.

        The writer, not `deliver`, tells the room when the queue is back under its low-water
        mark: that happens as the message leaves the queue, before its send is awaited.

        The loop is written out here rather than called: a writer wakes for every message it is
        given one at a time, and each frame between the task and its wait is resumed and
        suspended again each time (in-process, per delivery in a paced fan-out, about 490
        instructions for two frames; the endpoint starts its writer task on this coroutine).
        """
        if self._muted:
            return
        handle = self._handle
        queue = self._made_queue()
        new_waiter = handle.wakeup
        checkpoint = handle.checkpoint
        clock = handle.clock
        timeout = self._send_timeout
        task: asyncio.Task[Any] | None = None
        scope: anyio.CancelScope | None = None
        if handle.has_watchdog:
            # A bare task cancel rather than an anyio cancel scope: 0.5 KB less per idle member
            # (the scope and its two sets), measured.
            task = asyncio.current_task()
            assert task is not None
            self._stop = task.cancel
            handle.watch(self, timeout)
        else:
            scope = anyio.CancelScope()
            self._stop = scope.cancel
        turn = _TURN
        try:
            with scope if scope is not None else _NO_SCOPE:
                while not self.overflowed:
                    if not queue:
                        if scope is not None:
                            scope.deadline = math.inf  # skipped on asyncio: 0.1 us per idle turn
                        self._waiter = waiter = new_waiter()
                        self._sending = None
                        await waiter
                        turn = _TURN  # waiting was a turn
                        continue
                    event, size = queue.popleft()
                    self._bytes -= size
                    if self._is_behind and len(queue) <= self._low and self._bytes <= self._low_bytes:
                        self._is_behind = self.slow = False
                        self._room.drained(self)
                    if scope is not None:
                        scope.deadline = clock() + timeout
                    if event is self._seen or event is self._looked_at:
                        event = {**event}  # sent again (one message delivered twice): still progress
                    self._sending = event
                    await send(event)
                    turn -= 1  # a count down in small ints: no int made per send
                    if not turn:
                        # Let the other writers of a burst have their turn: a writer that is due but
                        # waits for the loop must not look like one whose peer stopped reading. Every
                        # 64 sends, not 16: server CPU per delivery in a 1,000 x 200 burst 6.0 -> 4.4 us.
                        turn = _TURN
                        self._sending = None
                        await checkpoint()
        except asyncio.CancelledError:
            if task is None or not self._stopping:
                raise
            getattr(task, "uncancel", int)()  # Python 3.11+: take our cancel back; 3.10 keeps no count
        except Exception as exc:
            if on_error is None:
                raise
            self._end(task)
            await on_error(exc)
            return
        finally:
            self._end(task)
        if self._muted:
            return  # the connection ended meanwhile: nothing to tell it
        self.stalled = "slow consumer" if self.overflowed else "send timeout"
        if on_stall is not None:
            try:
                await on_stall(self.stalled)
            except Exception as exc:
                if on_error is None:
                    raise
                await on_error(exc)

    def _end(self, task: asyncio.Task[Any] | None) -> None:
        """The writer has ended: never cancel its task again, and stop watching it."""
        if self._stop is not None:
            self._stop = None
            if task is not None:
                self._handle.unwatch(self)
