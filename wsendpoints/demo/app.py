"""The demo app: the library's endpoints behind a home page, an echo page and a room chat page.

The pages are plain HTML, JavaScript and CSS shipped in `wsendpoints/demo/static/`, served from
memory with a strict Content-Security-Policy (scripts and styles from this origin only).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from ..brokers import Broker, MemoryBroker
from ..endpoints import EchoEndpoint, OKEndpoint, RoomEndpoint

__all__ = ["HEADERS", "REDIS_URL_ENV", "STATIC_FILES", "create_app"]

REDIS_URL_ENV = "WSENDPOINTS_REDIS_URL"
"""The environment variable `create_app()` reads a Redis URL from; `python -m wsendpoints --redis` sets it."""

STATIC_FILES = ("index.html", "echo.html", "chat.html", "socket.js", "echo.js", "chat.js", "demo.css", "favicon.svg")
"""The files of `static/` the demo serves, each at `/{name}`; `/` is `index.html`."""

_MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}

HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""Headers of every page and asset."""


def _load_static() -> dict[str, tuple[bytes, str]]:
    static = files("wsendpoints.demo") / "static"
    return {name: ((static / name).read_bytes(), _MEDIA_TYPES[name.rpartition(".")[2]]) for name in STATIC_FILES}


def _broker(redis_url: str | None) -> Broker:
    if not redis_url:
        return MemoryBroker()
    from ..brokers.redis import RedisBroker  # needs the "redis" extra, so only when asked for

    return RedisBroker(redis_url)


def create_app(redis_url: str | None = None) -> Starlette:
    """Build the demo app.

    Mounts `EchoEndpoint` on `/echo`, `OKEndpoint` on `/ok` and a `RoomEndpoint` in JSON mode on
    `/rooms/{room}/{user}`; serves the pages `/` (home), `/echo.html` and `/chat.html`, and
    `GET /rooms/{room}/members`, the sorted names present: `{"room": ..., "users": [...]}`.

    Args:
        redis_url: Share the rooms through the Redis server at this URL (`RedisBroker`). None
            reads it from the environment variable `WSENDPOINTS_REDIS_URL`, which is how uvicorn
            workers get it; if that is unset or empty, rooms live in this process
            (`MemoryBroker`).

    Returns:
        The app; its lifespan closes the broker on shutdown.
    """
    broker = _broker(redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV))
    room = RoomEndpoint.configure(
        mode="json", namespace="demo", broker=broker, max_message_size=4096, rate_limit=(20, 10.0)
    )
    static = _load_static()

    async def members(request: Request) -> Response:
        name = request.path_params["room"]
        return JSONResponse({"room": name, "users": await room.members(name)}, headers=HEADERS)

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        if name not in static:
            return PlainTextResponse("Not Found", 404, headers=HEADERS)
        body, media_type = static[name]
        return Response(body, media_type=media_type, headers=HEADERS)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await broker.aclose()

    app = Starlette(
        routes=[
            WebSocketRoute("/echo", EchoEndpoint),
            WebSocketRoute("/ok", OKEndpoint),
            WebSocketRoute("/rooms/{room}/{user}", room),
            Route("/rooms/{room}/members", members),
            Route("/", page, methods=["GET", "HEAD"]),
            Route("/{name}", page, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
    )
    app.state.broker = broker
    app.state.room = room
    return app
