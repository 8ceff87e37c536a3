"""`SendWatch`: a deadline on a connection's sends without a timer or a clock read per send, on asyncio.

A cancel scope with a deadline around every send costs a timer and a scope per message
(measured under uvicorn: an echo round trip of about 100 µs instead of 85), and noting when
each send began costs a clock read (an echo round trip in-process: 4,700 instructions of 18,000
for the watch, now about 1,000). Instead the sender numbers its sends (`begin`), and the loop's
watchdog (`LoopHandle.watch`, one timer per event loop for every connection) looks at the sends
in flight a few times per `timeout`: a send it finds still running, with the same number, at
least `timeout` seconds after it first saw it has its task cancelled, and `expired()` tells the
sender that this cancellation was the watch's. So a stalled send ends between `timeout` and
`timeout` plus the watchdog's period (a quarter of the shortest timeout watched on the loop now, at most 0.5 s).
On other event loops (trio) `for_current_loop()` gives None and the caller uses a cancel scope
per send.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._loop import LoopHandle

__all__ = ["SendWatch"]

Task = asyncio.Task[Any]


class SendWatch:
    """Cancel any send of one connection that runs longer than `timeout` seconds.

    The sender's part, per send: `sending[task] = next number`, the send, then
    `sending.pop(task, None)`; if the send raised `CancelledError`, `expired(task)` says whether
    the watch cancelled it.
    """

    __slots__ = ("_expired", "_handle", "_seen", "_timeout", "sending")

    def __init__(self, handle: LoopHandle, timeout: float) -> None:
        self._handle = handle
        self._timeout = timeout
        self.sending: dict[Task, int] = {}
        """The sends in flight: each sending task and the number of its send (a new number per send)."""
        self._seen: dict[Task, tuple[int, float]] = {}
        """The sends in flight at the watchdog's last look, with when it first saw each."""
        self._expired: set[Task] | None = None
        """The tasks whose send it cancelled, made on first use: most connections never need it (0.2 KB each)."""
        handle.watch(self, timeout)

    @classmethod
    def for_current_loop(cls, timeout: float) -> SendWatch | None:
        """Return a watch on the running asyncio loop, or None under another event loop."""
        handle = LoopHandle.current()
        return cls(handle, timeout) if handle.has_watchdog else None

    def expired(self, task: Task) -> bool:
        """Whether the `CancelledError` that `task` got is the watch's; if so, withdraw that cancellation."""
        expired = self._expired
        if expired is None or task not in expired:
            return False
        expired.discard(task)
        getattr(task, "uncancel", int)()  # Python 3.11+ counts cancellations; 3.10 has nothing to undo
        return True

    def close(self) -> None:
        """Stop watching; the connection has ended."""
        self._handle.unwatch(self)
        self._seen = {}  # nobody looks again: let go of the tasks last seen sending

    def check_stall(self, now: float) -> None:
        """Cancel the sends that have been running for `timeout` seconds (the loop's watchdog calls this)."""
        sending = self.sending
        if not sending:
            if self._seen:
                self._seen = {}
            return
        last, seen = self._seen, {}
        for task, number in list(sending.items()):
            first = last.get(task)
            if first is None or first[0] != number:
                seen[task] = (number, now)
            elif now - first[1] >= self._timeout:
                del sending[task]  # cancelled once
                self._expired = expired = self._expired or set()
                expired.add(task)
                task.cancel()
            else:
                seen[task] = first
        self._seen = seen
