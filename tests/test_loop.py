"""The asyncio watchdog of `LoopHandle`: its period, its timer, its failures, and its loop's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import anyio
import pytest

from wsendpoints._deadline import SendWatch
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


class Failing:
    """A watched object whose check always raises."""

    def check_stall(self, now: float) -> None:
        raise RuntimeError("broken check")


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


def test_watchdog_keeps_checking_the_others_when_one_check_raises(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        handle = LoopHandle.current()
        failing, counting = Failing(), Counting()
        handle.watch(failing, 0.04)  # looked at first in each round
        handle.watch(counting, 0.04)
        await counting.wait_for(3)  # the failing check raised in each of these rounds
        handle.unwatch(failing)
        handle.unwatch(counting)
        assert handle.period == 0.5

    with caplog.at_level(logging.ERROR, "wsendpoints"):
        anyio.run(scenario)
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1  # once, not once per round
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "broken check"


def test_loop_handle_lets_an_ended_loop_be_collected() -> None:
    """Neither a loop's handle nor what it watched keeps the loop alive once `asyncio.run` returns."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def connection() -> None:
        watch = SendWatch.for_current_loop(10.0)
        assert watch is not None
        watch.close()
        LoopHandle.current().watch(Counting(), 1.0)  # never unwatched: the loop ends with the timer armed
        loops.append(weakref.ref(asyncio.get_running_loop()))

    for _ in range(5):
        asyncio.run(connection())
    gc.collect()
    assert [loop() for loop in loops] == [None] * 5
