"""Resume under uvicorn with real clients: many members resume at once while many senders burst."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect

from tests.bounded import bounded
from wsendpoints import MemoryBroker, RoomEndpoint

pytestmark = [pytest.mark.server, pytest.mark.anyio]

Serve = Callable[..., str]

SENDERS, BURST, RESUMERS, MISSED = 4, 200, 10, 40


async def receive(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        envelope: dict[str, Any] = json.loads(await ws.recv())
    return envelope


@bounded(120)
async def test_members_resume_at_once_while_senders_burst(serve: Serve) -> None:
    """10 members miss 40 messages, then resume together while 4 senders send 800 more: each gets all, once."""
    room = RoomEndpoint.configure(broker=MemoryBroker(), mode="json", presence_notices=False)
    url = serve(Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", room)]))
    sent = [f"s{s}-{n}" for n in range(MISSED // SENDERS + BURST) for s in range(SENDERS)]
    received: dict[str, list[str]] = {}
    async with anyio.create_task_group() as tasks:
        senders = [await connect(f"{url}/rooms/burst/s{s}", max_queue=None) for s in range(SENDERS)]  # never read
        resumers = [await connect(f"{url}/rooms/burst/r{r}") for r in range(RESUMERS)]
        for ws in [*senders, *resumers]:
            assert (await receive(ws))["type"] == "presence"
        await room.broadcast("burst", "mark")
        since = [(await receive(ws))["id"] for ws in resumers]
        for ws in resumers:
            await ws.close()
        for n in range(MISSED // SENDERS):
            for s, ws in enumerate(senders):
                await ws.send(json.dumps({"text": f"s{s}-{n}"}))
        ready = anyio.Event()

        async def burst(s: int, ws: ClientConnection) -> None:
            await ready.wait()
            for n in range(MISSED // SENDERS, MISSED // SENDERS + BURST):
                await ws.send(json.dumps({"text": f"s{s}-{n}"}))

        async def resume(r: int) -> None:
            async with connect(f"{url}/rooms/burst/r{r}?since={since[r]}") as ws:
                assert (await receive(ws))["type"] == "presence"
                resume = await receive(ws)
                assert resume["recovered"] is True, resume
                ready.set()
                texts: list[str] = []
                while len(texts) < len(sent):
                    texts.append((await receive(ws))["text"])
                received[f"r{r}"] = texts

        for s, ws in enumerate(senders):
            tasks.start_soon(burst, s, ws)
        async with anyio.create_task_group() as resuming:
            for r in range(RESUMERS):
                resuming.start_soon(resume, r)
        for ws in senders:
            await ws.close()
    order = received["r0"]
    assert sorted(order) == sorted(sent), "every message once"
    for s in range(SENDERS):
        assert [t for t in order if t.startswith(f"s{s}-")] == [f"s{s}-{n}" for n in range(len(sent) // SENDERS)]
    assert all(texts == order for texts in received.values()), "one order for everyone"
