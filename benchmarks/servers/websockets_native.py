"""The `websockets` package's own asyncio server: echo, OK and rooms with `broadcast()`.

Not ASGI: `benchmarks.serve` runs `serve(sock)` instead of uvicorn.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.asyncio.server import serve as websockets_serve

__all__ = ["handler", "serve"]

ROOMS: dict[str, set[ServerConnection]] = {}


async def handler(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request is not None else ""
    if path == "/echo":
        async for message in websocket:
            await websocket.send(message)
    elif path == "/ok":
        async for _ in websocket:
            await websocket.send("OK!")
    elif path.startswith("/rooms/") and path.count("/") == 3:
        _, _, room, user = path.split("/")
        members = ROOMS.setdefault(room, set())
        members.add(websocket)
        prefix = user + ": "
        try:
            async for message in websocket:
                broadcast((member for member in members if member is not websocket), prefix + str(message))
        finally:
            members.discard(websocket)
            if not members:
                del ROOMS[room]
    else:
        await websocket.close(1008)


async def serve(sock: socket.socket, ready: Callable[[], None]) -> None:
    """Serve on the listening `sock` until SIGTERM or SIGINT; call `ready` once accepting."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with websockets_serve(handler, sock=sock):
        ready()
        await stop.wait()
