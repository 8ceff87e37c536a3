"""Call into an event loop from any thread without blocking, on asyncio and trio alike.

This module is the whole of the rooms' cross-thread support. What it buys: a room is shared by
every event loop of the process, so `TestClient` sessions (each runs its own loop thread, with
or without `with`), an app's own threads and `anyio.run(Chat.broadcast, ...)` all reach the same
members. What it costs, and where:

- `Member.deliver` compares the calling thread with its loop's (`LoopHandle.thread`): the same
  thread (the usual case under uvicorn) queues at once; another thread hands the message to the
  member's loop with `LoopHandle.call`, which keeps the order the calls were made in. So a
  member's queue and its counters are only ever changed in one thread, with no lock.
- `Room` changes its counters of members behind under one `threading.Lock`, only when a queue
  crosses a mark (not per message), and wakes waiting publishers with `LoopHandle.call`.
- Across threads, holding publishers is best effort: a message handed to another loop is
  counted when that loop queues it, so a publisher in another thread can run ahead by what
  is in flight; the queue bounds still hold.

`LoopHandle` also carries the asyncio watchdog that times out stalled sends with one timer
per loop instead of one per send.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator
from contextlib import suppress
from typing import Any, Protocol

import anyio
import anyio.lowlevel
from anyio.lowlevel import current_token

__all__ = ["LoopHandle", "Waiter", "Wakeup", "Watched"]

logger = logging.getLogger("wsendpoints")

_LONGEST_PERIOD = 0.5
"""The watchdog's period when every timeout watched is 2 s or longer."""


class Waiter(Protocol):
    """Something one task waits on until another sets it."""

    def set(self) -> None: ...

    def wait(self) -> Awaitable[object]: ...


