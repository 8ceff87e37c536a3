"""Rooms under uvicorn, with real clients: a stalled member, and churn."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from wsendpoints import MemoryBroker, RoomEndpoint

pytestmark = [pytest.mark.server, pytest.mark.anyio]

Serve = Callable[..., str]


def make_app(room: type[RoomEndpoint]) -> Starlette:
    async def members(request: Request) -> JSONResponse:
        return JSONResponse(await room.members(request.path_params["room"]))

    async def tasks(request: Request) -> JSONResponse:
        return JSONResponse(len(asyncio.all_tasks()))

    return Starlette(
        routes=[
            WebSocketRoute("/rooms/{room}/{user}", room),
            Route("/members/{room}", members),
            Route("/tasks", tasks),
        ]
    )


async def get_json(base: str, path: str, within: float = 5) -> object:
    """GET `path` from the server at ws:// URL `base`, with a plain socket (no HTTP client needed)."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None
    assert port is not None
    with anyio.fail_after(within):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            response = b""
            with suppress(anyio.EndOfStream):
                while True:
                    response += await stream.receive()
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


class Progress:
    """How far each reader got, so that the sender can keep at most `window` messages ahead of the slowest."""

    def __init__(self, readers: int, window: int) -> None:
        self.counts = [0] * readers
        self.window = window
        self.changed = anyio.Event()

    def advance(self, reader: int) -> None:
        self.counts[reader] += 1
        self.changed.set()

    async def wait_to_send(self, n: int) -> None:
        while min(self.counts) < n - self.window:
            self.changed = anyio.Event()
            await self.changed.wait()


async def wait_until(check: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    """Poll `check` until it holds: the state polled lives in the server's thread, out of reach of events."""
    with anyio.fail_after(within):
        while True:
            await anyio.sleep(0.02)
            if await check():
                return


async def absent(base: str, user: str) -> bool:
    return user not in await get_json(base, "/members/big")  # type: ignore[operator]


async def empty(base: str, room: str) -> bool:
    return await get_json(base, f"/members/{room}") == []


async def tasks_are(base: str, count: object) -> bool:
    return await get_json(base, "/tasks") == count


async def drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def receive_count(ws: ClientConnection, count: int, progress: Progress, reader: int) -> list[str]:
    received: list[str] = []
    while len(received) < count:
        message = await ws.recv()
        assert isinstance(message, str)
        received.append(message)
        progress.advance(reader)
    return received


async def test_stalled_member_is_dropped_while_the_others_get_everything(serve: Serve) -> None:
    # The kernel's socket buffers on loopback can take megabytes before a send blocks: whichever comes
    # first, the queue overflowing or a send stalling for send_timeout, must drop the stalled member.
    room = RoomEndpoint.configure(
        broker=MemoryBroker(), max_queue=64, send_timeout=2, join_template=None, leave_template=None
    )
    base = serve(make_app(room), sndbuf=64 * 1024)
    payloads = [f"{n:04d}" + "x" * (16 * 1024 - 4) for n in range(300)]

    stalled_sock = socket.socket()
    stalled_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled_sock.connect((urlsplit(base).hostname, urlsplit(base).port))
    # compression=None: deflate would shrink the repetitive payloads to almost nothing, and nothing would stall.
    options: dict[str, Any] = {"max_size": None, "max_queue": None, "compression": None}
    async with connect(f"{base}/rooms/big/stalled", sock=stalled_sock, **options) as stalled:
        stalled.transport.pause_reading()
        readers = [await connect(f"{base}/rooms/big/r{n}", **options) for n in range(20)]
        try:
            results: dict[int, list[str]] = {}
            # The readers share this process; pacing the sender keeps them from being slow consumers themselves.
            progress = Progress(20, window=16)

            async def read(n: int) -> None:
                results[n] = await receive_count(readers[n], 300, progress, n)

            with anyio.fail_after(60):
                async with connect(f"{base}/rooms/big/sender", **options) as sender, anyio.create_task_group() as tasks:
                    for n in range(20):
                        tasks.start_soon(read, n)
                    for n, payload in enumerate(payloads):
                        await progress.wait_to_send(n)
                        await sender.send(payload)
            expected = [f"sender: {payload}" for payload in payloads]
            assert all(results[n] == expected for n in range(20)), "a reader missed messages"
            await wait_until(lambda: absent(base, "stalled"), within=15)
        finally:
            for reader in readers:
                await reader.close()
        stalled.transport.resume_reading()
        with anyio.fail_after(10), pytest.raises(ConnectionClosed):
            await drain(stalled)
    await wait_until(lambda: empty(base, "big"))


async def test_churn_ends_with_an_empty_room_and_no_leaked_tasks(serve: Serve) -> None:
    room = RoomEndpoint.configure(broker=MemoryBroker())
    base = serve(make_app(room))
    baseline = await get_json(base, "/tasks")

    async def client(n: int) -> None:
        # max_queue=None: a websockets client with a full incoming queue stops reading, even the close frame.
        async with connect(f"{base}/rooms/churn/u{n}", max_queue=None) as ws:
            for m in range(3):
                await ws.send(f"{n}-{m}")
            with anyio.move_on_after(0.05):
                while True:
                    await ws.recv()

    with anyio.fail_after(60):
        for wave in range(4):
            async with anyio.create_task_group() as tasks:
                for n in range(50):
                    tasks.start_soon(client, wave * 50 + n)
        await wait_until(lambda: empty(base, "churn"))
        await wait_until(lambda: tasks_are(base, baseline))
    assert room.broker.rooms() == []  # type: ignore[attr-defined]
