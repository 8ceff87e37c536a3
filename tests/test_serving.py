from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount, Router, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from tests.redis_server import free_port
from tests.servers import UvicornThread
from tests.stalled import server_sockets, stalled_client, wait_for
from wsendpoints import EchoEndpoint, OKEndpoint, RoomEndpoint
from wsendpoints.serving import CLOSE_DEADLINE, WebSocketProtocol, largest_message, uvicorn_settings

# What the endpoints of the tests accept.


async def function_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()  # pragma: no cover - never served


def test_largest_message_is_the_largest_limit_of_the_mounted_endpoints() -> None:
    app = Starlette(
        routes=[
            WebSocketRoute("/echo", EchoEndpoint.configure(max_message_size=2048)),
            Mount("/more", routes=[WebSocketRoute("/ok", OKEndpoint.configure(max_message_size=5000))]),
            WebSocketRoute("/room/{room}", RoomEndpoint.configure(max_message_size=100)),
        ]
    )
    assert largest_message(app) == 5000
    assert largest_message(Router(routes=[WebSocketRoute("/echo", EchoEndpoint)])) == 1024 * 1024


@pytest.mark.parametrize(
    "route",
    [
        WebSocketRoute("/f", function_endpoint),
        WebSocketRoute("/unlimited", EchoEndpoint.configure(max_message_size=None)),
    ],
    ids=["function", "no limit"],
)
def test_largest_message_is_none_when_a_route_takes_any_size(route: WebSocketRoute) -> None:
    app = Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint), route])
    assert largest_message(app) is None


def test_largest_message_of_an_app_without_websockets_is_none() -> None:
    assert largest_message(Starlette()) is None
    assert largest_message(object()) is None


def test_largest_message_reads_fastapi_routes() -> None:
    app = FastAPI()
    app.router.add_websocket_route("/echo", EchoEndpoint.configure(max_message_size=4096))
    assert largest_message(app) == 4096


def test_uvicorn_settings_name_the_protocol_and_the_message_limit() -> None:
    app = Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint.configure(max_message_size=4096))])
    assert uvicorn_settings(app) == {
        "ws": WebSocketProtocol,
        "ws_max_size": 4096,
        "limit_concurrency": 1000,
        "ws_ping_interval": 20.0,
        "ws_ping_timeout": 20.0,
        "timeout_graceful_shutdown": 10,
    }
    settings = uvicorn_settings(Starlette(), limit_concurrency=None, ws_ping_interval=5, timeout_graceful_shutdown=3)
    assert "ws_max_size" not in settings  # uvicorn's own default stays
    assert (settings["limit_concurrency"], settings["ws_ping_interval"], settings["timeout_graceful_shutdown"]) == (
        None,
        5,
        3,
    )
    uvicorn.Config(app, **uvicorn_settings(app))  # uvicorn takes every one of them


def test_uvicorn_still_has_what_websocket_protocol_relies_on() -> None:
    """Fails loudly when a uvicorn release changes the protocol `WebSocketProtocol` builds on."""
    for method in ("connection_made", "connection_lost", "send"):
        assert method in vars(WebSocketsSansIOProtocol), f"uvicorn's protocol no longer defines {method}()"
    assert inspect.iscoroutinefunction(WebSocketsSansIOProtocol.send)
    # Why `send` starts the deadline first: uvicorn's send waits for the send buffer to drain.
    assert "await self.writable.wait()" in inspect.getsource(WebSocketsSansIOProtocol.send)
    # The attributes the deadline reads, on a protocol as uvicorn makes one.
    app = Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint)])
    config = uvicorn.Config(app, ws=WebSocketProtocol)
    config.load()
    assert config.ws_protocol_class is WebSocketProtocol
    loop = asyncio.new_event_loop()
    try:
        protocol = WebSocketProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    finally:
        loop.close()
    assert protocol.loop is loop
    for name in ("transport", "client", "writable"):
        assert hasattr(protocol, name), f"uvicorn's protocol no longer has {name}"
    assert protocol.close_deadline == CLOSE_DEADLINE


# The deadline, on a real uvicorn in this process: a handler floods a client that never reads, gives up
# (as `send_timeout` would) and closes with 1013.

CHUNK = b"x" * 1024 * 1024
GIVE_UP = 1.0
"""Seconds the flooding handler waits for a stalled send, and then for its close to go out."""


class QuickClose(WebSocketProtocol):
    close_deadline = 0.3


