"""The asyncio watchdog of `LoopHandle`: its period and its timer."""

from __future__ import annotations

import asyncio

import anyio

from wsendpoints._loop import LoopHandle


class Counting:
    """A watched object that counts the watchdog's looks at it."""

    def __init__(self) -> None:
        self.checks = 0
        self.looked = anyio.Event()

    def check_stall(self, now: float) -> None:
        self.checks += 1
        self.looked.set()

    async def wait_for(self, checks: int) -> None:
        with anyio.fail_after(2):
            while self.checks < checks:
                self.looked = anyio.Event()
                await self.looked.wait()


def test_watchdog_period_follows_the_timeouts_watched_now() -> None:
    """One short `send_timeout` that came and went leaves the loop's period as it was."""

    async def scenario() -> None:
        handle = LoopHandle.current()
        ordinary, short, other_short, middling = Counting(), Counting(), Counting(), Counting()
        handle.watch(ordinary, 10.0)
        assert handle.period == 0.5
        handle.watch(short, 0.02)
        handle.watch(other_short, 0.02)
        assert handle.period == 0.005
        handle.unwatch(short)
        assert handle.period == 0.005  # another connection still has that timeout
        handle.watch(middling, 1.0)
        handle.unwatch(middling)
        assert handle.period == 0.005
        handle.unwatch(other_short)
        assert handle.period == 0.5
        handle.watch(ordinary, 1.0)  # watched again with another timeout: counted once, under the new one
        assert handle.period == 0.25
        handle.unwatch(ordinary)
        handle.unwatch(ordinary)  # twice: nothing more to undo
        assert handle.period == 0.5
        handle.watch(ordinary, 10.0)
        await ordinary.wait_for(1)  # the watchdog still runs
        handle.unwatch(ordinary)

    anyio.run(scenario)


def test_watchdog_looks_sooner_when_a_shorter_timeout_comes() -> None:
    """The timer armed for the longer period moves to a new period from now, not a tick later."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handle = LoopHandle.current()
        ordinary, short = Counting(), Counting()
        handle.watch(ordinary, 10.0)
        assert handle.next_check is not None
        handle.watch(short, 0.1)
        next_check = handle.next_check
        assert next_check is not None
        assert next_check <= loop.time() + 0.025
        await short.wait_for(2)
        handle.unwatch(ordinary)
        handle.unwatch(short)

    anyio.run(scenario)
