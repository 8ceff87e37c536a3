"""`Endpoint`: Starlette's `WebSocketEndpoint` with a deliberate close path.

Every way a connection ends goes through one place here: the client closing, a handler
closing, bad input, a limit, an error or a timeout. Each sends a real close frame with a code
and a short reason, records them on the endpoint and calls `on_disconnect` exactly once.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any, ClassVar, Literal, TypeVar

import anyio
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import _json
from .._options import OptionCheck, check_choice, check_number, check_size
from .._origin import OriginPolicy
from ..closecodes import CloseCode

__all__ = ["ClosedBy", "Endpoint"]

logger = logging.getLogger("wsendpoints")

ClosedBy = Literal["client", "server", "error"]
E = TypeVar("E", bound="Endpoint")

MAX_REASON_BYTES = 123
"""The longest close reason RFC 6455 allows, in UTF-8 bytes."""

_DISCONNECTED = (WebSocketDisconnect, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def cut_reason(reason: str) -> str:
    """Cut `reason` to at most 123 UTF-8 bytes, on a character boundary."""
    if len(reason) * 4 <= MAX_REASON_BYTES:
        return reason
    return reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


def _check_origins(name: str, value: Any) -> None:
    OriginPolicy.from_option(value)


class _Socket(WebSocket):
    """A `WebSocket` that reports its close to the endpoint and never raises for a peer that left."""

    def __init__(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.endpoint = endpoint
        self.accepted = False
        self.peer_gone = False
        self.open = False
        """True from the accept until a close is sent or received, or the peer is found gone."""

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.send" and self.open:
            # The hot path: a data frame on an open connection needs none of Starlette's state checks.
            await self.send_event(message)
            return
        if self.peer_gone or WebSocketState.DISCONNECTED in (self.application_state, self.client_state):
            logger.debug("dropped %s on a closed connection", kind)
            return
        if kind == "websocket.close":
            self.open = False
            code = int(message.get("code", CloseCode.NORMAL_CLOSURE))
            reason = cut_reason(message.get("reason") or "")
            message = {"type": "websocket.close", "code": code, "reason": reason}
            self.endpoint._closed(code, reason, "server")
        try:
            await super().send(message)
        except _DISCONNECTED:
            self.peer_gone, self.open = True, False
            logger.debug("peer left before %s", kind)
            return
        finally:
            if kind == "websocket.close":
                # Only now, with the close frame handed over (or abandoned), stop the receive loop.
                self.endpoint._stop_receiving()
        if kind == "websocket.accept":
            self.accepted = True
            self.open = True

    async def send_event(self, event: Message) -> None:
        """Send a "websocket.send" event straight to the server; drop it once the connection is closed.

        The event may be shared by many members: it is never changed here.
        """
        if not self.open:
            return
        try:
            await self._send(event)
        except _DISCONNECTED:
            self.peer_gone, self.open = True, False
            logger.debug("peer left before websocket.send")


class Endpoint(WebSocketEndpoint):
    """A `WebSocketEndpoint` whose every connection ends with a deliberate close code.

    Override `on_connect`, `on_receive` and `on_disconnect` as in Starlette and call `super()`
    from `on_connect` to accept. Options are class attributes; `configure()` makes a subclass
    with other values.

    - Frames of the wrong type for `encoding` "text" or "bytes" close with 1003; for "json",
      malformed JSON, invalid UTF-8, `NaN`/`Infinity`, over-long numbers and deep nesting
      close with 1007.
    - Messages over `max_message_size` close with 1009, before any decoding.
    - A handler that raises closes with 1011 "internal error" and one ERROR log line.
    - A foreign `Origin` gets HTTP 403; a connection past `max_connections` is accepted and
      closed with 1013; `idle_timeout` seconds without a client message close with 1001.
    - `on_disconnect` runs once per accepted connection, with the code exchanged.

    Example:
        ```python
        from starlette.routing import WebSocketRoute
        from wsendpoints import Endpoint


        class Shout(Endpoint):
            encoding = "text"
            idle_timeout = 60

            async def on_receive(self, websocket, data):
                await websocket.send_text(data.upper())


        routes = [WebSocketRoute("/shout", Shout), WebSocketRoute("/small", Shout.configure(max_message_size=1024))]
        ```
    """

    encoding: Literal["text", "bytes", "json"] | None = None
    max_message_size: int | None = 1024 * 1024
    allowed_origins: list[str] | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None

    options: ClassVar[dict[str, OptionCheck]] = {
        "encoding": check_choice(("text", "bytes", "json", None)),
        "max_message_size": check_size(),
        "allowed_origins": _check_origins,
        "max_connections": check_size(),
        "idle_timeout": check_number(),
    }
    """Each option's name and the check its value must pass; subclasses add their own."""

    _origin_policy: ClassVar[OriginPolicy] = OriginPolicy()
    _open_connections: ClassVar[int] = 0
    _count_lock: ClassVar[threading.Lock] = threading.Lock()

    close_code: int | None
    """The close code exchanged, once the connection has ended."""
    close_reason: str
    """The close reason exchanged, once the connection has ended."""
    closed_by: ClosedBy | None
    """Who ended the connection: "client", "server" or "error" (an unhandled exception)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, check in cls.options.items():
            check(name, getattr(cls, name))
        cls._origin_policy = OriginPolicy.from_option(cls.allowed_origins)
        cls._open_connections = 0
        cls._count_lock = threading.Lock()

    @classmethod
    def configure(cls: type[E], **options: Any) -> type[E]:
        """Return a subclass with `options` set; this class is left untouched.

        Raises:
            TypeError: If an option is unknown or its value of the wrong type.
            ValueError: If an option's value is out of range.
        """
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.configure() got unknown option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(sorted(cls.options))}"
            )
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **options}
        return type(cls.__name__, (cls,), namespace)

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.close_code = None
        self.close_reason = ""
        self.closed_by = None
        self._waiting = False
        self._receive_scope: anyio.CancelScope | None = None

    def _closed(self, code: int, reason: str, by: ClosedBy) -> None:
        """Record the end of the connection, unless already recorded."""
        if self.closed_by is None:
            self.close_code = code
            self.close_reason = reason
            self.closed_by = by

    def _stop_receiving(self) -> None:
        """End the receive loop if it is waiting for a message (a close came from another task)."""
        if self._waiting and self._receive_scope is not None:
            self._receive_scope.cancel()

    async def dispatch(self) -> None:
        websocket = _Socket(self, self.scope, self.receive, self.send)
        refusal = self._origin_policy.refusal(self.scope)
        if refusal is not None:
            logger.info("refused handshake on %s: %s (Origin %s)", self._path(), refusal, self._origin())
            await self._deny(websocket, 403, "Origin not allowed")
            return
        cls = type(self)
        with cls._count_lock:
            cls._open_connections += 1
        try:
            await self._serve(websocket)
        finally:
            with cls._count_lock:
                cls._open_connections -= 1

    async def _serve(self, websocket: _Socket) -> None:
        try:
            try:
                await self.on_connect(websocket)
                if not websocket.accepted:
                    await self._deny(websocket, 403, "Connection refused")
                    return
                if self.closed_by is None:
                    await self._receive_loop(websocket)
            except WebSocketDisconnect as exc:
                # A handler that reads the socket itself saw the client leave.
                self._closed(exc.code, exc.reason or "", "client")
            except Exception:
                if not websocket.accepted:
                    logger.exception("unhandled error in %s.on_connect", type(self).__name__)
                    await self._deny(websocket, 500, "Internal Server Error")
                    return
                await self._fail(websocket)
        finally:
            if websocket.accepted:
                await self._disconnect(websocket)

    async def _receive_loop(self, websocket: _Socket) -> None:
        receive = self.receive
        idle_timeout = self.idle_timeout
        scope = self._receive_scope = anyio.CancelScope()
        with scope:
            while True:
                self._waiting = True
                if idle_timeout is not None:
                    scope.deadline = anyio.current_time() + idle_timeout
                message = await receive()
                self._waiting = False
                if idle_timeout is not None:
                    scope.deadline = math.inf
                if message["type"] == "websocket.receive":
                    data = await self.decode(websocket, message)
                    if self.closed_by is not None:
                        break
                    await self.on_receive(websocket, data)
                    if self.closed_by is not None:
                        break
                else:  # "websocket.disconnect", the only other message ASGI defines
                    websocket.client_state = WebSocketState.DISCONNECTED
                    websocket.open = False
                    code = int(message.get("code", CloseCode.NORMAL_CLOSURE))
                    self._closed(code, message.get("reason") or "", "client")
                    break
        self._waiting = False
        if self.closed_by is None:
            await websocket.close(CloseCode.GOING_AWAY, "idle timeout")

    async def decode(self, websocket: WebSocket, message: Message) -> Any:
        """Decode one received message for `encoding`; close the connection if it cannot be.

        Returns:
            The decoded data; after a close, `None` (the message is not handed to `on_receive`).
        """
        text: str | None = message.get("text")
        data: str | bytes = text if text is not None else message["bytes"]
        limit = self.max_message_size
        if limit is not None:
            size = len(data)
            if text is not None and limit < size * 4 and size <= limit:
                size = len(text.encode("utf-8"))
            if size > limit:
                return await self._reject(websocket, CloseCode.MESSAGE_TOO_BIG, "message too big")
        encoding = self.encoding
        if encoding is None:
            return data
        if encoding == "json":
            try:
                return _json.loads(data)
            except _json.JSONRejected as exc:
                return await self._reject(websocket, CloseCode.INVALID_DATA, exc.reason)
        if encoding == "text":
            if text is None:
                return await self._reject(websocket, CloseCode.UNSUPPORTED_DATA, "expected text messages")
            return text
        if text is not None:
            return await self._reject(websocket, CloseCode.UNSUPPORTED_DATA, "expected binary messages")
        return data

    async def _reject(self, websocket: WebSocket, code: CloseCode, reason: str) -> None:
        logger.info("closing %s with %d: %s", self._path(), code, reason)
        await websocket.close(code, reason)

    async def _fail(self, websocket: WebSocket) -> None:
        """Log the exception being handled and close with 1011, unless the connection had already ended."""
        logger.exception("unhandled error in %s on %s", type(self).__name__, self._path())
        self._closed(CloseCode.INTERNAL_ERROR, "internal error", "error")
        await websocket.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _disconnect(self, websocket: WebSocket) -> None:
        if self.closed_by is None:
            # Cancelled from outside (server shutdown): try to tell the peer, but never wait long.
            self._closed(CloseCode.GOING_AWAY, "server shutting down", "server")
            with anyio.move_on_after(1, shield=True):
                await websocket.close(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.CancelScope(shield=True):
            try:
                await self.on_disconnect(websocket, self.close_code or CloseCode.GOING_AWAY)
            except Exception:
                logger.exception("unhandled error in %s.on_disconnect", type(self).__name__)

    async def _deny(self, websocket: WebSocket, status: int, text: str) -> None:
        """Refuse the handshake with an HTTP response where the server supports one, else a close (HTTP 403)."""
        if websocket.application_state is not WebSocketState.CONNECTING:
            return  # on_connect already answered the handshake itself
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            await websocket.send_denial_response(PlainTextResponse(text, status))
        else:
            await websocket.close(CloseCode.POLICY_VIOLATION, text)

    async def on_connect(self, websocket: WebSocket) -> None:
        """Accept the connection, then close it with 1013 if `max_connections` are already open."""
        await websocket.accept()
        limit = self.max_connections
        if limit is not None and type(self)._open_connections > limit:
            await self._reject(websocket, CloseCode.TRY_AGAIN_LATER, "too many connections")

    def _path(self) -> str:
        return repr(self.scope.get("path", ""))

    def _origin(self) -> str:
        values = [value for name, value in self.scope.get("headers", ()) if name == b"origin"]
        return repr(values[0] if len(values) == 1 else values)
