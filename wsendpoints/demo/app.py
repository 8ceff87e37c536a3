"""The demo app: the library's endpoints behind a home page, an echo page and a room chat page.

The pages are plain HTML, JavaScript and CSS shipped in `wsendpoints/demo/static/`, served from
memory with a strict Content-Security-Policy (scripts and styles from this origin only). Given the
host it binds, the app answers only requests addressed to that host (`TrustedHostMiddleware`), so a
DNS-rebinding page cannot reach a demo bound to localhost.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from ..brokers import Broker, MemoryBroker
from ..endpoints import EchoEndpoint, OKEndpoint, RoomEndpoint

__all__ = [
    "ASCII_NAMES",
    "HEADERS",
    "HOST_ENV",
    "RECENT_MESSAGES",
    "REDIS_URL_ENV",
    "STATIC_FILES",
    "allowed_hosts",
    "create_app",
]

REDIS_URL_ENV = "WSENDPOINTS_REDIS_URL"
"""The environment variable `create_app()` reads a Redis URL from; `python -m wsendpoints --redis` sets it."""

HOST_ENV = "WSENDPOINTS_HOST"
"""The environment variable `create_app()` reads the bound host from; `python -m wsendpoints` sets it."""

ASCII_NAMES = r"[A-Za-z0-9_.-]{1,64}"
"""The demo's room and user names: ASCII only, so no two names look alike (`\\w` would let in a Cyrillic a)."""

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

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


def allowed_hosts(host: str) -> list[str] | None:
    """Return the `Host` header names a server bound to `host` answers to; None for all interfaces.

    Loopback (`127.0.0.1`, `localhost`, `::1`, any `127.x`) answers to all three loopback names;
    another address or name only to itself (IPv6 in brackets, as in a `Host` header). A server
    bound to every interface (`0.0.0.0`, `::`, empty) cannot know its names: every host is allowed.
    """
    if host in ("", "0.0.0.0", "::"):
        return None
    if host == "localhost":
        return list(_LOOPBACK_NAMES)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return [host.lower()]
    if address.is_loopback:
        return list(_LOOPBACK_NAMES)
    return [f"[{address}]" if address.version == 6 else str(address)]


RECENT_MESSAGES = 50
"""The most messages `GET /rooms/{room}/history` returns."""


def create_app(redis_url: str | None = None, host: str | None = None) -> Starlette:
    """Build the demo app.

    Mounts `EchoEndpoint` on `/echo`, `OKEndpoint` on `/ok` and a `RoomEndpoint` in JSON mode on
    `/rooms/{room}/{user}`; serves the pages `/` (home), `/echo.html` and `/chat.html`,
    `GET /rooms/{room}/members`, the sorted names present: `{"room": ..., "users": [...]}`, and
    `GET /rooms/{room}/history`, its latest messages (at most 50) as envelopes with their ids:
    `{"room": ..., "messages": [...]}`, which the chat page shows when it could not resume.

    Args:
        redis_url: Share the rooms through the Redis server at this URL (`RedisBroker`). None
            reads it from the environment variable `WSENDPOINTS_REDIS_URL`, which is how uvicorn
            workers get it; if that is unset or empty, rooms live in this process
            (`MemoryBroker`).
        host: The host the server binds: requests with another `Host` header get HTTP 400 (see
            `allowed_hosts()`). None reads it from the environment variable `WSENDPOINTS_HOST`;
            if that is unset or empty, every host is answered.

    Returns:
        The app; its lifespan closes the broker on shutdown.
    """
    broker = _broker(redis_url if redis_url is not None else os.environ.get(REDIS_URL_ENV))
    room = RoomEndpoint.configure(
        mode="json",
        namespace="demo",
        broker=broker,
        max_message_size=4096,
        rate_limit=(20, 10.0),
        join_rate_limit=(30, 10.0),
        name_pattern=ASCII_NAMES,
    )
    static = _load_static()

    async def members(request: Request) -> Response:
        name = request.path_params["room"]
        return JSONResponse({"room": name, "users": await room.members(name)}, headers=HEADERS)

    async def recent(request: Request) -> Response:
        name = request.path_params["room"]
        try:
            messages = await room.history(name, limit=RECENT_MESSAGES)
        except ValueError:
            return PlainTextResponse("invalid room name", 400, headers=HEADERS)
        return JSONResponse({"room": name, "messages": messages}, headers=HEADERS)

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

    hosts = allowed_hosts(host if host is not None else os.environ.get(HOST_ENV, ""))
    middleware = [] if hosts is None else [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    app = Starlette(
        middleware=middleware,
        routes=[
            WebSocketRoute("/echo", EchoEndpoint),
            WebSocketRoute("/ok", OKEndpoint),
            WebSocketRoute("/rooms/{room}/{user}", room),
            Route("/rooms/{room}/members", members),
            Route("/rooms/{room}/history", recent),
            Route("/", page, methods=["GET", "HEAD"]),
            Route("/{name}", page, methods=["GET", "HEAD"]),
        ],
        lifespan=lifespan,
    )
    app.state.broker = broker
    app.state.room = room
    return app
