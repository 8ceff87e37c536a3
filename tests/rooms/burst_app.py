"""A room at its defaults, for the memory test: `uvicorn tests.rooms.burst_app:app` in a process of its own."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from wsendpoints import RoomEndpoint

__all__ = ["app"]

Room = RoomEndpoint.configure(join_template=None, leave_template=None, max_connections=5000)
app = Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", Room)])
