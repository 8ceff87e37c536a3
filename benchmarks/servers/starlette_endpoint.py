"""Starlette's own `WebSocketEndpoint`, as its documentation shows it: echo and OK."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app"]


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(data)


class OK(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text("OK!")


app = Starlette(routes=[WebSocketRoute("/echo", Echo), WebSocketRoute("/ok", OK)])
