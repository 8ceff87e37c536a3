from __future__ import annotations

import contextvars
import gc
import logging
import re
import threading
import weakref
from typing import Any, Literal

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from tests.conftest import ClientFactory
from tests.envelopes import unid
from wsendpoints import BrokerClosedError, BrokerUnavailableError, CloseCode, MemoryBroker, RoomEndpoint
from wsendpoints.brokers.base import Entry
from wsendpoints.testing import (
    assert_no_message,
    assert_no_message_each,
    expect_close,
    receive_json,
    receive_text,
    receive_text_each,
)


def room_app(endpoint: type[RoomEndpoint], path: str = "/rooms/{room}/{user}") -> Starlette:
    async def say(request: Request) -> JSONResponse:
        room = request.path_params["room"]
        await endpoint.broadcast(room, (await request.body()).decode())
        return JSONResponse(await endpoint.members(room))

    return Starlette(routes=[WebSocketRoute(path, endpoint), Route("/say/{room}", say, methods=["POST"])])


def fresh(**options: Any) -> type[RoomEndpoint]:
    """A room endpoint on a broker of its own, so that tests never share rooms."""
    return RoomEndpoint.configure(broker=MemoryBroker(), **options)


# Options


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"mode": "xml"}, ValueError, "mode must be one of 'text', 'json', got 'xml'"),
        ({"message_template": "{user} {colour}"}, ValueError, "message_template '{user} {colour}' is not a template"),
        ({"join_template": "{text}"}, ValueError, "join_template '{text}' is not a template of the fields user, room"),
        ({"echo_template": 1}, TypeError, "echo_template must be a str or None, got 1"),
        ({"namespace": "a/b"}, ValueError, "namespace must be a non-empty str without '/', got 'a/b'"),
        ({"namespace": ""}, ValueError, "namespace must be a non-empty str"),
        ({"name_pattern": "[a-"}, ValueError, "name_pattern '\\[a-' is not a regular expression"),
        ({"broker": object()}, TypeError, "broker must be a wsendpoints.Broker"),
        ({"max_queue": 0}, ValueError, "max_queue must be at least 1"),
        ({"max_queue": None}, TypeError, "max_queue must be an int, got None"),
        ({"slow_consumer": "ignore"}, ValueError, "slow_consumer must be one of 'close', 'drop_oldest', 'drop_newest'"),
        ({"send_timeout": None}, TypeError, "send_timeout must be a number of seconds, got None"),
        ({"max_members": 0}, ValueError, "max_members must be at least 1"),
        ({"rate_limit": (5,)}, TypeError, "rate_limit must be None or a pair"),
        ({"encoding": "bytes"}, TypeError, "unknown option\\(s\\) encoding"),
    ],
)
def test_room_options_are_checked_when_configured(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        RoomEndpoint.configure(**options)


def test_room_defaults() -> None:
    assert RoomEndpoint.max_message_size == 64 * 1024
    assert (RoomEndpoint.max_queue, RoomEndpoint.slow_consumer, RoomEndpoint.send_timeout) == (1024, "close", 10.0)
    assert (RoomEndpoint.mode, RoomEndpoint.encoding, RoomEndpoint.namespace) == ("text", "text", "rooms")
    assert RoomEndpoint.configure(mode="json").encoding == "json"
    assert isinstance(RoomEndpoint.broker, MemoryBroker)


# Text mode


def test_room_sends_messages_to_the_others_only(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh()))
    with (
        client.websocket_connect("/rooms/lobby/ann") as ann,
        client.websocket_connect("/rooms/lobby/bob") as bob,
        client.websocket_connect("/rooms/lobby/cleo") as cleo,
    ):
        assert receive_text_each([ann, ann, bob]) == [
            "bob joined the chat",
            "cleo joined the chat",
            "cleo joined the chat",
        ]
        bob.send_text("hi")
        assert receive_text_each([ann, cleo]) == ["bob: hi", "bob: hi"]
        assert_no_message(bob)
        cleo.close()
        assert receive_text_each([ann, bob]) == ["cleo left the chat"] * 2
        assert_no_message_each([ann, bob])


