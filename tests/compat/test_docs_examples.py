"""The WebSocket examples of Starlette's and FastAPI's documentation, on `wsendpoints.Endpoint`.

Each keeps the documented app and test, written as an endpoint class (the form these docs give
for Starlette, and which FastAPI mounts with `app.router.add_websocket_route`).
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI, status
from starlette.applications import Starlette
from starlette.exceptions import HTTPException, WebSocketException
from starlette.routing import WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import ClientFactory
from wsendpoints import Endpoint

# Starlette, "Endpoints": a `WebSocketEndpoint` with encoding "text".


class Echo(Endpoint):
    encoding = "text"

    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        await websocket.send_text(f"Message text was: {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        pass


def test_starlette_endpoints_echo(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/ws", Echo)]))
    with client.websocket_connect("/ws") as websocket:
        websocket.send_text("Hello")
        assert websocket.receive_text() == "Message text was: Hello"


# Starlette, "WebSockets": denial responses and `WebSocketException`.


class Guarded(Endpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        if "token" not in websocket.query_params:
            raise HTTPException(status_code=401, detail="Unauthorized")
        if websocket.query_params["token"] != "secret":
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
        await websocket.accept()


def test_starlette_http_exception_before_accept_is_a_denial_response(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/ws", Guarded)]))
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover - never reached
    assert (denied.value.status_code, denied.value.text) == (401, "Unauthorized")
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws?token=wrong"):
        pass  # pragma: no cover - never reached
    assert refused.value.code == status.WS_1008_POLICY_VIOLATION
    with client.websocket_connect("/ws?token=secret") as websocket:
        websocket.close()


# FastAPI, "Testing WebSockets".


class HelloJSON(Endpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"msg": "Hello WebSocket"})
        await websocket.close()


def test_fastapi_testing_websockets(client_factory: ClientFactory) -> None:
    app = FastAPI()
    app.router.add_websocket_route("/ws", HelloJSON)  # type: ignore[arg-type]  # typed for functions
    client = client_factory(app)
    with client.websocket_connect("/ws") as websocket:
        data = websocket.receive_json()
        assert data == {"msg": "Hello WebSocket"}


# FastAPI, "WebSockets: using Depends and others": a cookie or token, else 1008 before accepting.


class Items(Endpoint):
    async def on_connect(self, websocket: WebSocket) -> None:
        token = websocket.cookies.get("session") or websocket.query_params.get("token")
        if token is None:
            raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION)
        self.cookie_or_token = token
        await websocket.accept()

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        await websocket.send_text(f"Session cookie or query token value is: {self.cookie_or_token}")
        q = websocket.query_params.get("q")
        if q is not None:
            await websocket.send_text(f"Query parameter q is: {q}")
        await websocket.send_text(f"Message text was: {data}, for item ID: {websocket.path_params['item_id']}")


def test_fastapi_websocket_with_dependencies(client_factory: ClientFactory) -> None:
    app = FastAPI()
    app.router.add_websocket_route("/items/{item_id}/ws", Items)  # type: ignore[arg-type]  # typed for functions
    client = client_factory(app)
    with client.websocket_connect("/items/foo/ws?token=some-token&q=3") as websocket:
        websocket.send_text("Hello")
        assert websocket.receive_text() == "Session cookie or query token value is: some-token"
        assert websocket.receive_text() == "Query parameter q is: 3"
        assert websocket.receive_text() == "Message text was: Hello, for item ID: foo"
    with client.websocket_connect("/items/bar/ws", headers={"cookie": "session=from-cookie"}) as websocket:
        websocket.send_text("Hi")
        assert websocket.receive_text() == "Session cookie or query token value is: from-cookie"
        assert websocket.receive_text() == "Message text was: Hi, for item ID: bar"
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/items/foo/ws"):
        pass  # pragma: no cover - never reached
    assert refused.value.code == status.WS_1008_POLICY_VIOLATION


# FastAPI, "WebSockets: handling disconnections and multiple clients".


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def send_personal_message(self, message: str, websocket: WebSocket) -> None:
        await websocket.send_text(message)

    async def broadcast(self, message: str) -> None:
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


class Chat(Endpoint):
    encoding = "text"

    async def on_connect(self, websocket: WebSocket) -> None:
        await manager.connect(websocket)

    async def on_receive(self, websocket: WebSocket, data: str) -> None:
        await manager.send_personal_message(f"You wrote: {data}", websocket)
        await manager.broadcast(f"Client #{websocket.path_params['client_id']} says: {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        manager.disconnect(websocket)
        await manager.broadcast(f"Client #{websocket.path_params['client_id']} left the chat")


def test_fastapi_multiple_clients(client_factory: ClientFactory) -> None:
    app = FastAPI()
    app.router.add_websocket_route("/ws/{client_id}", Chat)  # type: ignore[arg-type]  # typed for functions
    client = client_factory(app)
    # One event loop for both sessions (`with client`): the manager's sockets are shared between them.
    with client, client.websocket_connect("/ws/1") as one:
        with client.websocket_connect("/ws/2") as two:
            two.send_text("hi")
            assert two.receive_text() == "You wrote: hi"
            assert one.receive_text() == "Client #2 says: hi"
            assert two.receive_text() == "Client #2 says: hi"
        assert one.receive_text() == "Client #2 left the chat"
    assert manager.active_connections == []
