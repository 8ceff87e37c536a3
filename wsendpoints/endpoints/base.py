"""`Endpoint`: Starlette's `WebSocketEndpoint` with a deliberate close path.

Every way a connection ends goes through one place here: the client closing, a handler
closing, bad input, a limit, an error or a timeout. Each sends a real close frame with a code
and a short reason, records them on the endpoint and calls `on_disconnect` exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
from asyncio import current_task
from collections.abc import Callable, Mapping
from types import CodeType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

import anyio
from starlette.endpoints import WebSocketEndpoint
from starlette.exceptions import HTTPException, WebSocketException
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .. import _json
from .._deadline import SendWatch
from .._loop import LoopHandle
from .._options import OptionCheck, check_number, check_size, check_text
from .._origin import OriginPolicy
from ..closecodes import CloseCode

__all__ = ["ClosedBy", "Endpoint", "EndpointOptions"]

logger = logging.getLogger("wsendpoints")

ClosedBy = Literal["client", "server", "error"]

if TYPE_CHECKING:  # typing_extensions: Self and Unpack are in `typing` from Python 3.11 only
    from typing_extensions import Self, Unpack


class EndpointOptions(TypedDict, total=False):
    """The options of `Endpoint.configure()`, for the type checker: a misspelt one is an error."""

    encoding: Literal["text", "bytes", "json"] | None
    max_message_size: int | None
    allowed_origins: list[str] | None
    max_connections: int | None
    idle_timeout: float | None
    send_timeout: float | None


MAX_REASON_BYTES = 123
"""The longest close reason RFC 6455 allows, in UTF-8 bytes."""

_DISCONNECTED = (WebSocketDisconnect, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


def cut_reason(reason: str) -> str:
    """Cut `reason` to at most 123 UTF-8 bytes, on a character boundary."""
    if len(reason) * 4 <= MAX_REASON_BYTES:
        return reason
    return reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


def _code_named(code: CodeType, name: str) -> CodeType | None:
    """Return the code object of the function `name` defined (at any depth) in `code`, or None."""
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_name == name:
                return const
            found = _code_named(const, name)
            if found is not None:
                return found
    return None


def _starlette_sender() -> CodeType | None:
    """Return the code of Starlette's exception-handler `sender`, or None if this Starlette has none.

    `starlette._exception_handler` is private: a release without it costs the shortcut, never the import.
    """
    try:
        from starlette._exception_handler import wrap_app_handling_exceptions
    except ImportError:
        return None
    return _code_named(wrap_app_handling_exceptions.__code__, "sender")


_STARLETTE_SENDER = _starlette_sender()
"""The code of Starlette's exception-handler `sender`, the `send` wrapper its app and its route each add.