def test_room_templates_and_echo(client_factory: ClientFactory) -> None:
    endpoint = fresh(
        message_template="[{room}] {user} says {text}",
        echo_template="You wrote: {text}",
        join_template="{user} is in {room}",
        leave_template=None,
    )
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            assert receive_text(ann) == "bob is in lobby"
            bob.send_text("{user} hi")
            assert receive_text(ann) == "[lobby] bob says {user} hi"
            assert receive_text(bob) == "You wrote: {user} hi"
        assert_no_message(ann)


def test_room_without_templates_sends_nothing(client_factory: ClientFactory) -> None:
    endpoint = fresh(message_template=None, join_template=None, leave_template=None)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            bob.send_text("hi")
        assert_no_message(ann)


def test_room_names_from_query_and_generated_user(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(room_app(endpoint, path="/chat"))
    with (
        client.websocket_connect("/chat?room=lobby&user=ann") as ann,
        client.websocket_connect("/chat?room=lobby") as guest1,
        client.websocket_connect("/chat?room=lobby"),
    ):
        first, second = receive_text_each([ann, ann])
        assert re.fullmatch(r"guest-[0-9a-f]{8} joined the chat", first)
        assert re.fullmatch(r"guest-[0-9a-f]{8} joined the chat", second)
        assert second != first
        members = anyio.run(endpoint.members, "lobby")
        assert len(members) == 3
        assert "ann" in members
        guest1.send_text("hello")
        assert receive_text(ann) == f"{first.split()[0]}: hello"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/chat?user=ann", "invalid room name"),
        ("/chat?room=a%20b&user=ann", "invalid room name"),
        ("/chat?room=lobby&user=" + "x" * 65, "invalid user name"),
        ("/chat?room=lobby&user=%3Cimg%3E", "invalid user name"),
        ("/chat?room=lobby&user=", "invalid user name"),
    ],
)
def test_room_bad_names_are_accepted_then_closed_1008(client_factory: ClientFactory, path: str, reason: str) -> None:
    endpoint = fresh()
    client = client_factory(room_app(endpoint, path="/chat"))
    with client.websocket_connect(path) as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, reason)
    assert endpoint.broker.rooms() == []  # type: ignore[attr-defined]


def test_room_name_pattern_option(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(name_pattern="[a-z]+")))
    with client.websocket_connect("/rooms/lobby/Ann") as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "invalid user name")
    with client.websocket_connect("/rooms/lobby/ann") as ws:
        assert_no_message(ws)


def test_room_text_mode_refuses_bytes_1003(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh()))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        assert receive_text(ann) == "bob joined the chat"
        bob.send_bytes(b"hi")
        assert expect_close(bob) == (CloseCode.UNSUPPORTED_DATA, "expected text messages")
        assert receive_text(ann) == "bob left the chat"


# JSON mode


def test_room_json_mode_envelopes(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        assert receive_json(ann) == {"type": "presence", "room": "lobby", "users": ["ann"]}
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            assert receive_json(bob) == {"type": "presence", "room": "lobby", "users": ["ann", "bob"]}
            assert unid(receive_json(ann)) == {"type": "join", "room": "lobby", "user": "bob"}
            bob.send_json({"text": "<b>hi</b>"})
            assert unid(receive_json(ann)) == {"type": "message", "room": "lobby", "user": "bob", "text": "<b>hi</b>"}
            assert_no_message(bob)
            response = client.post("/say/lobby", content="maintenance at 5")
            assert response.json() == ["ann", "bob"]
            expected = {"type": "message", "room": "lobby", "user": None, "text": "maintenance at 5"}
            assert [unid(receive_json(ann)), unid(receive_json(bob))] == [expected, expected]
        assert unid(receive_json(ann)) == {"type": "leave", "room": "lobby", "user": "bob"}


def test_room_json_mode_echo(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(mode="json", echo_template="")))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        ann.send_json({"text": "mine"})
        assert unid(receive_json(ann)) == {"type": "message", "room": "lobby", "user": "ann", "text": "mine"}


