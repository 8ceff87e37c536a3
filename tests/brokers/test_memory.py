from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import anyio
import pytest

from wsendpoints import BrokerClosedError, MemoryBroker, Message
from wsendpoints.brokers import Broker, Deliver
from wsendpoints.brokers.base import Entry
from wsendpoints.testing import check_broker


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_memory_broker_passes_the_contract(backend: str) -> None:
    anyio.run(check_broker, MemoryBroker(), backend=backend)


class Forgetful(MemoryBroker):
    """Breaks the contract: drops every tenth message."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        self.count += 1
        if self.count % 10:
            await super().publish(room, message, history_size=history_size, history_ttl=history_ttl)


class LeakyRooms(MemoryBroker):
    """Breaks the contract: rooms that share a prefix share messages."""

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        await super().publish(room[:7], message, history_size=history_size, history_ttl=history_ttl)


class NeverClosed(MemoryBroker):
    async def aclose(self) -> None:
        pass


class GreetsEveryone(MemoryBroker):
    """Breaks the contract: every member is its name's first."""

    async def enter(self, room: str, member: str, user: str, **options: Message | bool | float | None) -> Entry:
        entry = await super().enter(room, member, user, **options)  # type: ignore[arg-type]
        return Entry(entry.count, True, entry.users, entry.after, entry.refused)


class Plain(Broker):
    """A broker with only the five abstract methods, written before presence per name and history."""

    def __init__(self) -> None:
        self.inner = MemoryBroker()

    async def publish(self, room: str, message: Message, *, history_size: int = 0, history_ttl: float = 0.0) -> None:
        await self.inner.publish(room, message)

    @asynccontextmanager
    async def subscribe(
        self, room: str, deliver: Deliver, paused: Callable[[], bool] | None = None
    ) -> AsyncIterator[None]:
        async with self.inner.subscribe(room, deliver, paused):
            yield

    async def join(self, room: str, member: str, user: str) -> int:
        return await self.inner.join(room, member, user)

    async def leave(self, room: str, member: str) -> None:
        await self.inner.leave(room, member)

    async def members(self, room: str) -> list[str]:
        return await self.inner.members(room)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_broker_with_the_default_presence_per_name_passes_the_contract() -> None:
    anyio.run(partial(check_broker, Plain(), history=False))


@pytest.mark.parametrize(
    ("broker", "error", "message"),
    [
        (Forgetful(), TimeoutError, None),
        (LeakyRooms(), AssertionError, "got another room's messages"),
        (NeverClosed(), AssertionError, "publish\\(\\) after aclose\\(\\) must raise BrokerClosedError"),
        (GreetsEveryone(), AssertionError, "a name must be greeted once"),
    ],
)
def test_check_broker_catches_broken_brokers(broker: Broker, error: type[Exception], message: str | None) -> None:
    with pytest.raises(error, match=message):
        anyio.run(check_broker, broker, 0.2)


def test_memory_broker_rooms_leave_nothing_behind() -> None:
    async def scenario() -> None:
        broker = MemoryBroker()
        async with broker.subscribe("r", print), broker.subscribe("r", print):
            await broker.join("r", "m", "ann")
            assert broker.rooms() == ["r"]
            await broker.leave("r", "m")
        assert broker.rooms() == []
        await broker.leave("r", "m")

    anyio.run(scenario)


def test_memory_broker_refuses_work_after_close() -> None:
    async def scenario() -> None:
        async with MemoryBroker() as broker:
            pass
        with pytest.raises(BrokerClosedError):
            await broker.publish("r", Message("x"))
        with pytest.raises(BrokerClosedError):
            await broker.join("r", "m", "ann")
        with pytest.raises(BrokerClosedError):
            await broker.enter("r", "m", "ann")
        with pytest.raises(BrokerClosedError):
            await broker.publish_to("r", "ann", Message("x"))
        with pytest.raises(BrokerClosedError):
            async with broker.subscribe("r", print):
                pass  # pragma: no cover - never reached

    anyio.run(scenario)


def test_memory_broker_delivers_across_threads_in_one_order() -> None:
    """Publishers on several threads' event loops; every subscriber sees the same order."""
    broker = MemoryBroker()
    seen: list[list[str]] = [[], []]
    ready = threading.Barrier(3)

    async def publisher(name: str) -> None:
        ready.wait()
        for n in range(200):
            await broker.publish("r", Message(f"{name}{n}"))

    async def scenario() -> None:
        async with (
            broker.subscribe("r", lambda m: seen[0].append(m.payload)),
            broker.subscribe("r", lambda m: seen[1].append(m.payload)),
        ):
            threads = [threading.Thread(target=anyio.run, args=(publisher, name)) for name in "ab"]
            for thread in threads:
                thread.start()
            ready.wait()
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join)

    anyio.run(scenario)
    assert len(seen[0]) == 400
    assert seen[0] == seen[1]
    for name in "ab":
        assert [p for p in seen[0] if p.startswith(name)] == [f"{name}{n}" for n in range(200)]