class Flood:
    """The app: `/flood` sends until a send stalls, then closes; `released` is set when the handler returns."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.outcome = ""
        self.app = Starlette(routes=[WebSocketRoute("/flood", self.flood), WebSocketRoute("/forever", self.forever)])

    async def flood(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            with anyio.move_on_after(GIVE_UP):
                await websocket.send_bytes(CHUNK)  # into uvicorn's buffer at once, far past its high-water mark
                await websocket.send_bytes(CHUNK)  # waits for that buffer to drain, which it never does
            with anyio.move_on_after(GIVE_UP) as close:  # a stalled peer may never take the close frame
                await websocket.close(1013, "send timeout")
            self.outcome = "close abandoned" if close.cancelled_caught else "closed"
        except WebSocketDisconnect:
            self.outcome = "disconnected"
        finally:
            self.released.set()

    async def forever(self, websocket: WebSocket) -> None:
        """Send with no deadline of its own, as a plain Starlette handler does."""
        await websocket.accept()
        try:
            for _ in range(64):
                await websocket.send_bytes(CHUNK)
            self.outcome = "sent everything"  # pragma: no cover - the client never reads
        except WebSocketDisconnect:
            self.outcome = "disconnected"
        finally:
            self.released.set()


@pytest.fixture
def flood() -> Flood:
    return Flood()


@contextmanager
def running(app: Starlette, ws: type[WebSocketsSansIOProtocol], **config: Any) -> Iterator[int]:
    """Serve `app` with the WebSocket protocol `ws` and small send buffers; yield the port."""
    server = UvicornThread(app, sndbuf=16384, ws=ws, **config)
    url = server.start()
    try:
        yield int(url.rpartition(":")[2])
    finally:
        server.stop()


@contextmanager
def stalled(port: int, path: str) -> Iterator[int]:
    """Connect a client that never reads; yield its port; close it (the kernel resets the connection) at exit."""
    client = stalled_client(port, path)
    try:
        yield client.getsockname()[1]
    finally:
        client.close()


def test_stalled_client_closes_its_socket_when_it_cannot_connect() -> None:
    with pytest.raises(ConnectionRefusedError):
        stalled_client(free_port(), "/")


@pytest.mark.server
@pytest.mark.anyio
async def test_plain_uvicorn_keeps_the_socket_of_a_peer_that_never_reads(flood: Flood) -> None:
    """The attack: the handler gave up and returned, yet its connection's socket stays open."""
    with running(flood.app, WebSocketsSansIOProtocol) as port, stalled(port, "/flood") as client_port:
        await wait_for(flood.released.is_set, within=10)
        assert flood.outcome == "close abandoned"
        assert server_sockets(os.getpid(), port, {client_port}) == 1


@pytest.mark.server
@pytest.mark.anyio
async def test_websocket_protocol_aborts_a_peer_that_never_reads_within_its_deadline(
    flood: Flood, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wsendpoints")
    with running(flood.app, QuickClose) as port, stalled(port, "/flood") as client_port:
        await wait_for(flood.released.is_set, within=10)
        # The close frame could not go: the connection was aborted 0.3 s into the close, and the
        # handler's close returned as for a lost connection, long before it would have given up.
        assert flood.outcome == "disconnected"
        await wait_for(lambda: server_sockets(os.getpid(), port, {client_port}) == 0, within=5)
    assert "it did not close within 0.3 s" in caplog.text


@pytest.mark.server
@pytest.mark.anyio
async def test_websocket_protocol_frees_a_handler_stuck_in_send_once_the_keepalive_ping_fails(flood: Flood) -> None:
    """Without any send deadline in the app, the unanswered ping closes the connection, and the abort frees it."""
    options = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.2}
    with running(flood.app, QuickClose, **options) as port, stalled(port, "/forever") as client_port:
        await wait_for(flood.released.is_set, within=10)
        assert flood.outcome == "disconnected"
        await wait_for(lambda: server_sockets(os.getpid(), port, {client_port}) == 0, within=5)


@pytest.mark.server
@pytest.mark.anyio
async def test_websocket_protocol_closes_a_peer_that_reads_the_usual_way(caplog: pytest.LogCaptureFixture) -> None:
    async def bye(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(1000, "bye")

    caplog.set_level(logging.INFO, "wsendpoints")
    with running(Starlette(routes=[WebSocketRoute("/bye", bye)]), QuickClose) as port:
        async with connect(f"ws://127.0.0.1:{port}/bye") as ws:
            client_port = ws.local_address[1]
            with anyio.fail_after(10), pytest.raises(ConnectionClosedOK) as closed:
                await ws.recv()
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "bye")  # type: ignore[union-attr]
        await wait_for(lambda: server_sockets(os.getpid(), port, {client_port}) == 0, within=5)
    assert "aborting" not in caplog.text