@pytest.mark.parametrize("data", [["text"], {"text": 1}, {"text": "x", "extra": 1}, {}, "text", None])
def test_room_json_mode_other_json_closes_1008(client_factory: ClientFactory, data: Any) -> None:
    client = client_factory(room_app(fresh(mode="json")))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        ann.send_json(data)
        assert expect_close(ann) == (CloseCode.POLICY_VIOLATION, 'expected {"text": string}')


def test_room_json_mode_bad_json_closes_1007(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(mode="json")))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        ann.send_text('{"text": NaN}')
        assert expect_close(ann) == (CloseCode.INVALID_DATA, "NaN is not valid JSON")


# Namespaces, broadcast and members


def test_namespaces_never_share_rooms(client_factory: ClientFactory) -> None:
    broker = MemoryBroker()
    first = RoomEndpoint.configure(broker=broker, namespace="first")
    second = RoomEndpoint.configure(broker=broker, namespace="second")
    app = Starlette(routes=[WebSocketRoute("/a/{room}/{user}", first), WebSocketRoute("/b/{room}/{user}", second)])
    client = client_factory(app)
    with client.websocket_connect("/a/lobby/ann") as ann, client.websocket_connect("/b/lobby/bob") as bob:
        bob.send_text("hi")
        assert_no_message(ann)
        assert anyio.run(first.members, "lobby") == ["ann"]
        assert anyio.run(second.members, "lobby") == ["bob"]


def test_broadcast_reaches_every_member_and_members_lists_them(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None)
    client = client_factory(room_app(endpoint))
    with (
        client.websocket_connect("/rooms/lobby/zoe") as zoe,
        client.websocket_connect("/rooms/lobby/adam") as adam,
        client.websocket_connect("/rooms/lobby/zoe") as zoe_again,
        client.websocket_connect("/rooms/other/max") as other,
    ):
        assert client.post("/say/lobby", content="to all").json() == ["adam", "zoe"]
        assert receive_text_each([zoe, adam, zoe_again]) == ["to all"] * 3
        assert_no_message(other)
    assert anyio.run(endpoint.members, "lobby") == []


def test_default_broker_is_shared_by_configured_subclasses(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(RoomEndpoint.configure(join_template=None)))
    with client.websocket_connect("/rooms/shared-default/ann") as ann:
        anyio.run(RoomEndpoint.broadcast, "shared-default", "from the base class")
        assert receive_text(ann) == "from the base class"


def test_broadcast_after_broker_closed_raises() -> None:
    broker = MemoryBroker()
    endpoint = RoomEndpoint.configure(broker=broker)
    anyio.run(broker.aclose)
    with pytest.raises(BrokerClosedError):
        anyio.run(endpoint.broadcast, "lobby", "x")


# Limits


def test_max_members_accepts_then_closes_1013(client_factory: ClientFactory) -> None:
    endpoint = fresh(max_members=2)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        with client.websocket_connect("/rooms/lobby/bob"):
            assert receive_text(ann) == "bob joined the chat"
            with client.websocket_connect("/rooms/lobby/cleo") as cleo:
                assert expect_close(cleo) == (CloseCode.TRY_AGAIN_LATER, "room full")
            assert anyio.run(endpoint.members, "lobby") == ["ann", "bob"]
        assert receive_text(ann) == "bob left the chat"
        with client.websocket_connect("/rooms/lobby/dan"):
            assert receive_text(ann) == "dan joined the chat"
        assert receive_text(ann) == "dan left the chat"
        assert_no_message(ann)


def test_rate_limit_closes_1008_and_spares_the_others(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(rate_limit=(3, 60), join_template=None)))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        for n in range(3):
            bob.send_text(f"m{n}")
        bob.send_text("one too many")
        assert expect_close(bob) == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        assert receive_text_each([ann] * 4) == ["bob: m0", "bob: m1", "bob: m2", "bob left the chat"]


def test_rate_limit_window_slides(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(rate_limit=(2, 0.05), join_template=None)))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        for n in range(6):
            bob.send_text(f"m{n}")
            if n % 2:
                assert receive_text_each([ann, ann]) == [f"bob: m{n - 1}", f"bob: m{n}"]
                anyio.run(anyio.sleep, 0.06)  # let the rate limit window pass
        assert_no_message(bob)


