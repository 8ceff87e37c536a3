"""Room chat across worker processes: `RoomEndpoint` on `RedisBroker`, for `uvicorn --workers N`.

With the default in-process broker each worker has rooms of its own, so two members that land
on different workers never see each other. On `RedisBroker` all workers (and hosts) on one
Redis form one set of rooms: messages, join and leave notices, `broadcast()` and presence reach
every process. GET /rooms/{room} lists who is present on all of them.

Needs redis-py (pip install "wsendpoints[redis]") and a Redis server; the URL comes from the
environment variable REDIS_URL (default redis://127.0.0.1:6379/0).
Run: REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.multiworker:app --workers 4
Then: python -m examples.chat_client ws://127.0.0.1:8000/websocket/lobby/ann (and bob, ...)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsendpoints import RoomEndpoint
from wsendpoints.brokers.redis import RedisBroker

__all__ = ["Chat", "app", "broker"]

broker = RedisBroker(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
"""One per worker process; it connects on first use."""

Chat = RoomEndpoint.configure(broker=broker, namespace="multiworker")


async def members(request: Request) -> JSONResponse:
    """List who is in the room, on every process."""
    room = request.path_params["room"]
    return JSONResponse({"room": room, "members": await Chat.members(room)})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Close the broker on shutdown."""
    async with broker:
        yield


app = Starlette(
    routes=[WebSocketRoute("/websocket/{room}/{user}", Chat), Route("/rooms/{room}", members)],
    lifespan=lifespan,
)
