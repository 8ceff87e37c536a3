"""`RoomEndpoint`: chat rooms with presence, broadcast from the app and slow-consumer isolation.

A message's way: `on_receive` here formats it once and publishes it to the broker; the broker
hands it to every member's queue (`rooms/member.py`); each member's own writer sends it.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import json
import logging
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

import anyio
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from .. import _json
from .._limits import KeyedRateLimit
from .._loop import LoopHandle
from .._options import OptionCheck, check_choice, check_number, check_pair, check_size, check_template, check_text
from .._text import check_outbound_text, neutralize_controls, normalize_name
from ..brokers.base import Broker, Entry, History, Message
from ..brokers.memory import MemoryBroker
from ..closecodes import CloseCode
from ..exceptions import BrokerError, TooManyRoomsError
from ..rooms.inbox import Inbox
from ..rooms.member import Member, SlowConsumerPolicy
from ..rooms.resume import Gate, text_bytes, with_id
from ..rooms.room import Room
from .base import _DISCONNECTED, MAX_REASON_BYTES, Endpoint

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["RoomEndpoint", "RoomOptions"]

logger = logging.getLogger("wsendpoints")

_default_broker = MemoryBroker()
_process = secrets.token_hex(6)
_member_ids = itertools.count(1)
_KICK_CODES = frozenset({1000, 1001, 1008, 1011, 1012, 1013})
"""The close codes of RFC 6455 that an application may send to remove a connection."""


def _check_broker(name: str, value: Any) -> None:
    if not isinstance(value, Broker):
        raise TypeError(f"{name} must be a wsendpoints.Broker, got {value!r}")


def _check_pattern(name: str, value: Any) -> None:
    check_text()(name, value)
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{name} {value!r} is not a regular expression: {exc}") from None


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_namespace(name: str, value: Any) -> None:
    check_text()(name, value)
    if not value or "/" in value:
        raise ValueError(f"{name} must be a non-empty str without '/', got {value!r}")


class RoomOptions(TypedDict, total=False):
    """The options of `RoomEndpoint.configure()`, for the type checker (`encoding` follows from `mode`)."""

    max_message_size: int | None
    allowed_origins: list[str] | None
    max_connections: int | None
    idle_timeout: float | None
    room_param: str
    user_param: str
    name_pattern: str
    mode: Literal["text", "json"]
    message_template: str | None
    echo_template: str | None
    join_template: str | None
    leave_template: str | None
    namespace: str
    broker: Broker
    max_queue: int
    slow_consumer: SlowConsumerPolicy
    send_timeout: float
    max_members: int | None
    rate_limit: tuple[int, float] | None
    join_rate_limit: tuple[int, float] | None
    presence_notices: bool
    keep_controls: bool
    require_auth: bool
    unique_names: bool
    max_queue_bytes: int
    slow_after: float
    history_size: int
    history_ttl: float
    since_param: str


class RoomEndpoint(Endpoint):
    """Chat rooms: each message goes to the other members of the sender's room.

    Mount it with the room (and optionally the user) in the path, or pass them as query
    parameters of the same names. Every member has a bounded outbound queue and its own
    writer, so one slow member never holds up the room.

    Example:
        ```python
        from starlette.routing import WebSocketRoute
        from wsendpoints import RoomEndpoint

        Chat = RoomEndpoint.configure(mode="json", max_members=50, rate_limit=(20, 10))
        routes = [WebSocketRoute("/rooms/{room}/{user}", Chat)]


        async def announce(request):
            await Chat.broadcast("lobby", "Server restarts in 5 minutes")
            return JSONResponse({"present": await Chat.members("lobby")})
        ```
    """

    room_param: str = "room"
    user_param: str = "user"
    name_pattern: str = r"[\w.-]{1,64}"
    mode: Literal["text", "json"] = "text"
    message_template: str | None = "{user}: {text}"
    echo_template: str | None = None
    join_template: str | None = "{user} joined the chat"
    leave_template: str | None = "{user} left the chat"
    namespace: str = "rooms"
    broker: Broker = _default_broker
    max_queue: int = 1024
    max_queue_bytes: int = 1024 * 1024
    slow_after: float = 1.0
    slow_consumer: SlowConsumerPolicy = "close"
    send_timeout: float = 10.0
    max_members: int | None = None
    rate_limit: tuple[int, float] | None = None
    max_message_size: int | None = 64 * 1024
    require_auth: bool = False
    unique_names: bool = False
    history_size: int = 100
    history_ttl: float = 300.0
    since_param: str = "since"
    join_rate_limit: tuple[int, float] | None = None
    presence_notices: bool = True
    keep_controls: bool = False

    _wsendpoints_options: ClassVar[dict[str, OptionCheck]] = {
        **{name: check for name, check in Endpoint._wsendpoints_options.items() if name != "encoding"},
        "room_param": check_text(),
        "user_param": check_text(),
        "name_pattern": _check_pattern,
        "mode": check_choice(("text", "json")),
        "message_template": check_template("user", "text", "room"),
        "echo_template": check_template("user", "text", "room"),
        "join_template": check_template("user", "room"),
        "leave_template": check_template("user", "room"),
        "namespace": _check_namespace,
        "broker": _check_broker,
        "max_queue": check_size(optional=False),
        "max_queue_bytes": check_size(optional=False),
        "slow_after": check_number(optional=False),
        "slow_consumer": check_choice(("close", "drop_oldest", "drop_newest")),
        "send_timeout": check_number(optional=False),
        "max_members": check_size(),
        "rate_limit": check_pair,
        "require_auth": _check_flag,
        "unique_names": _check_flag,
        "history_size": check_size(optional=False, minimum=0),
        "history_ttl": check_number(optional=False),
        "since_param": check_text(),
        "join_rate_limit": check_pair,
        "presence_notices": _check_flag,
        "keep_controls": _check_flag,
    }

    encoding: Literal["text", "bytes", "json"] | None = "text"
    _name_re: ClassVar[re.Pattern[str]] = re.compile(name_pattern)
    _warned_unauthenticated: ClassVar[bool] = False
    _join_limit: ClassVar[KeyedRateLimit | None] = None

    room: str
    """The room this connection is in (set once it has joined)."""
    user: str
    """The user name of this connection (set once it has joined)."""

    @classmethod
    def configure(cls, **options: Unpack[RoomOptions]) -> type[Self]:  # type: ignore[override]  # no `encoding`
        """Return a subclass with `options` set; see `Endpoint.configure()`."""
        return cls._configure(options)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.encoding = "json" if cls.mode == "json" else "text"
        cls._name_re = re.compile(cls.name_pattern)
        cls._warned_unauthenticated = False
        cls._join_limit = None if cls.join_rate_limit is None else KeyedRateLimit(*cls.join_rate_limit)

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        super().__init__(scope, receive, send)
        self.member: Member | None = None
        self._key = ""
        self._room: Room | None = None
        self._membership: _Membership | None = None
        self._writer: asyncio.Task[None] | None = None
        self._start: Callable[..., object] | None = None
        self._context: contextvars.Context | None = None
        """The connection's context as it joined: the writer's, whoever starts it."""
        self._sent: deque[float] | None = None
        self._kick: asyncio.Task[None] | None = None
        self._kicked_with: tuple[int, str] | None = None
        self._handle: LoopHandle | None = None
        self._websocket: WebSocket | None = None

    @property
    def dropped(self) -> int:
        """How many messages the "drop_oldest"/"drop_newest" policies dropped for this member."""
        return 0 if self.member is None else self.member.dropped

    # The server side

    @classmethod
    def _room_key(cls, room: str) -> str:
        return f"{cls.namespace}/{room}"

    @classmethod
    def _envelope(cls, kind: str, room: str, user: str | None, text: str | None = None) -> str:
        envelope: dict[str, Any] = {"type": kind, "room": room, "user": user}
        if text is not None:
            envelope["text"] = text
        return _json.dumps(envelope)

    @classmethod
    async def broadcast(cls, room: str, text: str) -> None:
        """Send `text` to every member of `room`, on every process the broker reaches.

        In text mode members receive `text` as it is (control characters included: the
        application's own text is trusted); in json mode a message envelope with `"user": null`.
        Nothing is published unless the call passes `_outbound()`'s checks.

        While members of the room in this process are behind together, this waits until they
        have caught up (at most `send_timeout` seconds, then it publishes anyway).

        Raises:
            TypeError: If `room` or `text` is not a `str`.
            ValueError: If the room name does not match `name_pattern` (after NFKC), or `text`
                has a lone surrogate or is over `max_message_size` bytes in UTF-8.
            BrokerClosedError: If the broker was closed.
        """
        room = cls._outbound(room, text)
        payload = text if cls.mode == "text" else cls._envelope("message", room, None, text)
        key = cls._room_key(room)
        local = Room.find(cls.broker, key)
        if local is not None:
            await local.hold(cls.send_timeout)
        await cls._publish(key, Message(payload))

    @classmethod
    async def _publish(cls, key: str, message: Message) -> None:
        await cls.broker.publish(key, message, history_size=cls.history_size, history_ttl=cls.history_ttl)

    @classmethod
    async def history(cls, room: str, since: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Return `room`'s recent messages as JSON-mode envelopes with their `"id"`, oldest first.

        For an HTTP route that renders a room's recent messages, or a client that could not
        resume. The room keeps its latest `history_size` messages (messages, broadcasts, join
        and leave notices) until `history_ttl` seconds after its latest one.

        Args:
            room: The room's name, as in the URL.
            since: Keep only the messages after the one of this id; if that id is no longer in
                the history (or is not an id), there are none.
            limit: At most this many: the first after `since`, else the latest.

        In text mode each entry is `{"id": ..., "text": ...}`, the text as members received it.

        Raises:
            TypeError: If `room` or `since` is not a `str`, or `limit` not an `int`.
            ValueError: If the room name does not match `name_pattern` (after NFKC), or `limit`
                is negative.
            BrokerClosedError: If the broker was closed.
            BrokerError: If the broker's backend cannot be read.
        """
        room = cls._room_name(room)
        check_text(optional=True)("since", since)
        if limit is not None:
            check_size(optional=False, minimum=0)("limit", limit)
        size = cls.history_size if limit is None else min(limit, cls.history_size)
        if size == 0:
            return []
        found = await cls.broker.history(cls._room_key(room), since, size)
        # Messages to one user (`send_to`, `kick`) are not the room's: never shown, never replayed.
        return [cls._as_envelope(room, message) for message in found.messages if message.to is None]

    @classmethod
    def _as_envelope(cls, room: str, message: Message) -> dict[str, Any]:
        if cls.mode == "json":
            try:
                envelope = json.loads(with_id(message.payload, message.id))
            except ValueError:  # another endpoint's text in the same room
                envelope = None
            if type(envelope) is dict and "type" in envelope:
                return envelope
            return {"type": "message", "room": room, "user": None, "text": message.payload, "id": message.id}
        return {"id": message.id, "text": message.payload}

    @classmethod
    def _outbound(cls, room: Any, text: Any) -> str:
        """Check a room name and a text that the app sends to members; return the room's NFKC name.

        Every entry point from the app (`broadcast()`, and any later one) calls this first, so a
        bad call raises at the caller and never reaches, or closes, a member.
        """
        name = cls._room_name(room)
        check_outbound_text(text, cls.max_message_size)
        return name

    @classmethod
    def _room_name(cls, room: Any) -> str:
        """Check a room name from the app (`broadcast()`, `history()`); return its NFKC form."""
        return cls._checked_name(room, "room")

    @classmethod
    def _checked_name(cls, value: Any, what: str) -> str:
        """Check a room or user name (`what`) the app passes; return its NFKC form."""
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, got {type(value).__name__}")
        name = normalize_name(value)
        if not cls._name_re.fullmatch(name):
            raise ValueError(f"{what} name {value!r} does not match name_pattern {cls.name_pattern!r}")
        return name

    @classmethod
    async def members(cls, room: str) -> list[str]:
        """Return the user names present in `room` (NFKC-normalized, as members join), sorted, each once."""
        return await cls.broker.members(cls._room_key(normalize_name(room)))

    # Who is who: one user's connections, from the server side

    @classmethod
    def _addressee(cls, user: Any) -> str:
        """Check a user name the app addresses (as `_outbound()` checks a room); return its NFKC form."""
        return cls._checked_name(user, "user")

    @classmethod
    async def send_to(cls, room: str, user: str, text: str) -> int | None:
        """Send `text` to every connection of `user` in `room`, on every process the broker reaches, and nobody else.

        In text mode those connections receive `text` as it is; in json mode
        `{"type": "direct", "room": room, "text": text}`.

        Returns:
            How many connections it reached, where the broker can tell: `MemoryBroker` counts
            them; `RedisBroker` cannot (they may be on other processes) and returns None.

        Raises:
            TypeError: If `room`, `user` or `text` is not a `str`.
            ValueError: If `room` or `user` does not match `name_pattern` (after NFKC), or `text`
                has a lone surrogate or is over `max_message_size` bytes in UTF-8.
            BrokerClosedError: If the broker was closed.
        """
        room = cls._outbound(room, text)
        user = cls._addressee(user)
        payload = text if cls.mode == "text" else _json.dumps({"type": "direct", "room": room, "text": text})
        return await cls.broker.publish_to(cls._room_key(room), user, Message(payload))

    @classmethod
    async def kick(
        cls, room: str, user: str, code: int = CloseCode.POLICY_VIOLATION, reason: str = "removed from the room"
    ) -> int | None:
        """Close every connection of `user` in `room`, on every process the broker reaches, with `code` and `reason`.

        Each connection leaves the room as any other that closes: the room is told when the
        user's last connection has gone (the leave notice).

        Returns:
            How many connections it reached, as `send_to` does.

        Raises:
            TypeError: If `room`, `user` or `reason` is not a `str`, or `code` not an `int`.
            ValueError: If `room` or `user` does not match `name_pattern` (after NFKC), `code` is not one an
                application may send (1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999), or
                `reason` is over 123 bytes in UTF-8.
            BrokerClosedError: If the broker was closed.
        """
        room = cls._outbound(room, "")
        user = cls._addressee(user)
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"code must be an int, got {code!r}")
        if code not in _KICK_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"code must be 1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999, got {code}")
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, got {type(reason).__name__}")
        try:
            size = len(reason.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"reason cannot be encoded as UTF-8: {exc.reason} at index {exc.start}") from None
        if size > MAX_REASON_BYTES:
            raise ValueError(f"reason is {size} bytes in UTF-8, over the {MAX_REASON_BYTES} a close frame holds")
        return await cls.broker.publish_to(cls._room_key(room), user, Message(reason, close=int(code)))

    # The connection

    def dispatch(self) -> Coroutine[Any, Any, None]:
        """Serve the connection: on asyncio, `Endpoint.dispatch` itself; on trio, within a task group.

        Not a coroutine function of its own, so no frame of ours more per connection: an idle
        connection keeps each frame (0.26 KB), and each is resumed for every message waited for.
        On asyncio the member's writer and a kick run as bare tasks (lighter than a task group),
        which `_wind_down` lets end.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio (or no loop running yet): the task group serves any backend
            return self._dispatch_in_task_group()
        return super().dispatch()

    async def _wind_down(self) -> None:
        if self._writer is not None and not self._closing_by_writer():
            self._writer.cancel()
        for task in (self._writer, self._kick):  # a kick only closes: it is never cancelled
            if task is not None:
                await asyncio.wait([task])  # it has ended before the connection has

    async def _dispatch_in_task_group(self) -> None:
        async with anyio.create_task_group() as tasks:
            self._start = tasks.start_soon
            await super().dispatch()
            if self._kicked_with is None and not self._closing_by_writer():
                tasks.cancel_scope.cancel()

    def _closing_by_writer(self) -> bool:
        """Whether the member's writer stalled and is sending the close frame (within 1 s), not to be cancelled.

        The connection counts as ended as soon as that close begins, so the handler may finish
        first: cancelling the writer then would lose the close frame. An idle or sending writer
        has been stopped by the end of the connection already (`Member.mute`).
        """
        return self.member is not None and self.member.stalled is not None

    def _start_writer(self, member: Member) -> None:
        """Have the member's first message start its writer: a task of its own, sending straight to the server's `send`.

        Until then the member has no task (see `Member.start_later`). The socket mutes the member
        as the connection ends, so no send needs a check of its own (in-process, per delivery to
        100 members in a burst: 10,830 -> 9,530 instructions).
        """
        socket = self._wsendpoints_socket
        socket.on_end = member.mute
        if not socket.open:  # it ended before the writer started
            member.mute()
        # Whoever sends the first message starts the writer: in this connection's context, not theirs
        # (a correlation id or a trace the app set for this connection is the writer's too).
        self._context = contextvars.copy_context()
        member.start_later(self._run_writer)

    def _run_writer(self) -> None:
        """Start the member's writer task; it runs `Member.run` itself, with no frame of ours around it."""
        member, context = self.member, self._context
        assert member is not None
        assert context is not None
        send = self._wsendpoints_socket.data_send
        if self._start is None:  # a task copies the context it is made in (`context=` is Python 3.11+)
            self._writer = context.run(
                asyncio.get_running_loop().create_task, member.run(send, self._close_stalled, self._writer_failed)
            )
        else:
            context.run(self._start, member.run, send, self._close_stalled, self._writer_failed)

    def _param(self, websocket: WebSocket, name: str) -> str | None:
        value = websocket.path_params.get(name)
        if value is None:
            value = websocket.query_params.get(name)
        return None if value is None else normalize_name(str(value))

    def client_key(self, websocket: WebSocket) -> str | None:
        """Return the key `join_rate_limit` counts connections under: the client's address.

        Behind a proxy every client has the proxy's address: run uvicorn with `--proxy-headers`
        and `--forwarded-allow-ips`, or override this to read the header your proxy sets.
        None (no address known, e.g. a Unix socket) is never limited.
        """
        client = websocket.client
        return None if client is None else client.host

    async def authorize(self, websocket: WebSocket, room: str, user: str) -> bool:
        """Return whether `user` may enter `room`; override it to decide (default: everyone may).

        Called after the accept and the checks of the names, before the connection joins: False
        closes it with 1008 "not allowed in this room", and nobody in the room hears of it. An
        exception closes it with 1011, like any error in a handler. With `require_auth`,
        `websocket.user` is the authenticated user and `user` its `display_name`.
        """
        return True

    def _authenticated(self, websocket: WebSocket) -> str | None:
        """Return the `display_name` of the connection's authenticated user, or None."""
        if "user" not in websocket.scope:
            cls = type(self)
            if not cls._warned_unauthenticated:
                cls._warned_unauthenticated = True
                logger.warning(
                    "%s has require_auth=True but no AuthenticationMiddleware sets websocket.user: every "
                    "connection is closed with 1008 'not authenticated'. Add Starlette's AuthenticationMiddleware "
                    "with an AuthenticationBackend to the app.",
                    cls.__name__,
                )
            return None
        user = websocket.user
        if not getattr(user, "is_authenticated", False):
            return None
        return normalize_name(str(user.display_name))

    async def on_connect(self, websocket: WebSocket) -> None:
        """Accept; check the join rate, the user (`require_auth`), the names (NFKC), `authorize`, the limits; join."""
        await super().on_connect(websocket)
        if self.closed_by is not None:
            return
        limit = self._join_limit
        if limit is not None:
            key = self.client_key(websocket)
            if key is not None and not limit.allow(key):
                await self._reject(websocket, CloseCode.POLICY_VIOLATION, "too many connections")
                return
        user: str | None
        if self.require_auth:
            user = self._authenticated(websocket)
            if user is None:
                await self._reject(websocket, CloseCode.POLICY_VIOLATION, "not authenticated")
                return
        else:
            user = self._param(websocket, self.user_param)
        room = self._param(websocket, self.room_param)
        if room is None or not self._name_re.fullmatch(room):
            await self._reject(websocket, CloseCode.POLICY_VIOLATION, "invalid room name")
            return
        if user is None:
            user = f"guest-{secrets.token_hex(4)}"
        elif not self._name_re.fullmatch(user):
            await self._reject(websocket, CloseCode.POLICY_VIOLATION, "invalid user name")
            return
        if not await self.authorize(websocket, room, user):
            await self._reject(websocket, CloseCode.POLICY_VIOLATION, "not allowed in this room")
            return
        self.room, self.user, self._key = room, user, self._room_key(room)
        broker = self.broker
        local = self._room = Room.of(broker, self._key)
        member = self.member = Member(
            f"{_process}-{next(_member_ids)}",
            self.max_queue,
            self.slow_consumer,
            self.send_timeout,
            max_queue_bytes=self.max_queue_bytes,
            slow_after=self.slow_after,
            room=local,
            stamp=self.mode == "json",
        )
        since = websocket.query_params.get(self.since_param) if self.mode == "json" else None
        gate = member.resume(broker.position) if since is not None and self.history_size else None
        self._handle, self._websocket = LoopHandle.current(), websocket
        # After `resume`: the inbox hands on to the member's gate. It drops what was published
        # before the member entered, which a resume's history read after the entry holds.
        inbox = Inbox(user, member.take, self._kick_soon, self.max_queue, broker.position, steady=member.unscreen)
        member.screen(inbox.deliver)
        membership = self._membership = _Membership(broker, self._key, member.id, local.joined(broker, member))
        presence = partial(
            broker.enter,
            self._key,
            member.id,
            user,
            greeting=self._notice(self.join_template, "join"),
            farewell=self._notice(self.leave_template, "leave"),
            unique=self.unique_names,
            max_members=self.max_members,
            history_size=self.history_size,
            history_ttl=self.history_ttl,
        )
        try:
            entry = await membership.enter(presence)
        except BrokerError as exc:
            await self._broker_failed(websocket, exc)
            return
        if entry.refused is not None:
            full = entry.refused == "room full"
            code = CloseCode.TRY_AGAIN_LATER if full else CloseCode.POLICY_VIOLATION
            await self._reject(websocket, code, entry.refused)
            return
        inbox.open(entry.after)
        if since is not None and gate is None:  # history off: nothing to recover
            member.push_first(self._resume_envelope(False, 0))
        self._joined(member, entry)
        self._start_writer(member)
        if gate is not None:
            assert since is not None
            await self._resume(member, gate, since)

    def _joined(self, member: Member, entry: Entry) -> None:
        """Queue what a member gets first: in json mode, the presence snapshot of its entry."""
        if self.mode == "json":
            presence = {"type": "presence", "room": self.room, "users": list(entry.users)}
            member.push_first(_json.dumps(presence))

    def _kick_soon(self, code: int, reason: str) -> None:
        """Close the connection with `code` and `reason` (a kick) soon; any thread may call this."""
        assert self._handle is not None
        self._handle.call(partial(self._start_kick, code, reason))

    def _start_kick(self, code: int, reason: str) -> None:
        """Close the connection with `code` and `reason` (a kick), from a task of its own loop."""
        websocket = self._websocket
        if self._kicked_with is not None or self.closed_by is not None or websocket is None:
            return  # kicked twice, or closing anyway: the first close stands
        self._kicked_with = (code, reason)
        if self._start is None:
            self._kick = asyncio.get_running_loop().create_task(self._kicked(websocket, code, reason))
        else:
            self._start(self._kicked, websocket, code, reason)

    async def _kicked(self, websocket: WebSocket, code: int, reason: str) -> None:
        logger.info("closing %s with %d: %s (user %r, kicked)", self._path(), code, reason, self.user)
        with anyio.move_on_after(1):  # a stalled peer may never take the close frame
            await websocket.close(code, reason)

    async def _broker_failed(self, websocket: WebSocket, exc: BrokerError) -> None:
        """Close 1013 after the broker failed on this member's path: a WARNING, never 1011, no traceback."""
        reason = "too many rooms" if isinstance(exc, TooManyRoomsError) else "try again later"
        logger.warning("closing %s with 1013 %r: room %r: %s", self._path(), reason, self._key, exc)
        await self._reject(websocket, CloseCode.TRY_AGAIN_LATER, reason)

    def _resume_envelope(self, recovered: bool, missed: int) -> str:
        return _json.dumps({"type": "resume", "room": self.room, "recovered": recovered, "missed": missed})

    async def _resume(self, member: Member, gate: Gate, since: str) -> None:
        """Queue the resume envelope, then what was missed since `since`, then open the gate to live messages."""
        broker = self.broker
        try:  # one more than it may replay: more than that was missed, so it cannot recover
            found = await broker.history(self._key, since, self.history_size + 1)
        except BrokerError:
            logger.warning("could not read room %r's history to resume %r", self._key, self.user, exc_info=True)
            found = History([], recovered=False)
        through = None
        replay: list[Message] = []
        recovered = found.recovered and len(found.messages) <= self.history_size
        if recovered:
            last = found.messages[-1].id if found.messages else since
            through = broker.position(last or since)
            replay = [message for message in found.messages if self._replays(message)]
            # Only what fits in the member's queue now, in messages and in bytes, with the resume
            # envelope: a replay never overflows it (flow control then paces the room as it drains).
            size = sum(text_bytes(with_id(message.payload, message.id)) for message in replay)
            recovered = member.fits(len(replay) + 1, size + text_bytes(self._resume_envelope(True, len(replay))))
        if not recovered:
            replay, through = [], None
        member.push(self._resume_envelope(recovered, len(replay)))
        gate.open(replay, through)

    def _replays(self, message: Message) -> bool:
        """Whether a missed message is replayed: not the user's own, unless echoed; never its own notices.

        Never a message to one user (`send_to`, `kick`): a direct message is live only.
        """
        if message.to is not None:
            return False
        try:
            envelope = json.loads(message.payload)
        except ValueError:  # another endpoint's text in the same room
            return True
        if type(envelope) is not dict or envelope.get("user") != self.user:
            return True
        return envelope.get("type") == "message" and self.echo_template is not None

    async def _close_stalled(self, reason: str) -> None:
        """Close with 1013 and `reason` after the member's writer stalled (a method: no closure per member)."""
        logger.info("closing %s with 1013: %s (user %r)", self._path(), reason, self.user)
        with anyio.move_on_after(1):  # a stalled peer may never take the close frame
            await self._wsendpoints_socket.close(CloseCode.TRY_AGAIN_LATER, reason)

    async def _writer_failed(self, exc: Exception) -> None:
        """The member's send raised `exc`: the peer left, or close with 1011 (a method: no closure per member)."""
        socket = self._wsendpoints_socket
        if isinstance(exc, _DISCONNECTED):
            socket.client_left(CloseCode.ABNORMAL_CLOSURE, "")
            logger.debug("peer left before websocket.send")
            return
        await self._fail(socket)

    def _notice(self, template: str | None, kind: str) -> Message | None:
        """Return the join or leave notice of this member, or None if there is none (or `presence_notices` is off)."""
        if not self.presence_notices:
            return None
        if self.mode == "json":
            payload = self._envelope(kind, self.room, self.user)
        elif template is not None:
            payload = template.format(user=self.user, room=self.room)
        else:
            return None
        assert self.member is not None
        return Message(payload, sender=self.member.id)

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        """Check the rate limit, then send the message to the other members (text mode: controls neutralised)."""
        if self.rate_limit is not None and self._over_rate_limit(*self.rate_limit):
            await self._reject(websocket, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return
        if self.mode == "json":
            if type(data) is not dict or data.keys() != {"text"} or type(data["text"]) is not str:
                await self._reject(websocket, CloseCode.POLICY_VIOLATION, 'expected {"text": string}')
                return
            text: str = data["text"]
            payload: str | None = self._envelope("message", self.room, self.user, text)
            echo = None  # echoed in the room's order, with its id: the broker delivers it to its sender too
            sender = None if self.echo_template is not None else self.member
        else:
            text = data if self.keep_controls else neutralize_controls(data)
            fields = {"user": self.user, "text": text, "room": self.room}
            template = self.message_template
            payload = None if template is None else template.format_map(fields)
            echo = None if self.echo_template is None else self.echo_template.format_map(fields)
            sender = self.member
        member = self.member
        assert member is not None
        if payload is not None:
            assert self._room is not None
            await self._room.hold(self.send_timeout)  # the receive loop stops reading while the room is behind
            try:
                await self._publish(self._key, Message(payload, sender=None if sender is None else sender.id))
            except BrokerError as exc:
                await self._broker_failed(websocket, exc)
                return
        if echo is not None:
            member.push(echo)

    def _over_rate_limit(self, count: int, seconds: float) -> bool:
        now = anyio.current_time()
        sent = self._sent
        if sent is None:
            sent = self._sent = deque()
        while sent and now - sent[0] >= seconds:
            sent.popleft()
        if len(sent) >= count:
            return True
        sent.append(now)
        return False

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        """Leave the room: drop out of presence (the broker tells the room if it was the user's last), unsubscribe."""
        if self._membership is None:
            return
        try:
            await self._membership.aclose()
        except BrokerError as exc:
            logger.warning("could not tell room %r that %r left: %s", self._key, self.user, exc)


class _Membership:
    """A member's stay in its room: subscribed through its inbox (`joined`), and in the room's presence.

    `enter()` subscribes, then enters the presence; `aclose()` departs (unless the entry was
    refused), then unsubscribes. A class, not an `AsyncExitStack` around a generator: every idle
    member holds one, and the generator's frame kept the member's `Entry` alive, whose list of
    the room's users grows with the room (traced, per idle member, in-process: 14.6 -> 11.0 KB
    with 500 members, 20.6 -> 11.0 KB with 2,000).
    """

    __slots__ = ("_broker", "_joined", "_key", "_member_id", "_present")

    def __init__(self, broker: Broker, key: str, member_id: str, joined: AbstractAsyncContextManager[None]) -> None:
        self._broker, self._key, self._member_id = broker, key, member_id
        self._joined: AbstractAsyncContextManager[None] | None = joined
        self._present = False

    async def enter(self, presence: Callable[[], Awaitable[Entry]]) -> Entry:
        """Subscribe, then enter the presence with `presence()`; return its `Entry`. Once.

        If either raises, nothing is left subscribed and the exception goes on.
        """
        joined, self._joined = self._joined, None
        assert joined is not None
        await joined.__aenter__()  # if this raises, there is nothing to undo
        try:
            entry = await presence()
        except BaseException as exc:
            await joined.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._joined = joined
        self._present = entry.refused is None
        return entry

    async def aclose(self) -> None:
        """Leave the presence, then unsubscribe; once. A broker's error leaving goes on, after the unsubscribe."""
        joined, self._joined = self._joined, None
        if joined is None:
            return
        try:
            if self._present:
                await self._broker.depart(self._key, self._member_id)
        except BaseException as exc:
            await joined.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        await joined.__aexit__(None, None, None)
