"""`Room`: flow control without sockets, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from tests.rooms.test_member import Socket, run
from wsendpoints import MemoryBroker, Message
from wsendpoints.brokers.base import Deliver
from wsendpoints.rooms import Member, Room


def member_of(room: Room, name: str, max_queue: int = 8, slow_after: float = 0.2) -> Member:
    return Member(name, max_queue, "close", 60.0, room=room, slow_after=slow_after)


def fill(member: Member, count: int) -> None:
    for n in range(count):
        member.push(f"m{n}")


def test_room_counts_a_member_behind_past_half_its_queue_until_under_a_quarter() -> None:
    async def scenario() -> None:
        room = Room("r")
        member, socket = member_of(room, "a"), Socket()
        fill(member, 4)
        assert (room.behind, room.paused()) == (0, False)
        member.push("m4")  # 5 > 8 // 2
        assert (room.behind, room.paused(), member.queued) == (1, True, (5, 10))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            await socket.wait_for(3)  # 2 left: at a quarter of 8
            assert room.behind == 0
            tasks.cancel_scope.cancel()

    run(scenario)


def test_room_bytes_count_as_much_as_messages() -> None:
    async def scenario() -> None:
        room = Room("r")
        member = Member("a", 100, "close", 60.0, room=room, max_queue_bytes=100)
        member.push("x" * 51)
        assert room.behind == 1
        member.push("y" * 60)  # over 100 bytes: the close policy
        assert member.overflowed

    run(scenario)


def test_room_drop_oldest_drops_until_the_bytes_fit() -> None:
    async def scenario() -> None:
        member = Member("a", 100, "drop_oldest", 60.0, max_queue_bytes=100)
        for text in ("a" * 40, "b" * 40, "c" * 15):
            member.push(text)
        member.push("d" * 60)
        assert (member.dropped, member.queued) == (2, (2, 75))
        member.push("e" * 200)  # bigger than the whole budget: goes alone
        assert member.queued == (1, 200)

    run(scenario)


def test_publisher_waits_until_the_room_drains() -> None:
    async def scenario() -> None:
        room = Room("r")
        member, socket = member_of(room, "a", slow_after=60), Socket()
        other = member_of(room, "b", slow_after=60)
        fill(member, 6)
        fill(other, 6)
        socket.stall()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, socket.send)
            tasks.start_soon(other.run, Socket().send)
            with anyio.move_on_after(0.2) as waited:
                await room.hold(5)
            assert waited.cancelled_caught  # one of two behind, but not for slow_after: everyone waits
            socket.flowing.set()
            with anyio.fail_after(1):
                await room.hold(5)
            assert not member.slow
            tasks.cancel_scope.cancel()

    run(scenario)


def test_member_behind_alone_is_judged_slow_and_stops_holding_the_room() -> None:
    async def scenario() -> None:
        room = Room("r")
        slow = member_of(room, "slow")
        member_of(room, "ok")
        fill(slow, 6)
        with anyio.fail_after(1):
            await room.hold(5)
        assert slow.slow
        assert room.behind == 0
        fill(slow, 3)  # counted no more, until its queue drains
        assert room.behind == 0
        assert slow.overflowed

    run(scenario)


def test_members_behind_together_are_not_judged_however_long() -> None:
    async def scenario() -> None:
        room = Room("r")
        members = [member_of(room, name) for name in "abc"]
        for member in members[:2]:
            fill(member, 6)
        with anyio.move_on_after(0.5):  # more than twice slow_after
            await room.hold(5)
        assert not any(member.slow for member in members)
        await room.hold(0.1)  # the publisher's bound: then it goes on
        assert room.behind == 2

    run(scenario)


def test_member_whose_send_waits_on_its_peer_is_slow_even_when_the_room_is_busy() -> None:
    async def scenario() -> None:
        room = Room("r")
        stuck, socket = member_of(room, "stuck", max_queue=100, slow_after=0.2), Socket()
        busy = member_of(room, "busy", max_queue=100, slow_after=60)
        socket.stall()
        fill(stuck, 60)
        fill(busy, 60)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stuck.run, socket.send)
            with anyio.move_on_after(1):
                await room.hold(5)
            assert stuck.slow
            assert not busy.slow
            tasks.cancel_scope.cancel()

    run(scenario)


def test_broker_asking_paused_judges_a_stuck_member_with_no_publisher_waiting() -> None:
    """A room whose publishers are in other processes: its broker's reader asks `paused()`, nobody waits in `hold()`."""

    async def scenario() -> None:
        room = Room("r")
        stuck, socket = member_of(room, "stuck", max_queue=100, slow_after=0.2), Socket()
        member_of(room, "reader", max_queue=100)
        socket.stall()
        fill(stuck, 60)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stuck.run, socket.send)
            with anyio.fail_after(1):
                while room.paused():  # noqa: ASYNC110 - a broker's reader asks on its own clock, every 50 ms
                    await anyio.sleep(0.05)
            assert stuck.slow
            tasks.cancel_scope.cancel()

    run(scenario)


def test_room_leaves_the_registry_with_its_last_member() -> None:
    async def scenario() -> None:
        broker = MemoryBroker()
        room = Room.of(broker, "r")
        assert Room.of(broker, "r") is room
        member = member_of(room, "a")
        async with room.joined(broker, member):
            assert Room.find(broker, "r") is room
            assert room.members == 1
        assert Room.find(broker, "r") is None
        assert Room.find(MemoryBroker(), "r") is None
        room.fell_behind(member)  # a late delivery after leaving counts for nothing
        assert room.behind == 0

    run(scenario)


def test_a_stray_room_of_the_same_name_leaves_the_registered_one_alone() -> None:
    async def scenario() -> None:
        broker = MemoryBroker()
        registered = Room.of(broker, "r")
        stray = Room("r")
        stray.discard(broker, member_of(stray, "a"))
        assert Room.find(broker, "r") is registered

    run(scenario)


class OldBroker(MemoryBroker):
    """A broker written before `paused`: a two-parameter `subscribe`."""

    @asynccontextmanager
    async def subscribe(self, room: str, deliver: Deliver) -> AsyncIterator[None]:  # type: ignore[override]
        async with super().subscribe(room, deliver):
            yield


def test_room_subscribes_brokers_without_paused() -> None:
    async def scenario() -> None:
        broker = OldBroker()
        room = Room.of(broker, "r")
        member = member_of(room, "a")
        async with room.joined(broker, member):
            await broker.publish("r", Message("hi"))
        assert member.queued == (1, 2)

    run(scenario)


def test_stalled_member_holds_at_most_max_queue_bytes_of_large_messages() -> None:
    """Issue 15's attack: 1,024 messages of 64 KiB would be 64 MiB; the byte bound keeps it to 1 MiB."""

    async def scenario() -> None:
        member = Member("stalled", 1024, "drop_newest", 60.0)  # the defaults of max_queue and max_queue_bytes
        big = "x" * 64 * 1024
        for _ in range(1024):
            member.push(big)
        assert member.queued == (16, 1024 * 1024)
        assert member.dropped == 1024 - 16

    run(scenario)
