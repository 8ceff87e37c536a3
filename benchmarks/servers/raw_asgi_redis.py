"""Raw ASGI rooms across processes through Redis pub/sub: the baseline of the Redis scenario.

The same members, queues and writers as `raw_asgi`; a room's messages go through one Redis
channel. Each process holds one pub/sub connection (subscribed to a room while it has local
members) and fans every message out to its local members once, skipping the sender by id.
The Redis URL comes from `BENCH_REDIS_URL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from typing import Any

from redis.asyncio import Redis

from .raw_asgi import Member, Receive, Scope, Send, fan_out, lifespan, not_found, serve_member

__all__ = ["app"]

PROCESS = secrets.token_hex(4)


class Hub:
    """This process's Redis connections and local room members."""

    def __init__(self, url: str) -> None:
        self.redis = Redis.from_url(url)
        self.pubsub = self.redis.pubsub()
        self.rooms: dict[str, list[Member]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe("bench:keepalive")  # listen() ends when nothing is subscribed
        self.reader = asyncio.ensure_future(self.read())

    async def stop(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(BaseException):
                await self.reader
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        await self.redis.aclose()

    async def read(self) -> None:
        rooms = self.rooms
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            members = rooms.get(message["channel"].decode())
            if members:
                sender, _, text = message["data"].decode().partition("\n")
                fan_out(members, int(sender.partition("-")[2]) if sender.startswith(PROCESS) else -1, text)

    def member(self, room: str, user: str, receive: Receive, send: Send) -> Any:
        channel = f"rooms/{room}"

        async def join(member: Member) -> None:
            members = self.rooms.get(channel)
            if members is None:
                members = self.rooms[channel] = []
                await self.pubsub.subscribe(channel)
            members.append(member)

        async def leave(member: Member) -> None:
            members = self.rooms[channel]
            members.remove(member)
            if not members:
                del self.rooms[channel]
                await self.pubsub.unsubscribe(channel)

        async def publish(sender: Member, text: str) -> None:
            await self.redis.publish(channel, f"{PROCESS}-{sender.id}\n{text}")

        return serve_member(user, receive, send, join, leave, publish)


hub = Hub(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "websocket":
        parts = scope["path"].split("/")
        if len(parts) == 4 and parts[1] == "rooms":
            await hub.member(parts[2], parts[3], receive, send)
            return
    elif kind == "lifespan":
        await hub.start()
        try:
            await lifespan(receive, send)
        finally:
            await hub.stop()
        return
    await not_found(scope, receive, send)
