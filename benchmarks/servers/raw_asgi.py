"""Raw ASGI: the best hand-written echo, OK and per-member-queue room fan-out.

No framework: the ASGI callable does exactly the job. The room formats each message once into
one ASGI send event shared by every member; each member has a bounded queue and its own writer
task, so a member that stops reading holds up nobody (it is dropped from the room when its
queue overflows).

`BENCH_RAW_MAX_QUEUE=0` in the server's environment makes the queues unbounded: the baseline
of the burst scenarios, where a bounded queue with no flow control drops every reader. Nothing
else changes, not even the length check in `push`, so it is the same work per delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["MAX_QUEUE", "Member", "app", "serve_member"]

MAX_QUEUE = int(os.environ.get("BENCH_RAW_MAX_QUEUE", "1024")) or sys.maxsize
"""Messages a member may have waiting before it is dropped as a slow consumer (1024; 0: unbounded)."""

ACCEPT = {"type": "websocket.accept"}
OK = {"type": "websocket.send", "text": "OK!"}
NOT_FOUND_CLOSE = {"type": "websocket.close", "code": 1008}
SLOW_CLOSE = {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}

Scope = dict[str, Any]
Event = dict[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]
_ids = itertools.count(1)


class Member:
    """One room member: its outbound queue, and the future its idle writer waits on."""

    __slots__ = ("dropped", "id", "queue", "waiter")

    def __init__(self) -> None:
        self.id = next(_ids)
        self.queue: deque[Event] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.dropped = False

    def push(self, event: Event) -> None:
        """Queue `event`, or drop this member if its queue is full; wake its writer."""
        if self.dropped:
            return
        queue = self.queue
        if len(queue) >= MAX_QUEUE:
            self.dropped = True
            queue.clear()
        else:
            queue.append(event)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set_result(None)


async def writer(member: Member, send: Send) -> None:
    """Send the member's queue in order; once dropped, try to close it with 1013."""
    queue = member.queue
    loop = asyncio.get_running_loop()
    while not member.dropped:
        if queue:
            await send(queue.popleft())
        else:
            member.waiter = loop.create_future()
            await member.waiter
    with contextlib.suppress(Exception):  # a stalled peer may never take the close frame
        await asyncio.wait_for(send(SLOW_CLOSE), 1)


async def serve_member(
    user: str,
    receive: Receive,
    send: Send,
    join: Callable[[Member], Awaitable[None]],
    leave: Callable[[Member], Awaitable[None]],
    publish: Callable[[Member, str], Awaitable[None]],
) -> None:
    """Run one member: accept, join, start its writer, publish what it sends, leave when it goes."""
    await receive()  # websocket.connect
    await send(ACCEPT)
    member = Member()
    await join(member)
    task = asyncio.ensure_future(writer(member, send))
    prefix = user + ": "
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break
            text = message.get("text")
            if text is not None:
                await publish(member, prefix + text)
    finally:
        task.cancel()
        await leave(member)


def fan_out(members: list[Member], sender: Member | int, text: str) -> None:
    """Queue one send event, made once, for every member but `sender` (a member or its id)."""
    event = {"type": "websocket.send", "text": text}
    if isinstance(sender, int):
        for member in members:
            if member.id != sender:
                member.push(event)
    else:
        for member in members:
            if member is not sender:
                member.push(event)


ROOMS: dict[str, list[Member]] = {}


def room(name: str, user: str, receive: Receive, send: Send) -> Awaitable[None]:
    """One member of an in-memory room."""

    async def join(member: Member) -> None:
        ROOMS.setdefault(name, []).append(member)

    async def leave(member: Member) -> None:
        members = ROOMS[name]
        members.remove(member)
        if not members:
            del ROOMS[name]

    async def publish(sender: Member, text: str) -> None:
        fan_out(ROOMS[name], sender, text)

    return serve_member(user, receive, send, join, leave, publish)


async def echo(receive: Receive, send: Send) -> None:
    await receive()
    await send(ACCEPT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        message["type"] = "websocket.send"  # the received event has the same keys: send it back as it is
        await send(message)


async def ok(receive: Receive, send: Send) -> None:
    await receive()
    await send(ACCEPT)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send(OK)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send(NOT_FOUND_CLOSE)
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "websocket":
        path = scope["path"]
        if path == "/echo":
            await echo(receive, send)
            return
        if path == "/ok":
            await ok(receive, send)
            return
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "rooms":
            await room(parts[2], parts[3], receive, send)
            return
    elif kind == "lifespan":
        await lifespan(receive, send)
        return
    await not_found(scope, receive, send)
