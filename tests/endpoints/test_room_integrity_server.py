"""Rooms under uvicorn, with real clients: bad broadcasts never reach members, churn is limited."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.bounded import bounded
from tests.endpoints.test_room_integrity import BAD_BROADCASTS, say_app
from wsendpoints import CloseCode, MemoryBroker, RoomEndpoint

pytestmark = [pytest.mark.server, pytest.mark.anyio]

Serve = Callable[..., str]


async def post_json(base: str, path: str, body: bytes) -> tuple[int, Any]:
    """POST `body` as JSON to `path` on the server at ws:// URL `base`; return the status and the decoded answer."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    assert host is not None
    assert port is not None
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with anyio.fail_after(5):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(request + body)
            response = b""
            with suppress(anyio.EndOfStream):
                while True:
                    response += await stream.receive()
    head, _, answer = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(answer)


async def receive(ws: ClientConnection) -> Any:
    with anyio.fail_after(5):
        message = await ws.recv()
    assert isinstance(message, str)
    return json.loads(message) if message.startswith("{") else message


@pytest.mark.parametrize("mode", ["text", "json"])
@bounded(60)
async def test_bad_broadcasts_under_uvicorn_raise_and_every_member_keeps_receiving(
    serve: Serve, mode: Literal["text", "json"]
) -> None:
    """Only a real server encodes the frame: a lone surrogate once closed every member with 1011."""
    endpoint = RoomEndpoint.configure(broker=MemoryBroker(), mode=mode, max_message_size=1024, presence_notices=False)
    base = serve(say_app(endpoint))
    members = [await connect(f"{base}/rooms/lobby/m{n}") for n in range(5)]
    try:
        if mode == "json":
            for ws in members:
                assert (await receive(ws))["type"] == "presence"
        cases = [(room, text, error) for room, text, error, _ in BAD_BROADCASTS if not isinstance(text, bytes)]
        for n, (room, text, error) in enumerate(cases):  # JSON carries no bytes: TestClient covers them
            status, answer = await post_json(base, "/say", json.dumps({"room": room, "text": text}).encode())
            assert status == 400, answer
            assert answer["error"].startswith(error.__name__ + ": ")
            status, answer = await post_json(base, "/say", json.dumps({"room": "lobby", "text": f"good {n}"}).encode())
            assert (status, len(answer)) == (200, 5)
            for ws in members:
                got = await receive(ws)
                assert (got["text"] if mode == "json" else got) == f"good {n}"
    finally:
        for ws in members:
            await ws.close()
    assert all(ws.close_code == CloseCode.NORMAL_CLOSURE for ws in members)


async def join(url: str, **options: Any) -> ClientConnection:
    """Connect to a JSON-mode room; return the connection once its presence snapshot came."""
    # max_queue=None: a websockets client with a full incoming queue stops reading, even the close frame.
    ws = await connect(url, max_queue=None, **options)
    assert (await receive(ws))["type"] == "presence"
    return ws


async def visit(url: str) -> tuple[int | None, str | None]:
    """Join the room and leave at once; return the close code and reason: 1000 if it was let in."""
    async with connect(url, max_queue=None) as ws:
        with suppress(ConnectionClosed):  # refused: the server closed first
            assert (await receive(ws))["type"] == "presence"
    return ws.close_code, ws.close_reason


@bounded(60)
async def test_two_hundred_reconnects_from_one_address_are_refused_past_the_limit(serve: Serve) -> None:
    limit = 20
    endpoint = RoomEndpoint.configure(broker=MemoryBroker(), mode="json", join_rate_limit=(limit, 60))
    base = serve(say_app(endpoint))
    watcher = await join(f"{base}/rooms/busy/watcher")
    visits: list[tuple[int | None, str | None]] = []

    async def reconnect(n: int) -> None:
        visits.append(await visit(f"{base}/rooms/busy/churn{n}"))

    for wave in range(10):  # 200 connections, 20 at a time
        async with anyio.create_task_group() as tasks:
            for n in range(20):
                tasks.start_soon(reconnect, wave * 20 + n)
    accepted = visits.count((CloseCode.NORMAL_CLOSURE, ""))
    refused = visits.count((CloseCode.POLICY_VIOLATION, "too many connections"))
    assert (accepted, refused) == (limit - 1, 200 - limit + 1)  # the watcher was the first of the address's `limit`
    notices = [await receive(watcher) for _ in range(2 * accepted)]
    assert sorted(notice["type"] for notice in notices) == ["join"] * accepted + ["leave"] * accepted
    with anyio.move_on_after(0.3):  # no more notices come: nothing else was let in
        extra = await watcher.recv()
        raise AssertionError(f"unexpected {extra!r}")  # pragma: no cover - only when the limit fails
    # Another address is counted on its own (127.0.0.2 is loopback too).
    other = await join(f"{base}/rooms/busy/elsewhere", local_addr=("127.0.0.2", 0))
    assert (await receive(watcher))["user"] == "elsewhere"
    await other.close()
    await watcher.close()
