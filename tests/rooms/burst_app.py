"""The rooms of the burst tests, served by `uvicorn tests.rooms.burst_app:app` in a process of its own.

Each kind of room is a `RoomEndpoint` at its defaults but for the option its tests are about, at
`/{kind}/{room}/{user}`; `GET /members/{kind}/{room}` lists a room's members, and
`GET /shout/{kind}/{room}/{count}?size=N` calls `broadcast()` `count` times in a loop, each text
`b{n}` padded with "x" to `size` characters.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from wsendpoints import RoomEndpoint

__all__ = ["ROOMS", "app"]

QUIET: dict[str, Any] = {"join_template": None, "leave_template": None, "max_connections": 5000}

ROOMS: dict[str, type[RoomEndpoint]] = {
    "rooms": RoomEndpoint.configure(namespace="rooms", **QUIET),
    "q64": RoomEndpoint.configure(namespace="q64", max_queue=64, **QUIET),
    "q256": RoomEndpoint.configure(namespace="q256", max_queue=256, **QUIET),
    "json": RoomEndpoint.configure(namespace="json", mode="json", **QUIET),
}
"""The kinds of room: defaults, `max_queue=64`, `max_queue=256` (the slow reader's test), JSON mode."""


async def members(request: Request) -> JSONResponse:
    room = ROOMS[request.path_params["kind"]]
    return JSONResponse(await room.members(request.path_params["room"]))


async def shout(request: Request) -> JSONResponse:
    room = ROOMS[request.path_params["kind"]]
    name, count = request.path_params["room"], int(request.path_params["count"])
    size = int(request.query_params.get("size", "0"))
    for n in range(count):
        await room.broadcast(name, f"b{n}".ljust(size, "x"))
    return JSONResponse(count)


app = Starlette(
    routes=[
        *(WebSocketRoute(f"/{kind}/{{room}}/{{user}}", room) for kind, room in ROOMS.items()),
        Route("/members/{kind}/{room}", members),
        Route("/shout/{kind}/{room}/{count}", shout),
    ]
)
