"""Resume across processes: a member reconnects to another process with `since` and misses nothing."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.abc
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bounded import bounded
from tests.multiprocess.servers import AppServer
from tests.multiprocess.test_rooms import StartServer
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.server, pytest.mark.anyio]


class Client:
    """A JSON-mode member that keeps every envelope it receives and the id of the last one with an id."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.envelopes: list[dict[str, Any]] = []
        self.last_id: str | None = None
        self.ws: ClientConnection | None = None
        self.closed = anyio.Event()
        self._arrived = anyio.Event()

    async def connect(self, tasks: anyio.abc.TaskGroup, server: AppServer, room: str) -> dict[str, Any]:
        """Connect through `server` (resuming from the last id seen, if any); return the resume envelope, if any."""
        query = "" if self.last_id is None else f"?since={self.last_id}"
        ws = self.ws = await connect(f"{server.url}/json/{room}/{self.user}{query}")
        presence = json.loads(await ws.recv())
        assert presence["type"] == "presence"
        resume: dict[str, Any] = {}
        if self.last_id is not None:
            resume = json.loads(await ws.recv())
            assert resume["type"] == "resume"
        self.closed = anyio.Event()
        tasks.start_soon(self._receive, ws)
        await self.wait_until(lambda: self.user in presence["users"])  # subscribed: it receives
        return resume

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for data in ws:
                envelope = json.loads(data)
                self.envelopes.append(envelope)
                self.last_id = envelope.get("id", self.last_id)
                self._arrived.set()
        except ConnectionClosed:  # its server was stopped
            pass
        finally:
            self.closed.set()

    async def send(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps({"text": text}))

    async def close(self) -> None:
        assert self.ws is not None
        await self.ws.close()
        await self.closed.wait()

    def texts(self, user: str) -> list[str]:
        """The texts of the messages received from `user`, in order."""
        return [e["text"] for e in self.envelopes if e["type"] == "message" and e["user"] == user]

    async def wait_until(self, done: Any, within: float = 20.0) -> None:
        with anyio.fail_after(within):
            while not done():
                self._arrived = anyio.Event()
                await self._arrived.wait()


@bounded(90)
async def test_a_member_that_dropped_resumes_on_the_other_process(servers: tuple[AppServer, AppServer]) -> None:
    """bob on two drops while ann on one keeps sending; bob reconnects to one and gets exactly what he missed."""
    one, two = servers
    room = "resume-drop"
    ann, bob, cid = Client("ann"), Client("bob"), Client("cid")
    sent: list[str] = []
    async with anyio.create_task_group() as tasks:
        await ann.connect(tasks, one, room)
        await cid.connect(tasks, one, room)
        await bob.connect(tasks, two, room)
        for n in range(10):
            sent.append(f"m{n}")
            await ann.send(sent[-1])
        await bob.wait_until(lambda: len(bob.texts("ann")) == 10)
        await bob.close()

        async def keep_sending() -> None:
            for n in range(10, 80):
                sent.append(f"m{n}")
                await ann.send(sent[-1])
                await anyio.sleep(0.002)

        tasks.start_soon(keep_sending)
        await cid.wait_until(lambda: "m29" in cid.texts("ann"))  # m10 to m29 are in the room: bob missed them
        resume = await bob.connect(tasks, one, room)
        await bob.wait_until(lambda: "m79" in bob.texts("ann"))
        assert resume["recovered"] is True
        assert resume["missed"] >= 20
        assert bob.texts("ann") == [f"m{n}" for n in range(80)]
        for client in (ann, bob, cid):
            await client.close()
        tasks.cancel_scope.cancel()


@bounded(120)
async def test_members_of_a_stopped_process_resume_on_the_other(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Process two gets SIGTERM mid-conversation; its members reconnect to one with `since`, nothing lost."""
    one = await anyio.to_thread.run_sync(start_server, "app_one", redis_server.url, 15.0)
    two = await anyio.to_thread.run_sync(start_server, "app_two", redis_server.url, 15.0)
    room = "resume-stop"
    ann, carl, dora = Client("ann"), Client("carl"), Client("dora")
    sent = 0
    async with anyio.create_task_group() as tasks:
        await ann.connect(tasks, one, room)
        for client in (carl, dora):
            await client.connect(tasks, two, room)
        stopped = anyio.Event()

        async def keep_sending() -> None:
            nonlocal sent
            after = 0
            while after < 40:
                await ann.send(f"a{sent}")
                sent += 1
                after += stopped.is_set()
                await anyio.sleep(0.005)

        async def dora_talks() -> None:
            for n in range(20):
                await dora.send(f"d{n}")
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as talk:
            talk.start_soon(keep_sending)
            talk.start_soon(dora_talks)
            await carl.wait_until(lambda: len(carl.texts("ann")) >= 20)
            await anyio.to_thread.run_sync(two.stop)  # SIGTERM
            for client in (carl, dora):
                await client.closed.wait()
            resumes = [await client.connect(tasks, one, room) for client in (carl, dora)]
            stopped.set()
        assert [resume["recovered"] for resume in resumes] == [True, True]
        for client in (carl, dora):
            await client.wait_until(lambda c=client: f"a{sent - 1}" in c.texts("ann"))
            assert client.texts("ann") == [f"a{n}" for n in range(sent)]
        await ann.wait_until(lambda: len(ann.texts("dora")) == 20)
        assert ann.texts("dora") == [f"d{n}" for n in range(20)]
        await carl.wait_until(lambda: len(carl.texts("dora")) == 20)
        assert carl.texts("dora") == ann.texts("dora")
        for client in (ann, carl, dora):
            await client.close()
        tasks.cancel_scope.cancel()
