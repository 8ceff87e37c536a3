"""Two uvicorn processes on one Redis form one set of rooms, through crashes and Redis restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType

import anyio
import anyio.abc
import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bounded import bounded
from tests.multiprocess.servers import AppServer
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.server, pytest.mark.anyio]

StartServer = Callable[[str, str, float], AppServer]


class Member:
    """A websocket client in a room that keeps everything it receives."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.received: list[str] = []
        self._taken = 0
        self._arrived = anyio.Event()

    async def keep_receiving(self) -> None:
        try:
            async for message in self.ws:
                assert isinstance(message, str)
                self.received.append(message)
                self._arrived.set()
        except ConnectionClosed:  # its server was killed
            pass

    async def wait_until(self, done: Callable[[list[str]], bool], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while not done(self.received):
                self._arrived = anyio.Event()
                await self._arrived.wait()

    async def receive_until(self, last: str) -> list[str]:
        """Wait for `last`; return what came since the previous call, `last` included."""
        start = self._taken
        await self.wait_until(lambda received: last in received[start:])
        self._taken = self.received.index(last, start) + 1
        return self.received[start : self._taken]

    async def wait_for_chat(self, *senders: str, count: int) -> None:
        """Wait until `count` chat messages from `senders` have come."""
        await self.wait_until(lambda _: len(self.chat(*senders)) >= count, within=30)

    def chat(self, *senders: str) -> list[str]:
        """Return the chat messages received from `senders`, in order."""
        return [m for m in self.received if m.startswith(tuple(f"{sender}: " for sender in senders))]


class Room:
    """Members connected to one room through several servers; leaving the context closes them all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Room:
        self._tasks = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def enter(self, server: AppServer, user: str) -> Member:
        """Connect `user` through `server` and wait until the room lists them (so they receive)."""
        ws = await self._stack.enter_async_context(connect(f"{server.url}/rooms/{self.name}/{user}"))
        member = Member(user, ws)
        self._tasks.start_soon(member.keep_receiving)
        await self.wait_for_members(server, lambda present: user in present)
        return member

    async def members(self, server: AppServer) -> list[str]:
        """Return the room's members as `server` sees them."""
        return await anyio.to_thread.run_sync(server.get, f"/members/{self.name}")

    async def wait_for_members(self, server: AppServer, done: Callable[[list[str]], bool]) -> None:
        """Poll presence until `done` says so: nothing tells when another process joined or dropped out."""
        with anyio.fail_after(10):
            while not done(await self.members(server)):  # noqa: ASYNC110 - presence has no event to await
                await anyio.sleep(0.05)


@bounded(60)
async def test_rooms_span_two_processes(servers: tuple[AppServer, AppServer]) -> None:
    """Delivery, the sender left out, presence, broadcast and leave notices across processes."""
    one, two = servers
    async with Room("span") as room:
        ann = await room.enter(one, "ann")
        bob = await room.enter(two, "bob")
        assert await ann.receive_until("bob joined the chat") == ["bob joined the chat"]
        cid = await room.enter(one, "cid")
        for member in (ann, bob):
            assert await member.receive_until("cid joined the chat") == ["cid joined the chat"]
        await ann.ws.send("hello from one")
        for member in (bob, cid):
            assert await member.receive_until("ann: hello from one") == ["ann: hello from one"]
        await bob.ws.send("hello from two")
        for member in (ann, cid):
            assert await member.receive_until("bob: hello from two") == ["bob: hello from two"]
        for server in servers:
            assert await room.members(server) == ["ann", "bob", "cid"]
        await anyio.to_thread.run_sync(two.post, "/broadcast/span", "news for all")
        for member in (ann, bob, cid):  # nobody got their own message back before the news
            assert await member.receive_until("news for all") == ["news for all"]
        await bob.ws.close()
        for member in (ann, cid):
            assert await member.receive_until("bob left the chat") == ["bob left the chat"]
        for server in servers:
            assert await room.members(server) == ["ann", "cid"]


@bounded(60)
async def test_every_member_sees_one_order_of_500_messages(servers: tuple[AppServer, AppServer]) -> None:
    """Four senders on two processes send 500 messages at once; everyone sees them in one order."""
    one, two = servers
    senders = ["s1", "s2", "s3", "s4"]
    async with Room("order") as room:
        watchers = [await room.enter(one, "w1"), await room.enter(two, "w2")]
        members = [await room.enter(server, name) for server, name in zip([one, one, two, two], senders, strict=True)]

        async def send(member: Member) -> None:
            for n in range(125):
                await member.ws.send(f"{member.name}-{n}")

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(send, member)
        for watcher in watchers:
            await watcher.wait_for_chat(*senders, count=500)
        for member in members:
            await member.wait_for_chat(*(name for name in senders if name != member.name), count=375)
    order = watchers[0].chat(*senders)
    assert watchers[1].chat(*senders) == order
    for name in senders:
        assert [m for m in order if m.startswith(f"{name}: ")] == [f"{name}: {name}-{n}" for n in range(125)]
    for member in members:
        assert member.chat(*senders) == [m for m in order if not m.startswith(f"{member.name}: ")]


@bounded(60)
async def test_a_killed_process_drops_out_of_presence(redis_server: RedisServer, start_server: StartServer) -> None:
    one = await anyio.to_thread.run_sync(start_server, "app_one", redis_server.url, 1.0)
    two = await anyio.to_thread.run_sync(start_server, "app_two", redis_server.url, 1.0)
    async with Room("killed") as room:
        ann = await room.enter(one, "ann")
        await room.enter(two, "bob")
        await room.enter(two, "cid")
        assert await room.members(one) == ["ann", "bob", "cid"]
        await anyio.to_thread.run_sync(two.kill)
        killed = time.monotonic()
        await room.wait_for_members(one, lambda present: present == ["ann"])
        # presence_ttl (1 s) plus a margin for the reaper and two shared cores; the wait above is the event.
        assert time.monotonic() - killed < 1.0 + 3.0
        await anyio.to_thread.run_sync(one.post, "/broadcast/killed", "still here")
        received = await ann.receive_until("still here")
        assert received[:2] == ["bob joined the chat", "cid joined the chat"]
        assert sorted(received[2:4]) == ["bob left the chat", "cid left the chat"]  # once each, as it was pruned
        assert received[4:] == ["still here"]


@bounded(60)
async def test_members_get_every_message_in_order_across_a_redis_restart(start_server: StartServer) -> None:
    """Clients keep sending through both processes while Redis is down for 2 s and comes back empty."""
    with RedisServer() as redis_server:
        one = await anyio.to_thread.run_sync(start_server, "app_one", redis_server.url, 1.5)
        two = await anyio.to_thread.run_sync(start_server, "app_two", redis_server.url, 1.5)
        async with Room("restart") as room:
            watchers = [await room.enter(one, "w1"), await room.enter(two, "w2")]
            senders = [await room.enter(one, "a"), await room.enter(two, "b")]
            restarted = anyio.Event()
            sent = {"a": 0, "b": 0}

            async def send(member: Member) -> None:
                after = 0
                while after < 100:
                    await member.ws.send(f"{member.name}-{sent[member.name]}")
                    sent[member.name] += 1
                    after += restarted.is_set()
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                for member in senders:
                    tg.start_soon(send, member)
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(redis_server.stop)
                await anyio.sleep(2)
                await anyio.to_thread.run_sync(redis_server.start)
                restarted.set()
            total = sent["a"] + sent["b"]
            for watcher in watchers:
                await watcher.wait_for_chat("a", "b", count=total)
            for member, other in zip(senders, ["b", "a"], strict=True):
                await member.wait_for_chat(other, count=sent[other])
            await room.wait_for_members(one, lambda present: present == ["a", "b", "w1", "w2"])
        for member in [*watchers, *senders]:
            for name in "ab":
                if name != member.name:
                    assert member.chat(name) == [f"{name}: {name}-{n}" for n in range(sent[name])]
        assert len(watchers[0].chat("a", "b")) == len(watchers[1].chat("a", "b")) == total


def test_app_server_says_what_went_wrong(redis_server: RedisServer) -> None:
    server = AppServer("no_such_app", redis_server.url)
    with pytest.raises(RuntimeError, match="no_such_app did not start"):
        server.start()
    server.kill()


@bounded(90)
async def test_burst_of_2000_reaches_members_on_both_processes(servers: tuple[AppServer, AppServer]) -> None:
    """One sender's 2,000 messages in a row reach members on both processes, all of them, in order."""
    one, two = servers
    async with Room("burst") as room:
        readers = [await room.enter(server, f"r{n}") for n, server in enumerate([one, two] * 5)]
        sender = await room.enter(one, "sender")
        sent = [f"m{n}" for n in range(2000)]
        for text in sent:
            await sender.ws.send(text)
        for reader in readers:
            await reader.wait_for_chat("sender", count=2000)
            assert reader.chat("sender") == [f"sender: {text}" for text in sent]
            assert reader.ws.close_code is None
        assert sender.ws.close_code is None


async def connections(redis_server: RedisServer, room: str) -> int:
    """Return how many connections `room` has in Redis: nothing tells when a process has handled a close."""
    client = redis.asyncio.Redis.from_url(redis_server.url, protocol=2)
    try:
        return int(await client.hlen(f"wsendpoints:members:rooms%2F{room}".encode()))
    finally:
        await client.aclose()


async def wait_for_connections(redis_server: RedisServer, room: str, count: int) -> None:
    present = -1
    with anyio.fail_after(10):
        while present != count:  # a poll of Redis: no event tells
            await anyio.sleep(0.05)
            present = await connections(redis_server, room)


@pytest.mark.parametrize("second", [0, 1], ids=["one-process", "two-processes"])
@bounded(60)
async def test_a_name_with_two_connections_is_announced_once(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer, second: int
) -> None:
    one, two = servers
    async with Room(f"twice{second}") as room:
        bob = await room.enter(one, "bob")
        cid = await room.enter(two, "cid")
        assert await bob.receive_until("cid joined the chat") == ["cid joined the chat"]
        first_tab = await room.enter(one, "alice")
        second_tab = await room.enter(servers[second], "alice")
        await second_tab.ws.send("from the second tab")
        for member in (bob, cid):  # one join notice, before the message
            assert await member.receive_until("alice: from the second tab") == [
                "alice joined the chat",
                "alice: from the second tab",
            ]
        await first_tab.ws.close()
        await wait_for_connections(redis_server, room.name, 3)
        await second_tab.ws.send("still me")
        for member in (bob, cid):  # no leave notice while a connection of alice is left
            assert await member.receive_until("alice: still me") == ["alice: still me"]
        for server in servers:
            assert await room.members(server) == ["alice", "bob", "cid"]
        await second_tab.ws.close()
        await room.wait_for_members(one, lambda present: present == ["bob", "cid"])
        await anyio.to_thread.run_sync(two.post, f"/broadcast/{room.name}", "end")
        for member in (bob, cid):
            assert await member.receive_until("end") == ["alice left the chat", "end"]


@bounded(60)
async def test_send_to_and_kick_on_one_process_reach_the_user_on_both(
    servers: tuple[AppServer, AppServer], redis_server: RedisServer
) -> None:
    one, two = servers
    async with Room("direct") as room:
        bob = await room.enter(one, "bob")
        alicia = await room.enter(two, "alicia")
        tabs = [await room.enter(two, "alice"), await room.enter(one, "alice")]
        await wait_for_connections(redis_server, room.name, 4)
        await anyio.to_thread.run_sync(one.post, "/send_to/direct/alice", "your export is ready")
        await anyio.to_thread.run_sync(one.post, "/broadcast/direct", "mark")
        for member in tabs:
            assert (await member.receive_until("mark"))[-2:] == ["your export is ready", "mark"]
        for member in (bob, alicia):
            assert "your export is ready" not in await member.receive_until("mark")
        await anyio.to_thread.run_sync(one.post, "/kick/direct/alice", "kicked by a moderator")
        await wait_for_connections(redis_server, room.name, 2)  # each process reads the kick, closes, leaves
        with anyio.fail_after(10):
            for member in tabs:
                await member.ws.wait_closed()
                assert (member.ws.close_code, member.ws.close_reason) == (1008, "kicked by a moderator")
        await room.wait_for_members(two, lambda present: present == ["alicia", "bob"])
        await anyio.to_thread.run_sync(two.post, "/broadcast/direct", "end")
        for member in (bob, alicia):
            assert await member.receive_until("end") == ["alice left the chat", "end"]