def test_room_max_message_size_is_64_kib(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(join_template=None)))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        ann.send_text("x" * 64 * 1024)
        assert receive_text(bob) == "ann: " + "x" * 64 * 1024  # exactly 64 KiB passes
        ann.send_text("x" * (64 * 1024 + 1))
        assert expect_close(ann) == (CloseCode.MESSAGE_TOO_BIG, "message too big")


# Guarantees


def test_every_member_sees_the_same_order_and_each_sender_in_order(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(join_template=None)))
    with (
        client.websocket_connect("/rooms/lobby/a") as a,
        client.websocket_connect("/rooms/lobby/b") as b,
        client.websocket_connect("/rooms/lobby/c") as c,
        client.websocket_connect("/rooms/lobby/d") as d,
    ):
        for n in range(50):
            a.send_text(f"{n}")
            b.send_text(f"{n}")
        seen_c = [receive_text(c) for _ in range(100)]
        seen_d = [receive_text(d) for _ in range(100)]
        assert seen_c == seen_d
        for sender in "ab":
            assert [m for m in seen_c if m.startswith(sender)] == [f"{sender}: {n}" for n in range(50)]
        assert [receive_text(a) for _ in range(50)] == [f"b: {n}" for n in range(50)]
        assert_no_message_each([c, d])


def test_members_in_separate_test_client_sessions_share_the_room(client_factory: ClientFactory) -> None:
    """Without `with TestClient(app)`, each session runs on its own event loop thread."""
    endpoint = fresh(join_template=None)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
        for n in range(20):
            ann.send_text(f"a{n}")
            bob.send_text(f"b{n}")
        assert [receive_text(bob) for _ in range(20)] == [f"ann: a{n}" for n in range(20)]
        assert [receive_text(ann) for _ in range(20)] == [f"bob: b{n}" for n in range(20)]


def test_members_in_one_test_client_portal_share_the_room(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None)
    with client_factory(room_app(endpoint)) as client:
        with client.websocket_connect("/rooms/lobby/ann") as ann, client.websocket_connect("/rooms/lobby/bob") as bob:
            bob.send_text("hi")
            assert receive_text(ann) == "bob: hi"
            assert anyio.run(endpoint.members, "lobby") == ["ann", "bob"]
        assert anyio.run(endpoint.members, "lobby") == []


class Crashing(RoomEndpoint):
    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if data == "crash":
            raise RuntimeError("handler bug")
        await super().on_receive(websocket, data)


@pytest.mark.parametrize(
    ("send", "close"),
    [
        ("leave", None),
        ("crash", (CloseCode.INTERNAL_ERROR, "internal error")),
        ("x" * (64 * 1024 + 1), (CloseCode.MESSAGE_TOO_BIG, "message too big")),
        ("flood", (CloseCode.POLICY_VIOLATION, "rate limit exceeded")),
    ],
)
def test_every_disconnect_leaves_the_room_exactly_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, send: str, close: tuple[int, str] | None
) -> None:
    endpoint = Crashing.configure(broker=MemoryBroker(), rate_limit=(1, 60))
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            assert receive_text(ann) == "bob joined the chat"
            if send == "flood":
                bob.send_text("one")
                assert receive_text(ann) == "bob: one"
            if send != "leave":
                bob.send_text(send)
                assert expect_close(bob) == close
        assert receive_text(ann) == "bob left the chat"
        assert_no_message(ann)
        assert anyio.run(endpoint.members, "lobby") == ["ann"]
    assert endpoint.broker.rooms() == []  # type: ignore[attr-defined]


