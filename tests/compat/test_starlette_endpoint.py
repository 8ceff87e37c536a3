"""The scenarios of Starlette's own `WebSocketEndpoint` tests, on `wsendpoints.Endpoint`.

Each subclass is written as a Starlette user writes one, with `Endpoint` in place of
`WebSocketEndpoint`. One deliberate difference: a frame of the wrong type closes 1003 as in
Starlette, but the handler does not also raise `RuntimeError` (which `TestClient` re-raises),
so those tests check the close instead.
"""

from __future__ import annotations

import pytest
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import ClientFactory
from wsendpoints import Endpoint


def expect_1003(client_factory: ClientFactory, app: type[Endpoint], send: str | bytes) -> None:
    client = client_factory(app)
    with client.websocket_connect("/ws") as websocket:
        if isinstance(send, str):
            websocket.send_text(send)
        else:
            websocket.send_bytes(send)
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert closed.value.code == 1003


def test_on_connect_chooses_a_subprotocol(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            assert websocket["subprotocols"] == ["soap", "wamp"]
            await websocket.accept(subprotocol="wamp")

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws", subprotocols=["soap", "wamp"]) as websocket:
        assert websocket.accepted_subprotocol == "wamp"


def test_on_receive_bytes(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        encoding = "bytes"

        async def on_receive(self, websocket: WebSocket, data: bytes) -> None:
            await websocket.send_bytes(b"Message bytes was: " + data)

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.send_bytes(b"Hello, world!")
        assert websocket.receive_bytes() == b"Message bytes was: Hello, world!"
    expect_1003(client_factory, WebSocketApp, "Hello world")


def test_on_receive_json(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        encoding = "json"

        async def on_receive(self, websocket: WebSocket, data: str) -> None:
            await websocket.send_json({"message": data})

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.send_json({"hello": "world"})
        assert websocket.receive_json() == {"message": {"hello": "world"}}
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("Hello world")  # not JSON: Starlette closes 1003, this library 1007
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_text()
    assert closed.value.code == 1007


def test_on_receive_json_binary(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        encoding = "json"

        async def on_receive(self, websocket: WebSocket, data: str) -> None:
            await websocket.send_json({"message": data}, mode="binary")

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.send_json({"hello": "world"}, mode="binary")
        assert websocket.receive_json(mode="binary") == {"message": {"hello": "world"}}


def test_on_receive_text(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        encoding = "text"

        async def on_receive(self, websocket: WebSocket, data: str) -> None:
            await websocket.send_text(f"Message text was: {data}")

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("Hello, world!")
        assert websocket.receive_text() == "Message text was: Hello, world!"
    expect_1003(client_factory, WebSocketApp, b"Hello world")


def test_on_receive_default_encoding(client_factory: ClientFactory) -> None:
    class WebSocketApp(Endpoint):
        encoding = None

        async def on_receive(self, websocket: WebSocket, data: str) -> None:
            await websocket.send_text(f"Message text was: {data}")

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("Hello, world!")
        assert websocket.receive_text() == "Message text was: Hello, world!"


def test_on_disconnect_closes_again_harmlessly(client_factory: ClientFactory) -> None:
    codes: list[int] = []

    class WebSocketApp(Endpoint):
        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            assert close_code == 1001
            await websocket.close(code=close_code)
            codes.append(close_code)

    client = client_factory(WebSocketApp)
    with client.websocket_connect("/ws") as websocket:
        websocket.close(code=1001)
    assert codes == [1001]
