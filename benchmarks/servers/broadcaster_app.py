"""`broadcaster`'s chat room, as its README writes it, on Starlette.

The backend comes from `BENCH_BROADCAST_URL`: "memory://" (the default) or a Redis URL for
the two-process scenario. Every subscriber receives its own messages too; each member skips
those that start with its own name, so the job is the same as the other peers'.

With Redis the app holds one extra subscription from startup. Without it broadcaster 0.3.1
never delivers anything on redis-py 8: its listener task, woken by the first subscription
before redis-py counts that subscription, finds none, stops listening and waits for a wake-up
that never comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

__all__ = ["app"]

URL = os.environ.get("BENCH_BROADCAST_URL", "memory://")
broadcast = Broadcast(URL)


async def chatroom_ws(websocket: WebSocket) -> None:
    room = websocket.path_params["room"]
    user = websocket.path_params["user"]
    await websocket.accept()

    async with anyio.create_task_group() as task_group:

        async def run_chatroom_ws_receiver() -> None:
            await chatroom_ws_receiver(websocket, room, user)
            task_group.cancel_scope.cancel()

        task_group.start_soon(run_chatroom_ws_receiver)
        await chatroom_ws_sender(websocket, room, user)


async def chatroom_ws_receiver(websocket: WebSocket, room: str, user: str) -> None:
    async for message in websocket.iter_text():
        await broadcast.publish(channel=room, message=f"{user}: {message}")


async def chatroom_ws_sender(websocket: WebSocket, room: str, user: str) -> None:
    own = f"{user}: "
    async with broadcast.subscribe(channel=room) as subscriber:
        async for event in subscriber:  # type: ignore[union-attr]
            if event is not None and not event.message.startswith(own):
                await websocket.send_text(event.message)


async def keep_listener_running() -> None:
    async with broadcast.subscribe(channel="bench:keepalive"):
        await asyncio.Event().wait()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with broadcast:
        if not URL.startswith("redis"):
            yield
            return
        keepalive = asyncio.ensure_future(keep_listener_running())
        await asyncio.sleep(0.1)
        try:
            yield
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive


app = Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", chatroom_ws)], lifespan=lifespan)
