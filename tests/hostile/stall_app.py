"""The app of the send-timeout attack: `uvicorn tests.hostile.stall_app:app`, counting what each connection ran."""

from __future__ import annotations

import ctypes
import gc
import os
from collections import Counter
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from wsendpoints import EchoEndpoint

__all__ = ["SEND_TIMEOUT", "app"]

SEND_TIMEOUT = 1.0
"""Short, so that the test sees the attack end quickly."""

counts: Counter[str] = Counter()

_malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
"""glibc's `malloc_trim(pad)`: give the free pages of the heap back to the kernel."""


class Running:
    """Counts handlers running and returned (its own frames: Python 3.11 stops tracing lines in a frame
    above a caught cancellation, which would hide these counts from coverage)."""

    def __enter__(self) -> None:
        counts["running"] += 1

    def __exit__(self, *exc_info: object) -> None:
        counts["running"] -= 1
        counts["returned"] += 1


class CountedEcho(EchoEndpoint):
    """An echo whose handlers and `on_disconnect` calls are counted, for `/stats`."""

    send_timeout = SEND_TIMEOUT

    async def dispatch(self) -> None:
        with Running():
            await super().dispatch()

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        counts[f"closed {close_code} by {self.closed_by}"] += 1
        counts["on_disconnect"] += 1
        if getattr(self, "disconnected", False):
            counts["on_disconnect twice"] += 1  # pragma: no cover - the bug this test looks for
        self.disconnected = True


async def stats(request: Request) -> JSONResponse:
    # Live memory: not garbage waiting for the cyclic collector (this app runs under plain uvicorn, whose
    # websockets-sansio protocol can leave a lost connection's frame parser in a reference cycle; the
    # library's endpoints leave none, tests/test_release.py, and `wsendpoints.serving.WebSocketProtocol`
    # breaks uvicorn's, tests/hostile/test_demo_server.py), nor free pages that glibc happens to keep
    # at the top of its heap or not (measured: 58 MiB after one first wave, 80 MiB after another).
    gc.collect()
    _malloc_trim(0)
    status = await anyio.Path(f"/proc/{os.getpid()}/status").read_text()
    fields: dict[str, Any] = dict(line.split(":", 1) for line in status.splitlines())
    fds = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    return JSONResponse({**counts, "rss_kib": int(fields["VmRSS"].split()[0]), "fds": fds})


app = Starlette(
    routes=[
        WebSocketRoute("/echo", CountedEcho),
        WebSocketRoute("/well", EchoEndpoint),
        Route("/stats", stats),
    ]
)
