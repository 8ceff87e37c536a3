"""The app the hostile suite serves with uvicorn in a subprocess: `uvicorn tests.hostile.apps:app`."""

from __future__ import annotations

import asyncio
import os

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from wsendpoints import EchoEndpoint, RoomEndpoint

__all__ = ["Room", "app"]

Room = RoomEndpoint.configure(mode="json", rate_limit=(50, 1), send_timeout=2)


class CountHandshakes:
    """Count the WebSocket handshakes that reach the application, for `/stats`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handshakes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.handshakes += 1
        await self.app(scope, receive, send)


async def members(request: Request) -> JSONResponse:
    return JSONResponse(await Room.members(request.path_params["room"]))


async def stats(request: Request) -> JSONResponse:
    """Tasks and memory of this process, for the suite's figures."""
    status = await anyio.Path(f"/proc/{os.getpid()}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return JSONResponse(
        {
            "tasks": len(asyncio.all_tasks()),
            "rss_kib": int(fields["VmRSS"].split()[0]),
            "peak_rss_kib": int(fields["VmHWM"].split()[0]),
            "handshakes": app.handshakes,
        }
    )


async def broadcast(request: Request) -> JSONResponse:
    await Room.broadcast(request.path_params["room"], (await request.body()).decode())
    return JSONResponse("ok")


app = CountHandshakes(
    Starlette(
        routes=[
            WebSocketRoute("/echo", EchoEndpoint.configure(max_message_size=1024 * 1024)),
            WebSocketRoute("/allow", EchoEndpoint.configure(allowed_origins=["https://app.example.com"])),
            WebSocketRoute("/rooms/{room}/{user}", Room),
            Route("/members/{room}", members),
            Route("/stats", stats),
            Route("/broadcast/{room}", broadcast, methods=["POST"]),
        ]
    )
)
