"""Faults: shutdown under load, churn on one room, a stalled member among active ones."""

from __future__ import annotations

import json
import signal
import socket
import time
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.hostile.conftest import FIGURES, get_json, post, start_server, stop_server, wait_until

pytestmark = [pytest.mark.server, pytest.mark.anyio]

OPTIONS: dict[str, Any] = {"compression": None, "max_queue": None, "max_size": None}


async def drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def test_sigterm_with_100_members_closes_every_client_and_exits_promptly() -> None:
    server = start_server()
    clients = [await connect(f"{server.base}/rooms/term/u{n}", **OPTIONS) for n in range(100)]
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    codes = []
    with anyio.fail_after(15):
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                await drain(ws)
            assert ws.protocol.close_rcvd is not None, "a client got no close frame"
            codes.append(ws.protocol.close_rcvd.code)
    stderr = stop_server(server)
    exited = time.monotonic() - started
    assert set(codes) == {1012}
    assert b"unhandled error" not in stderr
    assert exited < 10  # generous on purpose (shared cores): uvicorn's own graceful shutdown takes about 1 s
    FIGURES["SIGTERM with 100 members"] = {"close frames": len(codes), "code": 1012, "exit s": round(exited, 2)}


async def test_churn_on_one_room_ends_empty_with_the_same_task_count() -> None:
    server = start_server()
    try:
        baseline = get_json(server, "/stats")["tasks"]
        joined = 0

        async def member(n: int) -> None:
            nonlocal joined
            async with connect(f"{server.base}/rooms/churn/u{n}", **OPTIONS) as ws:
                joined += 1
                for m in range(3):
                    await ws.send(json.dumps({"text": f"{n}-{m}"}))
                with anyio.move_on_after(0.02):
                    await drain(ws)

        deadline = time.monotonic() + 10
        with anyio.fail_after(60):
            n = 0
            while time.monotonic() < deadline:
                async with anyio.create_task_group() as tasks:
                    for _ in range(40):
                        tasks.start_soon(member, n)
                        n += 1
                    tasks.start_soon(anyio.to_thread.run_sync, post, server, "/broadcast/churn", "server says hi")
            await wait_until(lambda: get_json(server, "/members/churn") == [])
            await wait_until(lambda: get_json(server, "/stats")["tasks"] == baseline)
    finally:
        stderr = stop_server(server)
    assert b"unhandled error" not in stderr
    FIGURES["10 s churn on one room"] = {"members joined and left": joined, "members left over": 0, "task delta": 0}


async def test_stalled_member_is_dropped_while_50_active_members_get_everything() -> None:
    server = start_server()
    payloads = [f"{n:04d}" + "x" * (16 * 1024) for n in range(300)]
    try:
        stalled_sock = socket.create_connection(("127.0.0.1", server.port))
        stalled_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with connect(f"{server.base}/rooms/stall/stalled", sock=stalled_sock, **OPTIONS) as stalled:
            stalled.transport.pause_reading()
            members = [await connect(f"{server.base}/rooms/stall/m{n}", **OPTIONS) for n in range(50)]
            got = [0] * 50

            async def read(n: int) -> None:
                while got[n] < len(payloads):
                    message = json.loads(await members[n].recv())
                    if message["type"] == "message":
                        assert message["text"] == payloads[got[n]]
                        got[n] += 1

            started = time.monotonic()
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tasks:
                    for n in range(50):
                        tasks.start_soon(read, n)
                    for payload in payloads:
                        await anyio.to_thread.run_sync(post, server, "/broadcast/stall", payload)
                elapsed = time.monotonic() - started
                await wait_until(lambda: "stalled" not in get_json(server, "/members/stall"))
            for ws in members:
                await ws.close()
    finally:
        stderr = stop_server(server)
    assert got == [len(payloads)] * 50
    assert b"unhandled error" not in stderr
    FIGURES["stalled member among 50"] = {
        "messages x members delivered": sum(got),
        "lost": 0,
        "messages/s": round(len(payloads) / elapsed),
        "stalled member": "dropped",
    }