class _FutureWaiter:
    """A `Waiter` on one bare asyncio future: cheaper than an `anyio.Event` for a single waiter."""

    __slots__ = ("_future",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._future = loop.create_future()

    def set(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    def wait(self) -> Awaitable[object]:
        return self._future


class Wakeup(Protocol):
    """What an idle writer awaits: on asyncio a bare future, which it is cheapest to await and to set.

    A bare `asyncio.Future` takes the event loop's fast path when a task awaits it; a subclass or a
    wrapper does not (a subclass made the whole idle-and-wake cycle slower, measured).
    """

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...

    def __await__(self) -> Generator[Any, None, object]: ...


class _EventWakeup:
    """A `Wakeup` on trio: an `anyio.Event` behind the future's three methods."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def done(self) -> bool:
        return self._event.is_set()

    def set_result(self, result: None, /) -> None:
        self._event.set()

    def __await__(self) -> Generator[Any, None, object]:
        return self._event.wait().__await__()


def _sleep0() -> Awaitable[None]:
    return asyncio.sleep(0)  # what anyio's checkpoint awaits on asyncio, after finding out it runs there


class Watched(Protocol):
    """What the asyncio watchdog checks: see `LoopHandle.watch`."""

    def check_stall(self, now: float) -> None: ...


_asyncio_handles: weakref.WeakValueDictionary[int, LoopHandle] = weakref.WeakValueDictionary()
"""Each asyncio loop's handle by `id(loop)`, held weakly so that a loop that has ended can be collected.

A handle holds its loop (its bound methods are the fast path), so a dict keyed by the loop would
keep every loop alive for good. While an entry exists its handle keeps the loop, and so the id, alive;
whatever uses the handle (members, send watches, the armed timer) keeps it."""


class LoopHandle:
    """The event loop (and thread) it was made in.

    `call(fn)` runs `fn` at once when called from that thread, else schedules it there and
    returns; calls from one thread run in the order they were made. After the loop has ended,
    `call` from another thread does nothing.

    On asyncio one handle serves the whole loop (`current()`), and its watchdog checks every
    watched object a few times per timeout with one timer, instead of one timer each.
    """

    __slots__ = (
        "__weakref__",
        "_failed",
        "_loop",
        "_period",
        "_schedule",
        "_timeouts",
        "_timer",
        "_watched",
        "checkpoint",
        "clock",
        "thread",
        "wakeup",
    )

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        native = current_token().native_token
        self.clock: Callable[[], float]
        """The loop's clock, as `anyio.current_time()` reads it but without looking the backend up each time."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: dict[Watched, float] = {}
        """What the watchdog checks, each with its timeout."""
        self._timeouts: dict[float, int] = {}
        """How many watched objects have each timeout: the period follows the shortest watched now."""
        self._failed: set[Watched] = set()
        """Watched objects whose check raised, logged once each."""
        self._timer: asyncio.TimerHandle | None = None
        self._period = _LONGEST_PERIOD
        self.wakeup: Callable[[], Wakeup]
        """Return a new single-use `Wakeup` for this loop: set it with `set_result(None)` unless `done()`.

        On asyncio the loop's own `create_future`, called with no wrapper frame."""
        self.checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint
        """Let the loop's other tasks run: `anyio.lowlevel.checkpoint`, without its backend lookup on asyncio.

        Skipping anyio's backend lookup saved 3% of the instructions per delivery when room writers took
        a turn every 16 sends (they now take one every 64)."""
        if isinstance(native, asyncio.AbstractEventLoop):
            self.checkpoint = _sleep0
            self._loop = native
            self._schedule: Callable[[Callable[[], object]], object] = native.call_soon_threadsafe
            self.clock = native.time
            self.wakeup = native.create_future
        else:  # a trio.lowlevel.TrioToken
            self._schedule = native.run_sync_soon  # type: ignore[attr-defined]
            self.clock = sys.modules["trio"].current_time
            self.wakeup = _EventWakeup

    @classmethod
    def current(cls) -> LoopHandle:
        """Return the handle of the running loop: one per asyncio loop, a new one on trio."""
        native = current_token().native_token
        if isinstance(native, asyncio.AbstractEventLoop):
            handle = _asyncio_handles.get(id(native))
            if handle is None:
                handle = _asyncio_handles[id(native)] = cls()
            return handle
        return cls()

    @property
    def has_watchdog(self) -> bool:
        """True on asyncio, where `watch` works; on trio, callers keep their own deadlines."""
        return self._loop is not None

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn` in the loop's thread: now if this is it, else as soon as the loop can."""
        if threading.get_ident() == self.thread:
            fn()
            return
        with suppress(RuntimeError):  # the loop has ended (asyncio: closed; trio: RunFinishedError)
            self._schedule(fn)

    def waiter(self) -> Waiter:
        """Return a new `Waiter` for this loop."""
        if self._loop is not None:
            return _FutureWaiter(self._loop)
        return anyio.Event()

    @property
    def period(self) -> float:
        """The watchdog's period: a quarter of the shortest timeout watched now, at most 0.5 s."""
        return self._period

    @property
    def next_check(self) -> float | None:
        """When (on the loop's clock) the watchdog looks next, or None while it is idle."""
        return None if self._timer is None else self._timer.when()

    def watch(self, watched: Watched, timeout: float) -> None:
        """Call `watched.check_stall(now)` at least every `timeout / 4` seconds until `unwatch` (asyncio only).

        Per connection, not per message: a count per distinct timeout, and the timer moves
        earlier at once when this timeout shortens the period.
        """
        watching = self._watched
        if watched in watching:
            self.unwatch(watched)
        watching[watched] = timeout
        timeouts = self._timeouts
        timeouts[timeout] = timeouts.get(timeout, 0) + 1
        period = timeout / 4
        timer = self._timer
        if period < self._period:
            self._period = period
            if timer is not None:  # armed for the longer period: look no later than a new period from now
                timer.cancel()
                self._timer = self._loop_of_watchdog().call_at(min(timer.when(), self.clock() + period), self._check)
                return
        if timer is None:
            self._start_timer()

    def unwatch(self, watched: Watched) -> None:
        """Stop watching `watched`; the period grows back when it had the shortest timeout watched."""
        timeout = self._watched.pop(watched, None)
        if timeout is None:
            return
        self._failed.discard(watched)
        timeouts = self._timeouts
        left = timeouts[timeout] - 1
        if left:
            timeouts[timeout] = left
            return
        del timeouts[timeout]
        if timeout / 4 <= self._period:  # it was the shortest: O(distinct timeouts), usually one or two
            self._period = min([_LONGEST_PERIOD, *(other / 4 for other in timeouts)])

    def _check(self) -> None:
        self._timer = None  # first: whatever happens below, `watch` and the re-arm see no fired timer
        now = self.clock()
        for watched in list(self._watched):
            try:
                watched.check_stall(now)
            except Exception:
                # One broken check must not switch off every other deadline on this loop.
                if watched not in self._failed:
                    self._failed.add(watched)
                    logger.exception("The send watchdog's check of %r failed; it keeps checking", watched)
        if self._watched:
            self._start_timer()

    def _loop_of_watchdog(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None, "the watchdog needs asyncio: see has_watchdog"
        return loop

    def _start_timer(self) -> None:
        self._timer = self._loop_of_watchdog().call_later(self._period, self._check)
