"""Bursts into rooms under uvicorn, with real clients reading as fast as they can: nothing lost, nobody closed.

The server runs in a thread of the test process, so the readers share its CPU: they fall behind
together, which is exactly the load flow control is for.
"""

from __future__ import annotations

import json
import socket
import time
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

from tests.endpoints.test_room_server import Serve, get_json, wait_until
from wsendpoints import MemoryBroker, RoomEndpoint

pytestmark = [pytest.mark.server, pytest.mark.anyio]

# max_queue=None: the client never stops reading on its own; compression=None: payloads stay their size.
CLIENT: dict[str, Any] = {"max_size": None, "max_queue": None, "compression": None}


def make_app(room: type[RoomEndpoint]) -> Starlette:
    async def members(request: Request) -> JSONResponse:
        return JSONResponse(await room.members(request.path_params["room"]))

    async def shout(request: Request) -> JSONResponse:
        count = int(request.path_params["count"])
        for n in range(count):
            await room.broadcast("burst", f"b{n}")
        return JSONResponse(count)

    return Starlette(
        routes=[
            WebSocketRoute("/rooms/{room}/{user}", room),
            Route("/members/{room}", members),
            Route("/shout/{count}", shout),
        ]
    )


def burst_room(**options: Any) -> type[RoomEndpoint]:
    return RoomEndpoint.configure(
        broker=MemoryBroker(), join_template=None, leave_template=None, max_connections=2000, **options
    )


async def read(ws: ClientConnection, count: int, into: list[str]) -> None:
    while len(into) < count:
        message = await ws.recv()
        assert isinstance(message, str)
        into.append(message)


async def send_all(ws: ClientConnection, payloads: list[str]) -> None:
    for payload in payloads:
        await ws.send(payload)


async def run_burst(base: str, members: int, senders: int, per_sender: int, size: int = 0) -> float:
    """Send `per_sender` messages from each sender into a room of `members` readers; return the seconds it took.

    Each payload is padded to `size` characters. Asserts that every reader got every message, each
    sender's in order, and that nobody was closed.
    """
    readers = [await connect(f"{base}/rooms/burst/r{n}", **CLIENT) for n in range(members)]
    writers = [await connect(f"{base}/rooms/burst/s{n}", **CLIENT) for n in range(senders)]
    try:
        received: list[list[str]] = [[] for _ in readers]
        payloads = [[f"{s}-{n}-".ljust(size, "x") for n in range(per_sender)] for s in range(senders)]
        started = time.monotonic()
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tasks:
                for reader, into in zip(readers, received, strict=True):
                    tasks.start_soon(read, reader, senders * per_sender, into)
                for writer, own in zip(writers, payloads, strict=True):
                    tasks.start_soon(send_all, writer, own)
        took = time.monotonic() - started
        for into in received:
            for s in range(senders):
                assert [m for m in into if m.startswith(f"s{s}: ")] == [f"s{s}: {p}" for p in payloads[s]]
        for ws in readers + writers:
            assert ws.close_code is None, f"{ws.close_code} {ws.close_reason}"
        return took
    finally:
        for ws in readers + writers:
            await ws.close()


@pytest.mark.parametrize(
    ("members", "senders", "per_sender", "options"),
    [
        pytest.param(100, 1, 2000, {}, id="100x2000"),
        pytest.param(10, 1, 20000, {}, id="10x20000"),
        pytest.param(500, 1, 200, {}, id="500x200"),
        pytest.param(100, 1, 2000, {"max_queue": 64}, id="100x2000-max_queue=64"),
        pytest.param(50, 10, 500, {}, id="10x500-into-50"),
        pytest.param(50, 1, 2000, {"mode": "json"}, id="json"),
    ],
)
async def test_burst_reaches_every_member_in_order(
    serve: Serve, members: int, senders: int, per_sender: int, options: dict[str, Any]
) -> None:
    room = burst_room(**options)
    base = serve(make_app(room))
    if options.get("mode") == "json":
        await run_json_burst(base, members, per_sender)
    else:
        await run_burst(base, members, senders, per_sender)


