"""A connection that has ended leaves no reference cycle behind: what it held is freed at once.

Objects in a cycle wait for the cyclic garbage collector's next full collection, which may be long
in coming; meanwhile they hold the connection's data, and the small blocks they pin keep the
allocator from reusing the large buffers freed around them (a server's memory then grows with every
wave of connections). Each test runs with the collector off, so only reference counting frees.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from tests.hostile.rawws import frame
from tests.servers import UvicornThread
from tests.stalled import stalled_client, wait_for
from wsendpoints import CloseCode, EchoEndpoint
from wsendpoints.serving import WebSocketProtocol

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Switch the cyclic garbage collector off for the test (after a collection), and back on after it."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Payload:
    """A received message as the handler holds it, weakly referenceable (bytes are not)."""

    __slots__ = ("__weakref__", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data


class HeldEcho(EchoEndpoint):
    """An echo whose handler holds each message as a `Payload`; records what it held and how it ended."""

    send_timeout = 0.05
    held: ClassVar[list[weakref.ref[Payload]]] = []
    ended: ClassVar[list[tuple[int, str | None]]] = []

    async def decode(self, websocket: WebSocket, message: Message) -> Any:
        data = await super().decode(websocket, message)
        return Payload(data)

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        type(self).held.append(weakref.ref(data))
        await super().on_receive(websocket, data.data)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        type(self).ended.append((close_code, self.closed_by))


async def stalled_send(message: Message) -> None:
    """A client that never reads: the reply and the close frame wait for good."""
    await anyio.sleep_forever()


async def gone_send(message: Message) -> None:
    """A client whose connection is lost: the send fails."""
    raise OSError("connection reset")


@pytest.mark.parametrize(
    ("send_data", "ended", "sent"),
    [
        pytest.param(stalled_send, (CloseCode.TRY_AGAIN_LATER, "server"), ["send", "close"], id="send timeout"),
        pytest.param(gone_send, (CloseCode.ABNORMAL_CLOSURE, "client"), ["send"], id="client gone"),
    ],
)
async def test_a_released_handler_leaves_no_cycle_holding_its_data(
    no_cyclic_gc: None, send_data: Any, ended: tuple[int, str], sent: list[str]
) -> None:
    HeldEcho.held.clear()
    HeldEcho.ended.clear()
    inbox: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "bytes": b"e" * 512 * 1024}]
    events: list[str] = []

    async def receive() -> Message:
        return inbox.pop(0)  # the handler ends during its first message: it never asks for a third

    async def send(message: Message) -> None:
        events.append(message["type"].removeprefix("websocket."))
        if message["type"] != "websocket.accept":
            await send_data(message)

    scope = {"type": "websocket", "path": "/echo", "headers": [], "query_string": b"", "subprotocols": []}
    endpoint = HeldEcho(scope, receive, send)
    ref = weakref.ref(endpoint)
    with anyio.fail_after(10):
        await endpoint
    del endpoint
    assert events == ["accept", *sent]
    assert HeldEcho.ended == [ended]
    assert [held() for held in HeldEcho.held] == [None]  # freed by reference counting alone
    assert ref() is None
    assert gc.collect() == 0, "the connection left objects in reference cycles"


class LoopEcho(EchoEndpoint):
    """A plain echo, whose receive loop answers by itself in a task of its own; records how it ended."""

    ended: ClassVar[list[tuple[int, str | None]]] = []

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        LoopEcho.ended.append((close_code, self.closed_by))


QuickLoopEcho = LoopEcho.configure(send_timeout=0.05)
WatchedLoopEcho = LoopEcho.configure(send_timeout=0.4)  # the watchdog looks every 0.1 s


async def slow_then_gone_send(message: Message) -> None:
    """A send the watchdog sees in flight (it then holds the sending task), then the connection is lost."""
    await anyio.sleep(0.25)
    raise OSError("connection reset")


async def served(endpoint: EchoEndpoint) -> None:
    """Run one connection of `endpoint` to its end (the await last: on Python 3.11 a line after an await that
    ended in an exception caught in another task is not always traced)."""
    with anyio.fail_after(10):
        await endpoint


@pytest.mark.parametrize(
    ("endpoint_class", "send_data", "receive_fails", "ended", "sent"),
    [
        pytest.param(QuickLoopEcho, stalled_send, False, (1013, "server"), ["send", "close"], id="send timeout"),
        pytest.param(LoopEcho, gone_send, False, (1006, "client"), ["send"], id="client gone"),
        pytest.param(WatchedLoopEcho, slow_then_gone_send, False, (1006, "client"), ["send"], id="seen, then gone"),
        pytest.param(LoopEcho, gone_send, True, (1011, "error"), ["close"], id="receive raises"),
    ],
)
def test_a_loop_in_a_task_of_its_own_leaves_no_cycle(
    no_cyclic_gc: None,
    monkeypatch: pytest.MonkeyPatch,
    endpoint_class: type[LoopEcho],
    send_data: Any,
    receive_fails: bool,
    ended: tuple[int, str],
    sent: list[str],
) -> None:
    """The loop's task keeps what it raised, whose traceback keeps the loop's frame: that must not hold the task."""
    monkeypatch.setattr(logging.getLogger("wsendpoints"), "disabled", True)  # a kept log record holds the traceback
    LoopEcho.ended.clear()
    inbox: list[Message] = [{"type": "websocket.connect"}]
    if not receive_fails:
        inbox.append({"type": "websocket.receive", "text": "hi"})
    events: list[str] = []

    async def receive() -> Message:
        if inbox:
            return inbox.pop(0)
        raise RuntimeError("the server's receive failed")  # only asked once the connection should end

    async def send(message: Message) -> None:
        events.append(message["type"].removeprefix("websocket."))
        if message["type"] == "websocket.send":
            await send_data(message)

    scope = {"type": "websocket", "path": "/echo", "headers": [], "query_string": b"", "subprotocols": []}
    endpoint = endpoint_class(scope, receive, send)
    ref = weakref.ref(endpoint)
    # A loop of its own, in a thread: its last step, which holds the finished task, ends with it.
    thread = threading.Thread(target=anyio.run, args=(served, endpoint))
    del endpoint
    thread.start()
    thread.join(10)
    assert events == ["accept", *sent]
    assert LoopEcho.ended == [ended]
    # Freed by reference counting alone. (The event loop that ran it leaves cycles of its own, so no
    # `gc.collect() == 0` here: a cycle through the loop's task would hold the endpoint, which the
    # loop's frame keeps, so this is the test of it.)
    assert ref() is None


class TrackedProtocol(WebSocketProtocol):
    """`WebSocketProtocol` with a short close deadline; each instance and its websockets protocol weakly recorded."""

    close_deadline = 0.3

    made: ClassVar[list[weakref.ref[object]]] = []

    def connection_made(self, transport: Any) -> None:
        type(self).made += [weakref.ref(self), weakref.ref(self.conn)]
        super().connection_made(transport)


@pytest.mark.server
async def test_a_client_that_never_reads_leaves_no_cycle_in_the_protocol_once_dropped(no_cyclic_gc: None) -> None:
    """The demo's attack at the size of one: two 512 KiB echo requests, never a read; `send_timeout` gives up,
    the close frame cannot go, `WebSocketProtocol` aborts the connection; it and websockets' protocol (whose
    frame parser is left waiting for data that never comes) must then be freed at once."""
    TrackedProtocol.made.clear()
    app = Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint.configure(send_timeout=0.3))])
    server = UvicornThread(app, sndbuf=16384, ws=TrackedProtocol)
    port = int(server.start().rpartition(":")[2])
    try:
        with stalled_client(port, "/echo") as client:
            client.sendall(frame(0x2, b"e" * 512 * 1024) * 2)
            await wait_for(lambda: all(made() is None for made in TrackedProtocol.made), within=10)
        assert len(TrackedProtocol.made) == 2
    finally:
        server.stop()


@pytest.mark.server
async def test_a_client_that_breaks_the_protocol_leaves_no_cycle_in_the_protocol(no_cyclic_gc: None) -> None:
    """An unmasked frame fails the connection (1002); websockets keeps the parser's exception, whose traceback
    holds the parser's frame and so the protocol: `WebSocketProtocol` lets go of it once the connection is lost."""
    TrackedProtocol.made.clear()
    server = UvicornThread(Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint)]), ws=TrackedProtocol)
    port = int(server.start().rpartition(":")[2])
    try:
        with stalled_client(port, "/echo") as client:
            client.sendall(b"\x82\x05hello")  # a client's frame must be masked (RFC 6455 5.1)
            await wait_for(lambda: all(made() is None for made in TrackedProtocol.made), within=10)
        assert len(TrackedProtocol.made) == 2
    finally:
        server.stop()
