"""What a real client sees from the endpoints under uvicorn."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsendpoints import CloseCode, EchoEndpoint, Endpoint, OKEndpoint

pytestmark = [pytest.mark.server, pytest.mark.anyio]

Serve = Callable[[ASGIApp], str]
push_ended = threading.Event()
pushes: list[tuple[str, int, str | None, str | None]] = []


class Failing(Endpoint):
    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if data == "raise":
            raise RuntimeError("secret detail")
        await websocket.close(4000, "x" * 500)  # "long"


class Pusher(Endpoint):
    """A push loop in `on_connect`, as in Starlette's docs: it ends when its client leaves."""

    async def on_connect(self, websocket: WebSocket) -> None:
        await super().on_connect(websocket)
        try:
            for n in range(10_000):  # pragma: no branch - bounded (100 s); the client leaves after 3
                await websocket.send_text(str(n))
                await anyio.sleep(0.01)
        except WebSocketDisconnect as exc:
            pushes.append(("push ended", exc.code, None, None))
            raise

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        pushes.append(("on_disconnect", close_code, self.closed_by, str(self.is_open)))
        push_ended.set()


app = Starlette(
    routes=[
        WebSocketRoute("/echo", EchoEndpoint),
        WebSocketRoute("/ok", OKEndpoint),
        WebSocketRoute("/json", EchoEndpoint.configure(encoding="json")),
        WebSocketRoute("/small", EchoEndpoint.configure(max_message_size=16)),
        WebSocketRoute("/fail", Failing),
        WebSocketRoute("/push", Pusher),
    ]
)


async def drain(ws: ClientConnection) -> None:
    while True:
        await ws.recv()


async def closed_with(url: str, *messages: str | bytes) -> tuple[int | None, str | None]:
    """Send `messages`, then return the close frame the server sent."""
    async with connect(url, open_timeout=5, close_timeout=5) as ws:
        for message in messages:
            await ws.send(message)
        with anyio.fail_after(5), pytest.raises(ConnectionClosed):
            await drain(ws)
    received = ws.protocol.close_rcvd
    assert received is not None, "no close frame received"
    return received.code, received.reason


async def test_echo_and_ok_over_a_real_socket(serve: Serve) -> None:
    base = serve(app)
    async with connect(f"{base}/echo") as ws:
        await ws.send("hi")
        await ws.send(b"\x00\x01")
        with anyio.fail_after(5):
            assert await ws.recv() == "hi"
            assert await ws.recv() == b"\x00\x01"
    async with connect(f"{base}/ok") as ws:
        await ws.send(b"bytes")
        with anyio.fail_after(5):
            assert await ws.recv() == "OK!"


async def test_handler_error_sends_a_real_1011_close_frame(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    base = serve(app)
    assert await closed_with(f"{base}/fail", "raise") == (CloseCode.INTERNAL_ERROR, "internal error")
    async with connect(f"{base}/echo") as ws:
        await ws.send("server carries on")
        with anyio.fail_after(5):
            assert await ws.recv() == "server carries on"
    assert "secret detail" in caplog.text


async def test_foreign_origin_gets_http_403(serve: Serve) -> None:
    base = serve(app)
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"{base}/echo", origin="https://evil.example"):  # type: ignore[arg-type]
            pass  # pragma: no cover - never reached
    assert info.value.response.status_code == 403
    port = base.rsplit(":", 1)[1]
    async with connect(f"{base}/echo", origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
        await ws.send("same origin")
        with anyio.fail_after(5):
            assert await ws.recv() == "same origin"


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [
        ("1" * 5000, "number too long"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        ('{"x": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe", "invalid UTF-8"),
    ],
)
async def test_json_bombs_close_1007(serve: Serve, bomb: str | bytes, reason: str) -> None:
    assert await closed_with(f"{serve(app)}/json", bomb) == (CloseCode.INVALID_DATA, reason)


async def test_oversized_message_closes_1009(serve: Serve) -> None:
    base = serve(app)
    assert await closed_with(f"{base}/small", "x" * 16, "x" * 17) == (CloseCode.MESSAGE_TOO_BIG, "message too big")


async def test_long_close_reason_arrives_cut(serve: Serve) -> None:
    assert await closed_with(f"{serve(app)}/fail", "long") == (4000, "x" * 123)


async def test_push_loop_learns_its_client_left(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """A send after the client left raises `WebSocketDisconnect` (1006), as in Starlette: the loop ends."""
    base = serve(app)
    push_ended.clear()
    pushes.clear()
    async with connect(f"{base}/push") as ws:
        with anyio.fail_after(5):
            assert [await ws.recv() for _ in range(3)] == ["0", "1", "2"]
    assert await anyio.to_thread.run_sync(push_ended.wait, 5)
    assert pushes == [("push ended", 1006, None, None), ("on_disconnect", 1006, "client", "False")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