async def run_json_burst(base: str, members: int, count: int) -> None:
    readers = [await connect(f"{base}/rooms/burst/r{n}", **CLIENT) for n in range(members)]
    try:
        received: list[list[str]] = [[] for _ in readers]

        async def read_messages(ws: ClientConnection, into: list[str]) -> None:
            while len(into) < count:
                event = json.loads(await ws.recv())
                if event["type"] == "message":  # not the presence snapshot
                    into.append(event["text"])

        with anyio.fail_after(90):
            async with connect(f"{base}/rooms/burst/sender", **CLIENT) as sender, anyio.create_task_group() as tasks:
                for reader, into in zip(readers, received, strict=True):
                    tasks.start_soon(read_messages, reader, into)
                await send_all(sender, [json.dumps({"text": f"m{n}"}) for n in range(count)])
        assert all(into == [f"m{n}" for n in range(count)] for into in received)
        assert all(ws.close_code is None for ws in readers)
    finally:
        for ws in readers:
            await ws.close()


async def test_route_broadcasting_in_a_loop_reaches_every_member(serve: Serve) -> None:
    room = burst_room()
    base = serve(make_app(room))
    readers = [await connect(f"{base}/rooms/burst/r{n}", **CLIENT) for n in range(50)]
    try:
        received: list[list[str]] = [[] for _ in readers]
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tasks:
                for reader, into in zip(readers, received, strict=True):
                    tasks.start_soon(read, reader, 3000, into)
                assert await get_json(base, "/shout/3000", within=90) == 3000
        assert all(into == [f"b{n}" for n in range(3000)] for into in received)
        assert all(ws.close_code is None for ws in readers)
    finally:
        for ws in readers:
            await ws.close()


async def stuck_member(base: str, user: str, max_queue: int | None = None, room: str = "burst") -> ClientConnection:
    """Join a member with a tiny receive buffer; it reads only as its test lets it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((urlsplit(base).hostname, urlsplit(base).port))
    return await connect(f"{base}/rooms/{room}/{user}", sock=sock, **{**CLIENT, "max_queue": max_queue})


def wait_open(port: int, within: float = 20) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (a server starting in a subprocess)."""
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:  # pragma: no cover - only if the server fails to start
                raise
            time.sleep(0.05)


async def absent_from_burst(base: str, user: str) -> bool:
    return user not in await get_json(base, "/members/burst")  # type: ignore[operator]


async def test_stuck_member_leaves_and_holds_nobody_back(serve: Serve) -> None:
    # 1 KiB messages fill the stuck member's socket buffers quickly; sndbuf keeps the kernel's share small.
    room = burst_room()
    base = serve(make_app(room), sndbuf=64 * 1024)
    alone = await run_burst(base, 20, 1, 3000, size=1024)
    stuck = await stuck_member(base, "stuck")
    stuck.transport.pause_reading()
    try:
        with_stuck = await run_burst(base, 20, 1, 3000, size=1024)
        await wait_until(lambda: absent_from_burst(base, "stuck"), within=15)
    finally:
        stuck.transport.resume_reading()
        await stuck.close()
    # A generous bound, wall clock on a shared machine: the stuck member costs the others one
    # judgement (a quarter of slow_after; alone and with it took 1.07 s and 1.03 s on a quiet run),
    # but two identical bursts differed by up to 1.4 s under coverage on the shared 2 cores.
    # 0.9x the rate is the goal; the slack keeps the test about the stuck member, not the machine.
    assert with_stuck <= alone / 0.9 + 3.0, (alone, with_stuck)


async def test_member_reading_at_a_tenth_of_the_pace_is_dropped(serve: Serve) -> None:
    room = burst_room(max_queue=256)
    base = serve(make_app(room), sndbuf=64 * 1024)
    slow = await stuck_member(base, "slow", max_queue=4)  # the client stops reading its socket at 4 messages
    got: list[str] = []

    async def read_slowly() -> None:
        with suppress(ConnectionClosed):
            while True:  # until dropped, within the fail_after below; at most 100 messages a second
                got.append(str(await slow.recv()))
                await anyio.sleep(0.01)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_slowly)
            await run_burst(base, 20, 1, 5000, size=1024)
    # 1013 "slow consumer" when the close frame still fits in the socket, else 1006 (see the README).
    assert slow.close_code in (1013, 1006)
    assert 0 < len(got) < 5000
    await wait_until(lambda: absent_from_burst(base, "slow"))
