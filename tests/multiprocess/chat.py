"""The app the `tests/multiprocess` servers run: `RoomEndpoint` on `RedisBroker`, plus a few HTTP routes.

Each server process imports its own module (`app_one`, `app_two`), which makes its app here. The
Redis URL and the presence TTL come from the environment, as `MULTIPROCESS_REDIS_URL` and
`MULTIPROCESS_PRESENCE_TTL`. The library's log lines go to stderr with their level, as
`WARNING wsendpoints: ...`, for the tests to read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from wsendpoints import RoomEndpoint
from wsendpoints.brokers.redis import RedisBroker

__all__ = ["make_app"]


def log_with_levels() -> None:
    """Send the `wsendpoints` logger's lines to stderr as `LEVEL wsendpoints: message` (each process makes one app)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("wsendpoints").addHandler(handler)


def make_app() -> Starlette:
    """Serve rooms at /rooms/{room}/{user}, GET /members/{room} and /missed, and POST /broadcast/{room},
    /send_to/{room}/{user} and /kick/{room}/{user} (body: the text, or the reason).

    JSON-mode rooms, which resume from `?since=`, are at /json/{room}/{user}.
    """
    log_with_levels()
    broker = RedisBroker(
        os.environ["MULTIPROCESS_REDIS_URL"],
        presence_ttl=float(os.environ["MULTIPROCESS_PRESENCE_TTL"]),
        max_backoff=0.5,
    )
    chat = RoomEndpoint.configure(broker=broker)
    json_chat = RoomEndpoint.configure(broker=broker, mode="json", namespace="json")

    async def members(request: Request) -> JSONResponse:
        return JSONResponse(await chat.members(request.path_params["room"]))

    async def missed(request: Request) -> JSONResponse:
        return JSONResponse(broker.missed)

    async def broadcast(request: Request) -> Response:
        await chat.broadcast(request.path_params["room"], (await request.body()).decode())
        return Response(status_code=204)

    async def send_to(request: Request) -> Response:
        text = (await request.body()).decode()
        await chat.send_to(request.path_params["room"], request.path_params["user"], text)
        return Response(status_code=204)

    async def kick(request: Request) -> Response:
        reason = (await request.body()).decode()
        await chat.kick(request.path_params["room"], request.path_params["user"], reason=reason)
        return Response(status_code=204)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broker:
            yield

    return Starlette(
        routes=[
            WebSocketRoute("/rooms/{room}/{user}", chat),
            WebSocketRoute("/json/{room}/{user}", json_chat),
            Route("/members/{room}", members),
            Route("/missed", missed),
            Route("/broadcast/{room}", broadcast, methods=["POST"]),
            Route("/send_to/{room}/{user}", send_to, methods=["POST"]),
            Route("/kick/{room}/{user}", kick, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