def test_leave_notice_failure_is_logged_not_raised(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker()
    client = client_factory(room_app(RoomEndpoint.configure(broker=broker)))
    with client.websocket_connect("/rooms/lobby/ann"):
        anyio.run(broker.aclose)
    assert "could not tell room 'rooms/lobby' that 'ann' left" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_writer_error_closes_1011(client_factory: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    class BadSend(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            async def send_event(event: Any) -> None:
                raise RuntimeError("send bug")

            websocket.data_send = send_event  # type: ignore[attr-defined]  # before the join starts the writer
            await super().on_connect(websocket)

    endpoint = BadSend.configure(broker=MemoryBroker(), join_template=None)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        anyio.run(endpoint.broadcast, "lobby", "boom")
        assert expect_close(ann) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert "send bug" in caplog.text
    assert anyio.run(endpoint.members, "lobby") == []


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_dropped_counts_what_the_drop_policies_dropped(
    client_factory: ClientFactory, policy: Literal["drop_oldest", "drop_newest"]
) -> None:
    """A member whose writer is stuck on its first send: a queue of 2 keeps 2 of the next 6, drops 4."""
    dropped: list[int] = []

    class Stuck(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            sent = anyio.Event()

            async def send_event(event: Any) -> None:
                sent.set()
                await anyio.sleep_forever()  # the client never takes the first message

            websocket.data_send = send_event  # type: ignore[attr-defined]  # before the join starts the writer
            self.stuck = sent
            await super().on_connect(websocket)

        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            with anyio.fail_after(5):
                await self.stuck.wait()  # the writer holds the first message
            for n in range(6):
                assert self.member is not None
                self.member.push(f"m{n}")
            dropped.append(self.dropped)

    endpoint = Stuck.configure(
        broker=MemoryBroker(), join_template=None, max_queue=2, slow_consumer=policy, send_timeout=60
    )
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        anyio.run(endpoint.broadcast, "lobby", "first")
        ann.send_text("go")
        assert_no_message(ann)  # the writer is still stuck on "first"
    assert dropped == [4]


def test_new_test_client_works_after_closing_room_clients() -> None:
    endpoint = fresh(join_template=None)
    for _ in range(2):
        with TestClient(room_app(endpoint)) as client, client.websocket_connect("/rooms/lobby/ann") as ann:
            anyio.run(endpoint.broadcast, "lobby", "again")
            assert receive_text(ann) == "again"


def test_room_max_connections_closes_1013(client_factory: ClientFactory) -> None:
    client = client_factory(room_app(fresh(max_connections=1)))
    with client.websocket_connect("/rooms/lobby/ann"), client.websocket_connect("/rooms/lobby/bob") as bob:
        assert expect_close(bob) == (CloseCode.TRY_AGAIN_LATER, "too many connections")


def test_stalled_member_is_closed_1013_by_the_endpoint() -> None:
    """A member whose socket stops taking data is closed once its queue overflows."""
    endpoint = fresh(max_queue=2, join_template=None)
    sent: list[Message] = []
    connected, sending = threading.Event(), threading.Event()

    async def scenario() -> None:
        stall = anyio.Event()

        async def receive() -> Message:
            if not sent:
                return {"type": "websocket.connect"}
            await anyio.sleep_forever()
            raise AssertionError  # pragma: no cover - sleep_forever never returns

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "websocket.accept":
                connected.set()
            elif message["type"] == "websocket.send":
                sending.set()
                await stall.wait()  # the peer stopped reading

        scope: dict[str, Any] = {"type": "websocket", "path": "/rooms/lobby/ann", "headers": [], "query_string": b""}
        scope["path_params"] = {"room": "lobby", "user": "ann"}
        with anyio.fail_after(5):
            await endpoint(scope, receive, send)

    thread = threading.Thread(target=anyio.run, args=(scenario,))
    thread.start()
    assert connected.wait(5)
    anyio.run(endpoint.broadcast, "lobby", "m0")
    assert sending.wait(5)  # the writer is stuck sending m0
    for n in range(1, 5):  # m2 puts the member behind; m3 waits until it is judged slow, then overflows it
        anyio.run(endpoint.broadcast, "lobby", f"m{n}")
    thread.join(10)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}
    assert anyio.run(endpoint.members, "lobby") == []


class Unreachable(MemoryBroker):
    """A broker whose backend is down."""

    async def enter(self, room: str, member: str, user: str, **options: Any) -> Entry:
        raise BrokerUnavailableError("cannot reach the backend")


def test_room_join_while_the_broker_is_unreachable_closes_1013(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Unreachable()
    client = client_factory(room_app(RoomEndpoint.configure(broker=broker)))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        assert expect_close(ann) == (CloseCode.TRY_AGAIN_LATER, "try again later")
    assert broker.rooms() == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_ended_connection_leaves_no_reference_cycle(client_factory: ClientFactory) -> None:
    """A connection's endpoint (and its member, socket and inbox) is freed when it ends, without a full collection."""
    refs: list[weakref.ref[RoomEndpoint]] = []

    class Tracked(RoomEndpoint):
        def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
            super().__init__(scope, receive, send)
            refs.append(weakref.ref(self))

    endpoint = Tracked.configure(broker=MemoryBroker(), join_template=None, leave_template=None)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ws:  # warm up: first-use caches
        ws.send_text("hi")
    gc.collect()
    refs.clear()
    gc.disable()
    try:
        for _ in range(3):
            with client.websocket_connect("/rooms/lobby/ann") as ws:
                ws.send_text("hi")
            assert anyio.run(endpoint.members, "lobby") == []  # it has left
        assert [ref() for ref in refs] == [None, None, None]
    finally:
        gc.enable()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stalled_writers_close_goes_out_when_the_handler_ends_first(backend: str) -> None:
    """The close begins, so the connection counts as ended and the handler returns: the close frame still goes."""

    class Flooded(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            assert self.member is not None
            for n in range(5):  # over its queue of 2 before its writer ran
                self.member.push(f"m{n}")
            await anyio.sleep(0.01)  # the writer starts its close and waits for the server to take it

    endpoint = Flooded.configure(broker=MemoryBroker(), join_template=None, leave_template=None, max_queue=2)
    app = room_app(endpoint)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}  # asked once: the connection ends in the join

    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            await anyio.sleep(0.05)  # a server that takes a while over the close frame
        sent.append(message)

    async def connect() -> None:
        scope = {"type": "websocket", "path": "/rooms/lobby/ann", "headers": [], "query_string": b""}
        with anyio.fail_after(5):
            await app(scope, receive, send)

    anyio.run(connect, backend=backend)
    assert sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "slow consumer"}


_connection_id: contextvars.ContextVar[str] = contextvars.ContextVar("connection_id", default="-")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_members_writer_runs_in_its_own_connections_context(backend: str) -> None:
    """A context variable set for a connection (a correlation id, a trace) is its writer's, whoever sent first."""
    room = RoomEndpoint.configure(broker=MemoryBroker(), join_template=None, leave_template=None)
    seen: list[tuple[str, str, str]] = []  # (connection, text, the context variable where it was sent)
    delivered = anyio.Event()

    async def connection(user: str, incoming: anyio.abc.ObjectReceiveStream[Message], joined: anyio.Event) -> None:
        _connection_id.set(user)
        first = True

        async def receive() -> Message:
            nonlocal first
            if first:
                first = False
                return {"type": "websocket.connect"}
            with anyio.fail_after(5):
                return await incoming.receive()

        async def send(message: Message) -> None:
            if message["type"] == "websocket.send":
                seen.append((user, message["text"], _connection_id.get()))
                delivered.set()
            else:  # the accept: the clients leave first, so no close is sent
                joined.set()

        path_params = {"room": "lobby", "user": user}
        scope: Scope = {"type": "websocket", "path": f"/rooms/lobby/{user}", "headers": [], "query_string": b""}
        scope["path_params"] = path_params
        await room(scope, receive, send)

    async def scenario() -> None:
        to_ann, ann_in = anyio.create_memory_object_stream[Message](10)
        to_bob, bob_in = anyio.create_memory_object_stream[Message](10)
        ann_joined, bob_joined = anyio.Event(), anyio.Event()
        with anyio.fail_after(5):
            async with to_ann, ann_in, to_bob, bob_in, anyio.create_task_group() as tasks:
                tasks.start_soon(connection, "ann", ann_in, ann_joined)
                tasks.start_soon(connection, "bob", bob_in, bob_joined)
                await ann_joined.wait()
                await bob_joined.wait()
                await to_bob.send({"type": "websocket.receive", "text": "hello"})  # bob's task starts ann's writer
                await delivered.wait()
                for stream in (to_ann, to_bob):
                    await stream.send({"type": "websocket.disconnect", "code": 1000})

    anyio.run(scenario, backend=backend)
    assert seen == [("ann", "bob: hello", "ann")]
