"""Rooms that tell the truth: one form per name, checked broadcasts, churn limits, no control characters."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.conftest import ClientFactory
from wsendpoints import CloseCode, MemoryBroker, RoomEndpoint
from wsendpoints.testing import (
    assert_no_message,
    assert_no_message_each,
    expect_close,
    receive_json,
    receive_text,
    receive_text_each,
)

ASCII_NAMES = r"[A-Za-z0-9_.-]{1,64}"
WIDE_ADMIN = "\uff41\uff44\uff4d\uff49\uff4e"
"""`admin` in full-width letters."""
WIDE_LOBBY = "\uff4c\uff4f\uff42\uff42\uff59"
CYRILLIC_ADMIN = "\u0430dmin"
"""`admin` with a Cyrillic `a`: NFKC keeps it apart."""


def say_app(endpoint: type[RoomEndpoint]) -> Starlette:
    """The room, and POST /say broadcasting the JSON body's "text" to its "room": 400 with the error when refused."""

    async def say(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            await endpoint.broadcast(body["room"], body["text"])
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
        return JSONResponse(await endpoint.members(body["room"]))

    return Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", endpoint), Route("/say", say, methods=["POST"])])


def fresh(**options: Any) -> type[RoomEndpoint]:
    return RoomEndpoint.configure(broker=MemoryBroker(), **options)


def path(room: str, user: str) -> str:
    return f"/rooms/{quote(room)}/{quote(user)}"


# Names: NFKC


def test_full_width_names_are_their_ascii_form(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(say_app(endpoint))
    with (
        client.websocket_connect(path("lobby", "ann")) as ann,
        client.websocket_connect(path(WIDE_LOBBY, WIDE_ADMIN)),
    ):
        assert receive_text(ann) == "admin joined the chat"
        assert anyio.run(endpoint.members, "lobby") == ["admin", "ann"]
        assert anyio.run(endpoint.members, WIDE_LOBBY) == ["admin", "ann"]


def test_cyrillic_lookalike_is_another_user_with_the_default_pattern(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(say_app(endpoint))
    with (
        client.websocket_connect(path("lobby", "admin")) as admin,
        client.websocket_connect(path("lobby", CYRILLIC_ADMIN)),
    ):
        assert receive_text(admin) == f"{CYRILLIC_ADMIN} joined the chat"
        assert anyio.run(endpoint.members, "lobby") == ["admin", CYRILLIC_ADMIN]


def test_ascii_name_pattern_refuses_lookalikes_and_keeps_full_width(client_factory: ClientFactory) -> None:
    endpoint = fresh(name_pattern=ASCII_NAMES)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "admin")) as admin:
        with client.websocket_connect(path("lobby", CYRILLIC_ADMIN)) as lookalike:
            assert expect_close(lookalike) == (CloseCode.POLICY_VIOLATION, "invalid user name")
        with client.websocket_connect(path("lobby", WIDE_ADMIN)) as wide:
            wide.send_text("hi")
            assert receive_text(admin) == "admin: hi"  # the same name: a second connection, not announced
            assert anyio.run(endpoint.members, "lobby") == ["admin"]
        assert_no_message(admin)


# broadcast() checks before anything reaches a member


BAD_BROADCASTS = [
    ("lobby", "\ud800", ValueError, "text cannot be encoded as UTF-8: surrogates not allowed at index 0"),
    ("lobby", "x" * 1025, ValueError, "text is 1025 bytes in UTF-8, over max_message_size 1024"),
    ("lobby", "é" * 513, ValueError, "text is 1026 bytes in UTF-8, over max_message_size 1024"),
    ("lobby", 5, TypeError, "text must be a str, got int"),
    ("lobby", None, TypeError, "text must be a str, got NoneType"),
    ("lobby", b"hi", TypeError, "text must be a str, got bytes"),
    ("a b", "hi", ValueError, "room name 'a b' does not match name_pattern"),
    ("", "hi", ValueError, "room name '' does not match name_pattern"),
    (None, "hi", TypeError, "room must be a str, got NoneType"),
]


@pytest.mark.parametrize("mode", ["text", "json"])
@pytest.mark.parametrize(("room", "text", "error", "message"), BAD_BROADCASTS)
def test_bad_broadcast_raises_and_leaves_the_room_untouched(
    client_factory: ClientFactory, mode: str, room: Any, text: Any, error: type[Exception], message: str
) -> None:
    endpoint = fresh(mode=mode, max_message_size=1024, join_template=None)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann, client.websocket_connect(path("lobby", "bob")) as bob:
        if mode == "json":
            receive_json(ann)
            assert [receive_json(ann), receive_json(bob)][0]["type"] == "join"
        with pytest.raises(error, match=message.replace("(", r"\(")):
            anyio.run(endpoint.broadcast, room, text)
        assert_no_message_each([ann, bob])
        anyio.run(endpoint.broadcast, "lobby", "x" * 1024)
        if mode == "json":
            assert [receive_json(ann)["text"], receive_json(bob)["text"]] == ["x" * 1024] * 2
        else:
            assert receive_text_each([ann, bob]) == ["x" * 1024] * 2
        assert anyio.run(endpoint.members, "lobby") == ["ann", "bob"]


def test_bad_broadcast_from_an_http_route_is_a_400(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        response = client.post("/say", content=b'{"room": "lobby", "text": "\\ud800"}')
        assert response.status_code == 400
        assert response.json()["error"].startswith("ValueError: text cannot be encoded as UTF-8")
        assert client.post("/say", json={"room": "lobby", "text": "fine"}).json() == ["ann"]
        assert receive_text(ann) == "fine"


def test_broadcast_normalizes_the_room_name(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        anyio.run(endpoint.broadcast, WIDE_LOBBY, "to the lobby")
        assert receive_text(ann) == "to the lobby"


def test_broadcast_without_a_size_limit_takes_any_length(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None, max_message_size=None)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        anyio.run(endpoint.broadcast, "lobby", "x" * 70_000)
        assert receive_text(ann) == "x" * 70_000


# Churn: join_rate_limit and presence_notices


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"join_rate_limit": (0, 1)}, ValueError, r"join_rate_limit\[0\] must be at least 1"),
        ({"join_rate_limit": 5}, TypeError, "join_rate_limit must be None or a pair"),
        ({"presence_notices": 1}, TypeError, "presence_notices must be True or False, got 1"),
        ({"keep_controls": None}, TypeError, "keep_controls must be True or False, got None"),
    ],
)
def test_integrity_options_are_checked(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RoomEndpoint.configure(**options)


def test_integrity_defaults() -> None:
    assert (RoomEndpoint.join_rate_limit, RoomEndpoint.presence_notices, RoomEndpoint.keep_controls) == (
        None,
        True,
        False,
    )


def test_join_rate_limit_closes_1008_past_the_limit_per_address(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_rate_limit=(2, 60))
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        with client.websocket_connect(path("lobby", "bob")):
            assert receive_text(ann) == "bob joined the chat"
        assert receive_text(ann) == "bob left the chat"
        for user in ("cleo", "not!valid"):  # counted before the names are read
            with client.websocket_connect(path("lobby", user)) as late:
                assert expect_close(late) == (CloseCode.POLICY_VIOLATION, "too many connections")
        assert_no_message(ann)
        assert anyio.run(endpoint.members, "lobby") == ["ann"]
        ann.send_text("still here")


class ByHeader(RoomEndpoint):
    """Behind a proxy: the client's address comes from a header the proxy sets."""

    def client_key(self, websocket: WebSocket) -> str | None:
        return websocket.headers.get("x-real-ip")


def test_client_key_hook_decides_who_is_counted(client_factory: ClientFactory) -> None:
    endpoint = ByHeader.configure(broker=MemoryBroker(), join_rate_limit=(1, 60), join_template=None)
    client = client_factory(say_app(endpoint))
    with (
        client.websocket_connect(path("lobby", "ann"), headers={"x-real-ip": "192.0.2.1"}) as ann,
        client.websocket_connect(path("lobby", "bob"), headers={"x-real-ip": "192.0.2.2"}) as bob,
        client.websocket_connect(path("lobby", "no-key")) as unkeyed,
        client.websocket_connect(path("lobby", "no-key2")),
    ):
        with client.websocket_connect(path("lobby", "ann2"), headers={"x-real-ip": "192.0.2.1"}) as again:
            assert expect_close(again) == (CloseCode.POLICY_VIOLATION, "too many connections")
        anyio.run(endpoint.broadcast, "lobby", "all here")
        assert receive_text_each([ann, bob, unkeyed]) == ["all here"] * 3


def test_client_key_is_the_address_and_none_without_one() -> None:
    endpoint = fresh()
    scope: dict[str, Any] = {"type": "websocket", "headers": [], "client": ("192.0.2.7", 4000)}
    instance = endpoint(scope, None, None)  # type: ignore[arg-type]
    assert instance.client_key(WebSocket(scope, None, None)) == "192.0.2.7"  # type: ignore[arg-type]
    scope["client"] = None
    assert instance.client_key(WebSocket(scope, None, None)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["text", "json"])
def test_presence_notices_off_sends_no_join_or_leave(client_factory: ClientFactory, mode: str) -> None:
    endpoint = fresh(mode=mode, presence_notices=False)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        if mode == "json":
            assert receive_json(ann) == {"type": "presence", "room": "lobby", "users": ["ann"]}
        for _ in range(3):
            with client.websocket_connect(path("lobby", "bob")) as bob:
                if mode == "json":
                    assert receive_json(bob)["users"] == ["ann", "bob"]
        anyio.run(endpoint.broadcast, "lobby", "only this")
        assert (receive_json(ann)["text"] if mode == "json" else receive_text(ann)) == "only this"
        assert_no_message(ann)


# Control characters in text mode


def test_text_mode_replaces_controls_so_one_message_is_one_line(client_factory: ClientFactory) -> None:
    client = client_factory(say_app(fresh(join_template=None, echo_template="me: {text}")))
    with client.websocket_connect(path("lobby", "ann")) as ann, client.websocket_connect(path("lobby", "mallory")) as m:
        m.send_text("hi\nbob: I agree\r\x1b[2J\x85\x00\x7f\x9f\tend")
        expected = "hi\ufffdbob: I agree\ufffd\ufffd[2J\ufffd\ufffd\ufffd\ufffd\tend"
        assert receive_text(ann) == f"mallory: {expected}"
        assert receive_text(m) == f"me: {expected}"


def test_keep_controls_passes_them_through(client_factory: ClientFactory) -> None:
    client = client_factory(say_app(fresh(join_template=None, keep_controls=True)))
    with client.websocket_connect(path("lobby", "ann")) as ann, client.websocket_connect(path("lobby", "bob")) as bob:
        bob.send_text("a\nb\x1b[2J\x85")
        assert receive_text(ann) == "bob: a\nb\x1b[2J\x85"


def test_broadcast_text_keeps_its_controls(client_factory: ClientFactory) -> None:
    endpoint = fresh(join_template=None)
    client = client_factory(say_app(endpoint))
    with client.websocket_connect(path("lobby", "ann")) as ann:
        anyio.run(endpoint.broadcast, "lobby", "line one\nline two\x1b[1m")
        assert receive_text(ann) == "line one\nline two\x1b[1m"


def test_json_mode_text_is_left_to_the_client(client_factory: ClientFactory) -> None:
    """JSON escapes every control character; the page shows text with textContent."""
    client = client_factory(say_app(fresh(mode="json")))
    with client.websocket_connect(path("lobby", "ann")) as ann, client.websocket_connect(path("lobby", "bob")) as bob:
        receive_json(ann), receive_json(ann), receive_json(bob)
        bob.send_json({"text": "a\nb"})
        assert receive_json(ann)["text"] == "a\nb"
