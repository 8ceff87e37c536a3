"""Serve with uvicorn: a WebSocket protocol that frees a stalled peer's socket, and the settings to run with.

ASGI gives an application no way to abort a connection, and uvicorn (0.55, every WebSocket
implementation) closes a socket only once its send buffer has drained: a peer that never reads
keeps its socket and file descriptor after the server has given up on it, for as long as it likes.
`WebSocketProtocol` bounds that: once the server starts to close a connection, the socket is
gone within `WebSocketProtocol.close_deadline` seconds, cleanly if the peer takes the close
frame, else aborted with a TCP reset.

```python
import uvicorn
from wsendpoints.serving import uvicorn_settings

uvicorn.run(app, host="0.0.0.0", port=8000, **uvicorn_settings(app))
```

or on the command line: `uvicorn myapp:app --ws wsendpoints.serving:WebSocketProtocol --ws-max-size 1048576 ...`.

uvicorn (0.35 or later) and websockets are optional dependencies (the "demo" extra): this module
imports them, the package root does not.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, cast

from starlette.routing import BaseRoute, Mount, WebSocketRoute
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .endpoints import Endpoint

__all__ = ["CLOSE_DEADLINE", "WebSocketProtocol", "largest_message", "uvicorn_settings"]

logger = logging.getLogger("wsendpoints")

CLOSE_DEADLINE = 5.0
"""Seconds from the server's first step to close a connection until its socket is released."""

_ABORT_LINGER = struct.pack("ii", 1, 0)
"""`SO_LINGER` on, timeout 0: closing the socket resets the connection and frees its kernel buffers at once."""


def _ignore() -> None:
    """The closing callback of a detached `_ClosingTransport`."""


class _ClosingTransport:
    """A connection's transport whose `close()` also starts the protocol's close deadline.

    uvicorn closes a connection's transport from a dozen places (the app returned, the close
    handshake ended or timed out, a keepalive ping went unanswered, a protocol error, shutdown);
    catching the call here covers them all, and any a later release adds.
    """

    def __init__(self, transport: asyncio.Transport, closing: Callable[[], None]) -> None:
        self._transport = transport
        self._closing = closing
        # The calls on the send and receive path, bound once rather than looked up per frame.
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def close(self) -> None:
        self._closing()
        self._transport.close()

    def detach(self) -> None:
        """Drop the callback into the protocol (the connection is gone): the protocol holds this transport."""
        self._closing = _ignore

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's default WebSocket protocol (websockets-sansio), with a deadline on closing.

    From the moment the server starts to close a connection (the app sends its close frame or
    returns, the peer's close frame is answered, a keepalive ping goes unanswered, a protocol
    error, shutdown), the connection's socket and file descriptor are released within
    `close_deadline` seconds: the usual way if the peer takes the close frame, else the
    transport is aborted (TCP reset, the kernel's buffers freed at once) and the app's pending
    `send` and `receive` return as for a lost connection. Everything else is uvicorn's.

    Use it with `uvicorn.run(app, ws=WebSocketProtocol)` or `uvicorn --ws
    wsendpoints.serving:WebSocketProtocol`; subclass it to change the deadline:

    ```python
    class QuickClose(WebSocketProtocol):
        close_deadline = 2.0
    ```
    """

    close_deadline: float = CLOSE_DEADLINE
    """Seconds a connection the server is closing may keep its socket."""

    _deadline: asyncio.TimerHandle | None = None
    _lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._closing_transport = _ClosingTransport(cast(asyncio.Transport, transport), self._start_deadline)
        super().connection_made(cast(asyncio.Transport, self._closing_transport))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)
        # Three reference cycles outlive a lost connection unless broken here: this protocol and its
        # transport's closing callback; websockets' frame parser, a generator whose frame holds the
        # `ServerProtocol` that holds it, left waiting for data that never comes; and, after a
        # protocol error, the parser's exception kept on the `ServerProtocol`, whose traceback holds
        # the parser's frame.
        # Left to the cyclic collector they live on until its next full collection, and between
        # waves of connections what they pin keeps the allocator from reusing the large buffers freed
        # around them: the demo's peak memory grew 27 MiB with each wave of 50 echo clients that
        # never read (tests/hostile/test_demo_server.py); with the cycles broken, under 1 MiB.
        self._closing_transport.detach()
        self.conn.parser.close()
        self.conn.parser_exc = None

    def send(self, message: ASGISendEvent) -> Coroutine[Any, Any, None]:
        # A plain function returning uvicorn's coroutine: no extra coroutine frame per message sent.
        if message["type"] == "websocket.close":
            # Before uvicorn's send, which first waits for the send buffer to drain below its
            # high-water mark: for a peer that does not read, that wait never ends.
            self._start_deadline()
        return super().send(message)

    def _start_deadline(self) -> None:
        if self._deadline is None and not self._lost:
            self._deadline = self.loop.call_later(self.close_deadline, self._abort)

    def _abort(self) -> None:
        self._deadline = None
        logger.info("aborting the connection of %s: it did not close within %s s", self.client, self.close_deadline)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # pragma: no branch - a TCP transport always has one
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)
        self.transport.abort()


def _websocket_endpoints(routes: Iterable[BaseRoute]) -> Iterable[object]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _websocket_endpoints(route.routes)
        elif isinstance(route, WebSocketRoute):
            yield route.endpoint


def largest_message(app: Any) -> int | None:
    """Return the largest message, in bytes, that any WebSocket route of `app` accepts.

    Walks `app.routes` (a Starlette or FastAPI app, or a router), into mounted apps.

    Returns:
        The largest `max_message_size` of the mounted `Endpoint` classes; None when the app has
        a WebSocket route with no limit of ours (`max_message_size=None`, a function, another
        class) or none at all, where only the server's own limit applies.
    """
    sizes: list[int] = []
    for endpoint in _websocket_endpoints(getattr(app, "routes", ())):
        if not (isinstance(endpoint, type) and issubclass(endpoint, Endpoint)) or endpoint.max_message_size is None:
            return None
        sizes.append(endpoint.max_message_size)
    return max(sizes, default=None)


def uvicorn_settings(
    app: Any,
    *,
    limit_concurrency: int | None = 1000,
    ws_ping_interval: float = 20.0,
    ws_ping_timeout: float = 20.0,
    timeout_graceful_shutdown: int = 10,
) -> dict[str, Any]:
    """Return the `uvicorn.run()` / `uvicorn.Config` settings for serving `app`'s WebSockets.

    Each is explained in the README's "Serving in production": `ws` is `WebSocketProtocol`;
    `ws_max_size` is `largest_message(app)` (left out when None, keeping uvicorn's 16 MiB), so
    that a compressed message is never inflated past what the endpoint accepts anyway.

    Args:
        app: The ASGI app to be served.
        limit_concurrency: Connections and tasks over which uvicorn answers plain HTTP with 503.
        ws_ping_interval: Seconds between keepalive pings.
        ws_ping_timeout: Seconds a pong may take before the connection is closed.
        timeout_graceful_shutdown: Seconds a shutdown waits for connections and tasks.
    """
    settings: dict[str, Any] = {
        "ws": WebSocketProtocol,
        "limit_concurrency": limit_concurrency,
        "ws_ping_interval": ws_ping_interval,
        "ws_ping_timeout": ws_ping_timeout,
        "timeout_graceful_shutdown": timeout_graceful_shutdown,
    }
    size = largest_message(app)
    if size is not None:
        settings["ws_max_size"] = size
    return settings
