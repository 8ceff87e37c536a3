"""wsendpoints: `EchoEndpoint`, `OKEndpoint` and `RoomEndpoint` as a user mounts them.

Rooms run on the default `MemoryBroker`, or on `RedisBroker` when `BENCH_REDIS_URL` is set
(the two-process scenario). Join and leave notices are off: the peers' rooms send none.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from wsendpoints import EchoEndpoint, OKEndpoint

__all__ = ["app"]

routes = [WebSocketRoute("/echo", EchoEndpoint), WebSocketRoute("/ok", OKEndpoint)]
resources: list[Any] = []

try:
    from wsendpoints import RoomEndpoint  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # not written yet: echo and OK only
    pass
else:
    options: dict[str, Any] = {"join_template": None, "leave_template": None}
    redis_url = os.environ.get("BENCH_REDIS_URL")
    if redis_url:
        from wsendpoints.brokers.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

        broker = RedisBroker(redis_url)
        resources.append(broker)
        options["broker"] = broker
    routes.append(WebSocketRoute("/rooms/{room}/{user}", RoomEndpoint.configure(**options)))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for resource in resources:
            await stack.enter_async_context(resource)
        yield


app = Starlette(routes=routes, lifespan=lifespan)