For any message but "http.response.start" it only awaits the `send` it wraps. Found by name in
Starlette's own function, so that `server_send` unwraps exactly that closure and nothing else; if
a Starlette release renames or reshapes it, nothing is unwrapped (data goes the long way) and
`tests/endpoints/test_fast_path.py` fails loudly.
"""


def server_send(send: Send) -> Send:
    """Return the server's own `send` from under Starlette's exception-handler `sender` wrappers.

    What it buys: a data frame goes to the server with two coroutine frames less (the app's
    `ExceptionMiddleware` and the route each wrap `send`): an in-process echo round trip 19,530 ->
    17,990 instructions, and as much per delivery for room writers. Only "websocket.send" events
    take this path, which those wrappers pass on untouched.
    """
    code = _STARLETTE_SENDER
    if code is None:
        return send
    index = code.co_freevars.index("send")
    while getattr(send, "__code__", None) is code:
        send = send.__closure__[index].cell_contents  # type: ignore[index]  # a closure: it has free variables
    return send


class _TaskScope:
    """The receive loop's cancel scope on asyncio (Python 3.11+): its task's own cancel, taken back at the exit.

    What `asyncio.timeout()` does, with the two things the loop needs: `cancel()` from another
    task, and a `deadline` on the loop's clock (`idle_timeout`). An anyio `CancelScope` does the
    same with about 0.7 KB more per connection (the scope, its two sets, its task's state), measured.
    A cancel that came from elsewhere as well (the server shutting down) still propagates.
    """

    __slots__ = ("_cancelled", "_cancelling", "_task", "_timer")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self._cancelling: int = getattr(task, "cancelling", int)()  # Python 3.11+, as `asyncio.timeout()` keeps it
        """How many cancellations the task had pending when the scope began: those are not the scope's."""
        self._cancelled = False
        self._timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._task.cancel()

    @property
    def deadline(self) -> float:
        return math.inf if self._timer is None else self._timer.when()

    @deadline.setter
    def deadline(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when != math.inf:
            self._timer = asyncio.get_running_loop().call_at(when, self.cancel)

    def __enter__(self) -> _TaskScope:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        self.deadline = math.inf
        cancelled, self._cancelled = self._cancelled, True  # a `cancel()` from now on is too late: a no-op
        if not cancelled or kind is not asyncio.CancelledError:
            return False
        # Only made on Python 3.11+ (`_receive_scope`): a cancel of ours alone leaves the count where it began.
        return bool(getattr(self._task, "uncancel", int)() <= self._cancelling)


def _receive_scope() -> _TaskScope | anyio.CancelScope:
    """Return the receive loop's cancel scope: a `_TaskScope` on asyncio with Python 3.11+, else anyio's."""
    if sys.version_info >= (3, 11) and LoopHandle.current().has_watchdog:
        task = current_task()
        assert task is not None  # a receive loop runs in a task
        return _TaskScope(task)
    return anyio.CancelScope()


def _check_origins(name: str, value: Any) -> None:
    OriginPolicy.from_option(value)


def _check_encoding(name: str, value: Any) -> None:
    """Accept any str, as Starlette does: an encoding of the subclass's own is decoded by its `decode()`."""
    check_text(optional=True)(name, value)


class _Socket(WebSocket):
    """One connection: Starlette's `WebSocket` and the one owner of how the connection ends.

    The state is Starlette's (`client_state`, `application_state`) plus what ended it:
    `close_code`, `close_reason`, `closed_by`. `Endpoint` reads it; only this class writes it.

    Sends behave as Starlette's, with deadlines: a data send after the client left raises
    `WebSocketDisconnect`, one after the application's own close raises `RuntimeError`, a
    second close is harmless, and a send that does not complete within `send_timeout` closes
    the connection with 1013 "send timeout" and raises `WebSocketDisconnect`.
    A room member's writer sends with `data_send` while the connection is open (`on_end`).
    """

    def __init__(self, scope: Scope, receive: Receive, send: Send, send_timeout: float | None) -> None:
        super().__init__(scope, receive, send)
        self.data_send = server_send(send)
        """Where "websocket.send" events go: the server's `send`, from under Starlette's wrappers (`server_send`).

        A room member's writer sends through it directly; it raises what the server raises."""
        self.on_end: Callable[[], object] | None = None
        """Called once when the connection ends, either side: a room member's writer stops sending."""
        self.send_timeout = send_timeout
        self._watch: SendWatch | None = None
        self._sends = 0
        """How many data sends the watch has numbered (see `SendWatch`)."""
        self.accepted = False
        self.open = False
        """True from the accept until a close is sent or received, or the peer is found gone."""
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: ClosedBy | None = None
        self.receiving: _TaskScope | anyio.CancelScope | None = None
        """The receive loop's scope while it waits for a message; a close from another task cancels it."""

    def ended(self, code: int, reason: str, by: ClosedBy) -> None:
        """Record the end of the connection, unless already recorded."""
        if self.open:
            self.open = False
            if self.on_end is not None:
                self.on_end()
        if self.closed_by is None:
            self.close_code, self.close_reason, self.closed_by = code, reason, by

    def client_left(self, code: int, reason: str) -> None:
        """Record that the client closed (or vanished) with `code`."""
        self.client_state = WebSocketState.DISCONNECTED
        self.ended(code, reason, "client")

    def stop_receiving(self) -> None:
        """End the receive loop if it is waiting for a message (the connection ended in another task)."""
        if self.receiving is not None:
            self.receiving.cancel()

    async def send(self, message: Message) -> None:
        if self.open and message["type"] == "websocket.send":
            watch = self._watch
            if watch is None:  # no deadline, or trio
                await self._send_data(message)
                return
            # asyncio, the data path of echo and every reply: the watch's part inline, numbering
            # the send for the loop's watchdog (in-process echo round trip: 18,160 -> 15,180 instructions).
            task = current_task()
            sending = watch.sending
            sending[task] = self._sends = self._sends + 1  # type: ignore[index]  # a send always runs in a task
            stalled = False
            try:
                await self.data_send(message)
            except asyncio.CancelledError:
                if not watch.expired(task):  # type: ignore[arg-type]
                    raise
                stalled = True
            except _DISCONNECTED:
                raise self._peer_left() from None
            finally:
                sending.pop(task, None)  # type: ignore[arg-type]
                task = None  # a raised exception's traceback keeps this frame
            if stalled:
                await self._stalled()
            return
        await self._send_other(message)

    async def _send_other(self, message: Message) -> None:
        """Send anything but a data event on an open connection (`send` takes those itself)."""
        kind = message["type"]
        if kind == "websocket.send":  # the connection is not open
            if self.client_state is WebSocketState.DISCONNECTED:
                raise WebSocketDisconnect(self.close_code or CloseCode.ABNORMAL_CLOSURE, self.close_reason or None)
            await super().send(message)  # not accepted yet, or closed by the app: Starlette's RuntimeError
            return  # pragma: no cover - Starlette raises for both
        if kind == "websocket.close":
            await self._close(message)
            return
        await super().send(message)
        if kind == "websocket.accept":
            self.accepted = self.open = True
            if self.send_timeout is not None:
                self._watch = SendWatch.for_current_loop(self.send_timeout)

    async def _send_data(self, message: Message) -> None:
        """Send a data event without the asyncio watch: no deadline, or a cancel scope per send (trio)."""
        timeout = self.send_timeout
        try:
            if timeout is None:
                await self.data_send(message)
                return
            with anyio.move_on_after(timeout) as deadline:
                await self.data_send(message)
        except _DISCONNECTED:
            raise self._peer_left() from None
        if deadline.cancelled_caught:
            await self._stalled()

    def _peer_left(self) -> WebSocketDisconnect:
        """Record that the peer left during a data send; return the exception for the sender."""
        self.client_left(CloseCode.ABNORMAL_CLOSURE, "")
        self.stop_receiving()
        logger.debug("peer left before websocket.send")
        return WebSocketDisconnect(CloseCode.ABNORMAL_CLOSURE)

    async def _stalled(self) -> None:
        """Close with 1013 "send timeout" after a data send ran past `send_timeout`; raise `WebSocketDisconnect`."""
        timeout = self.send_timeout
        assert timeout is not None
        logger.info("closing %r with 1013: send timeout (the client does not read)", self.url.path)
        await self._close(
            {"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER, "reason": "send timeout"},
            wait=min(1.0, timeout),  # a frame that can still go goes at once; else drop the connection
        )
        self.client_state = WebSocketState.DISCONNECTED  # the peer is as good as gone: later sends raise
        raise WebSocketDisconnect(CloseCode.TRY_AGAIN_LATER, "send timeout")

    def release(self) -> None:
        """Stop watching the sends' deadline: the connection has ended."""
        if self._watch is not None:
            self._watch.close()

    async def _close(self, message: Message, wait: float | None = None) -> None:
        """Send a close frame once, within `wait` (or `send_timeout`) seconds.

        A second close, or one after the peer left, is a no-op.
        """
        if WebSocketState.DISCONNECTED in (self.application_state, self.client_state):
            logger.debug("dropped websocket.close on a closed connection")
            return
        code = message.get("code")
        code = CloseCode.NORMAL_CLOSURE if code is None else int(code)
        reason = cut_reason(message.get("reason") or "")
        if self.accepted:
            self.ended(code, reason, "server")
        try:
            with anyio.move_on_after(wait or self.send_timeout or math.inf):  # a stalled peer may never take the frame
                await super().send({"type": "websocket.close", "code": code, "reason": reason})
        except _DISCONNECTED:
            self.client_state = WebSocketState.DISCONNECTED
            logger.debug("peer left before websocket.close")
        finally:
            self.application_state = WebSocketState.DISCONNECTED
            # Only now, with the close frame handed over (or abandoned), stop the receive loop.
            self.stop_receiving()


class Endpoint(WebSocketEndpoint):
    """A `WebSocketEndpoint` whose every connection ends with a deliberate close code.

    Override `on_connect`, `on_receive` and `on_disconnect` as in Starlette and call `super()`
    from `on_connect` to accept. Options are class attributes; `configure()` makes a subclass
    with other values.

    - Frames of the wrong type for `encoding` "text" or "bytes" close with 1003; for "json",
      malformed JSON, invalid UTF-8, `NaN`/`Infinity`, over-long numbers and deep nesting
      close with 1007. Any other `encoding` is the subclass's own: its `decode()` gets the
      message, as in Starlette.
    - Messages over `max_message_size` close with 1009, before any decoding.
    - A handler that raises closes with 1011 "internal error" and one ERROR log line;
      `WebSocketException(code, reason)` closes with that code and reason, and `HTTPException`
      before the accept becomes that HTTP response (403 where the server cannot send one).
    - A foreign `Origin` gets HTTP 403; a connection past `max_connections` is accepted and
      closed with 1013; `idle_timeout` seconds without a client message (the client is silent)
      close with 1001; a send that does not complete within `send_timeout` seconds (the client
      does not read) closes with 1013 "send timeout".
    - Sends behave as in Starlette: after the client left they raise `WebSocketDisconnect`,
      after the app's own close `RuntimeError`; a second `close()` is harmless. `is_open` says
      whether the connection is still open.
    - `on_disconnect` runs once per accepted connection, with the code exchanged (1005 when
      the client's close carried none).

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
    send_timeout: float | None = 10.0

    _wsendpoints_options: ClassVar[dict[str, OptionCheck]] = {
        "encoding": _check_encoding,
        "max_message_size": check_size(),
        "allowed_origins": _check_origins,
        "max_connections": check_size(),
        "idle_timeout": check_number(),
        "send_timeout": check_number(),
    }
    """Each option's name and the check its value must pass; subclasses add their own.

    Namespaced so that a subclass may use any attribute name of its own (`options` included).
    """

    _origin_policy: ClassVar[OriginPolicy] = OriginPolicy()
    _open_connections: ClassVar[int] = 0
    _count_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, check in cls._wsendpoints_options.items():
            check(name, getattr(cls, name))
        cls._origin_policy = OriginPolicy.from_option(cls.allowed_origins)
        cls._open_connections = 0
        cls._count_lock = threading.Lock()

    @classmethod
    def configure(cls, **options: Unpack[EndpointOptions]) -> type[Self]:
        """Return a subclass with `options` set; this class is left untouched.

        Raises:
            TypeError: If an option is unknown or its value of the wrong type.
            ValueError: If an option's value is out of range.
        """
        return cls._configure(options)

    @classmethod
    def _configure(cls, options: Mapping[str, Any]) -> type[Self]:
        """Make the subclass of `configure()`; each endpoint class's `configure` types its own options."""
        known = cls._wsendpoints_options
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.configure() got unknown option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(sorted(known))}"
            )
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, **options}
        return type(cls.__name__, (cls,), namespace)

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self._wsendpoints_socket = _Socket(scope, receive, send, self.send_timeout)

    @property
    def close_code(self) -> int | None:
        """The close code exchanged, once the connection has ended."""
        return self._wsendpoints_socket.close_code

    @property
    def close_reason(self) -> str:
        """The close reason exchanged, once the connection has ended."""
        return self._wsendpoints_socket.close_reason

    @property
    def closed_by(self) -> ClosedBy | None:
        """Who ended the connection: "client", "server" or "error" (an unhandled exception)."""
        return self._wsendpoints_socket.closed_by

    @property
    def is_open(self) -> bool:
        """Whether the connection is accepted and not yet closed by either side.

        A push loop can test it instead of waiting for a send to raise `WebSocketDisconnect`.
        Starlette's own `websocket.client_state` and `websocket.application_state` are kept
        accurate too.
        """
        return self._wsendpoints_socket.open

    async def dispatch(self) -> None:
        websocket = self._wsendpoints_socket
        refusal = self._origin_policy.refusal(self.scope)
        if refusal is not None:
            logger.info(
                "refused handshake on %s: %s (Origin %s, compared with Host %s); "
                "to allow that origin, list it in the endpoint's allowed_origins option",
                self._path(),
                refusal,
                self._origin(),
                self._host(),
            )
            await self._deny(websocket, 403, "Origin not allowed")
            return
        cls = type(self)
        with cls._count_lock:
            cls._open_connections += 1
        # One frame of ours from here to the receive loop's: an idle connection keeps each frame
        # (0.26 KB), and each is resumed for every message waited for.
        try:
            await self.on_connect(websocket)
            if not websocket.accepted:
                await self._deny(websocket, 403, "Connection refused")
                return
            if websocket.closed_by is None:
                if websocket._watch is not None and self._plain_text() and self._reply() is not False:
                    # The receive loop that answers by itself (see `_receive_loop`) runs in a task
                    # of its own, so a message's wait resumes its frame alone, not the app's whole
                    # stack (uvicorn's, Starlette's middleware and router, this one): under
                    # uvicorn, server instructions per echo round trip 149,330 -> 146,290 (raw
                    # ASGI 144,610), for a task per connection (about 0.5 KB). Cancelling this
                    # task cancels the loop's; an exception of the loop's is raised here.
                    await asyncio.get_running_loop().create_task(self._receive_loop(websocket))
                else:
                    await self._receive_loop(websocket)
        except WebSocketDisconnect as exc:
            # A handler that reads the socket itself saw the client leave, or a send found it gone.
            websocket.client_left(exc.code, exc.reason or "")
        except WebSocketException as exc:
            logger.info("closing %s with %d: %s (WebSocketException)", self._path(), exc.code, exc.reason)
            await websocket.close(exc.code, exc.reason)
        except HTTPException as exc:
            if websocket.accepted:
                await self._fail(websocket)
                return
            logger.info("refused handshake on %s: HTTP %d (HTTPException)", self._path(), exc.status_code)
            await self._deny(websocket, exc.status_code, str(exc.detail), exc.headers)
        except Exception:
            if not websocket.accepted:
                logger.exception("unhandled error in %s.on_connect", type(self).__name__)
                await self._deny(websocket, 500, "Internal Server Error")
                return
            await self._fail(websocket)
        finally:
            try:
                if websocket.accepted:
                    await self._disconnect(websocket)
            finally:
                websocket.release()
                try:
                    await self._wind_down()
                finally:
                    with cls._count_lock:
                        cls._open_connections -= 1

    async def _wind_down(self) -> None:
        """Let what the connection started besides its handler end (a room member's writer); after `on_disconnect`."""

    def _plain_text(self) -> bool:
        """Whether text messages need no decoding: no `decode` of the subclass's own, `encoding` None or "text"."""
        return type(self).decode is Endpoint.decode and self.encoding in (None, "text")

    def _reply(self) -> str | bool:
        """What the receive loop may answer short text with itself, without `on_receive`: see `_receive_loop`.

        False (the default): `on_receive` handles every message. True: the text itself. A str:
        that text. A class returns something else only while its own `on_receive` would do the same.
        """
        return False

    async def _receive_loop(self, websocket: _Socket) -> None:
        receive = self.receive
        on_receive = self.on_receive
        idle_timeout = self.idle_timeout
        # Text that is surely within `max_message_size` (4 UTF-8 bytes a character at most) and has
        # nothing to decode skips the `decode` coroutine, unless a subclass has its own `decode`.
        # In-process echo round trip: 15,180 -> 12,660 instructions.
        short = -1
        if self._plain_text():
            limit = self.max_message_size
            short = sys.maxsize if limit is None else limit // 4
        # Such text, where the class's `_reply` says what `on_receive` would send, is answered
        # here: the reply goes to the server with the send watch's part inline (as `_Socket.send`
        # does it) and without the `on_receive` and `_Socket.send` frames, on asyncio with a
        # `send_timeout`. Under uvicorn, server instructions per echo round trip 156,220 ->
        # 150,580 (raw ASGI 144,940), OK 154,350 -> 148,440 (raw 144,650).
        reply = self._reply() if short >= 0 else False
        watch = websocket._watch  # made at the accept, kept to the end
        task = current_task() if reply is not False and watch is not None else None
        answer: Message = {"type": "websocket.send", "text": reply if type(reply) is str else ""}
        scope = _receive_scope()
        try:
            with scope:
                while True:
                    websocket.receiving = scope
                    if idle_timeout is not None:
                        scope.deadline = anyio.current_time() + idle_timeout
                    message = await receive()
                    websocket.receiving = None
                    if idle_timeout is not None:
                        scope.deadline = math.inf
                    if message["type"] == "websocket.receive":
                        data = message.get("text")
                        if data is None or len(data) > short:
                            data = await self.decode(websocket, message)
                            if websocket.closed_by is not None:
                                break
                            await on_receive(websocket, data)
                        elif task is not None:
                            # The reply's way, see above; the loop runs only while the connection is open.
                            if reply is True:
                                answer = {"type": "websocket.send", "text": data}
                            assert watch is not None  # with `task`
                            sending = watch.sending
                            sending[task] = websocket._sends = websocket._sends + 1
                            stalled = False
                            try:
                                await websocket.data_send(answer)
                            except asyncio.CancelledError:
                                if not watch.expired(task):
                                    raise
                                stalled = True
                            except _DISCONNECTED:
                                raise websocket._peer_left() from None
                            finally:
                                sending.pop(task, None)
                            if stalled:
                                await websocket._stalled()
                        else:
                            await on_receive(websocket, data)
                        if websocket.closed_by is not None:
                            break
                    else:  # "websocket.disconnect", the only other message ASGI defines
                        code = message.get("code")  # missing or None: the close carried no status code (RFC 6455)
                        websocket.client_left(
                            CloseCode.NO_STATUS_RCVD if code is None else int(code), message.get("reason") or ""
                        )
                        break
        finally:
            websocket.receiving = None  # an exception out of receive() leaves it set: it holds the task
            del task, scope  # a raised exception's traceback keeps this frame: it must not hold the task
        if websocket.closed_by is None:
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
        if encoding == "bytes" and text is not None:
            return await self._reject(websocket, CloseCode.UNSUPPORTED_DATA, "expected binary messages")
        return data  # "bytes", or an encoding of the subclass's own: its decode() takes it from here

    async def _reject(self, websocket: WebSocket, code: CloseCode, reason: str) -> None:
        logger.info("closing %s with %d: %s", self._path(), code, reason)
        await websocket.close(code, reason)

    async def _fail(self, websocket: WebSocket) -> None:
        """Log the exception being handled and close with 1011, unless the connection had already ended."""
        logger.exception("unhandled error in %s on %s", type(self).__name__, self._path())
        self._wsendpoints_socket.ended(CloseCode.INTERNAL_ERROR, "internal error", "error")
        await websocket.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _disconnect(self, websocket: _Socket) -> None:
        if websocket.closed_by is None:
            # Cancelled from outside (server shutdown): try to tell the peer, but never wait long.
            websocket.ended(CloseCode.GOING_AWAY, "server shutting down", "server")
            with anyio.move_on_after(1, shield=True):
                await websocket.close(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.CancelScope(shield=True):
            try:
                await self.on_disconnect(websocket, websocket.close_code or CloseCode.GOING_AWAY)
            except Exception:
                logger.exception("unhandled error in %s.on_disconnect", type(self).__name__)

    async def _deny(
        self, websocket: WebSocket, status: int, text: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Refuse the handshake with an HTTP response where the server supports one, else a close (HTTP 403)."""
        if websocket.application_state is not WebSocketState.CONNECTING:
            return  # on_connect already answered the handshake itself
        if "websocket.http.response" in (self.scope.get("extensions") or {}):
            await websocket.send_denial_response(PlainTextResponse(text, status, headers))
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

    def _host(self) -> str:
        values = [value.decode("latin-1") for name, value in self.scope.get("headers", ()) if name == b"host"]
        return repr(values[0] if len(values) == 1 else values)
