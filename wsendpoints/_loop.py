"""Call into an event loop from any thread without blocking, on asyncio and trio alike."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from contextlib import suppress

from anyio.lowlevel import current_token

__all__ = ["LoopHandle"]


class LoopHandle:
    """The event loop (and thread) it was made in.

    `call(fn)` runs `fn` at once when called from that thread, else schedules it there and
    returns; calls from one thread run in the order they were made. After the loop has ended,
    `call` from another thread does nothing.
    """

    __slots__ = ("_schedule", "clock", "thread")

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        native = current_token().native_token
        self.clock: Callable[[], float]
        """The loop's clock, as `anyio.current_time()` reads it but without looking the backend up each time."""
        if isinstance(native, asyncio.AbstractEventLoop):
            self._schedule: Callable[[Callable[[], object]], object] = native.call_soon_threadsafe
            self.clock = native.time
        else:  # a trio.lowlevel.TrioToken
            self._schedule = native.run_sync_soon  # type: ignore[attr-defined]
            self.clock = sys.modules["trio"].current_time

    def call(self, fn: Callable[[], object]) -> None:
        """Run `fn` in the loop's thread: now if this is it, else as soon as the loop can."""
        if threading.get_ident() == self.thread:
            fn()
            return
        with suppress(RuntimeError):  # the loop has ended (asyncio: closed; trio: RunFinishedError)
            self._schedule(fn)
