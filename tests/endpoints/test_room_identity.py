"""Who is who in a room: presence per name, authenticated users, `authorize`, `send_to` and `kick`."""

from __future__ import annotations

import logging
from typing import Any, cast

import anyio
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.conftest import ClientFactory
from tests.envelopes import unid
from wsendpoints import CloseCode, MemoryBroker, RoomEndpoint
from wsendpoints.testing import (
    assert_no_message,
    assert_no_message_each,
    expect_close,
    receive_json,
    receive_text,
    receive_text_each,
)

TOKENS = {"t-alice": "alice", "t-alicia": "alicia", "t-bob": "bob"}


class TokenBackend(AuthenticationBackend):
    """Users by a token in the query string, as an app's own backend would look them up."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = TOKENS.get(conn.query_params.get("token", ""))
        return None if name is None else (AuthCredentials(["authenticated"]), SimpleUser(name))


def fresh(**options: Any) -> type[RoomEndpoint]:
    return RoomEndpoint.configure(broker=MemoryBroker(), **options)


def app_of(endpoint: type[RoomEndpoint], *, auth: bool = False, path: str = "/rooms/{room}/{user}") -> Starlette:
    middleware = [Middleware(AuthenticationMiddleware, backend=TokenBackend())] if auth else []
    return Starlette(routes=[WebSocketRoute(path, endpoint)], middleware=middleware)


def run(function: Any, *args: Any, **kwargs: Any) -> Any:
    async def call() -> Any:
        return await function(*args, **kwargs)

    return anyio.run(call)


# Presence per name


def test_room_announces_a_name_once_however_many_connections_it_has(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/bob") as bob:
        with client.websocket_connect("/rooms/lobby/alice"):
            assert receive_text(bob) == "alice joined the chat"
            with client.websocket_connect("/rooms/lobby/alice") as second:
                second.send_text("from the second tab")
                assert receive_text(bob) == "alice: from the second tab"  # and no second join notice before it
            assert run(endpoint.members, "lobby") == ["alice", "bob"]
            assert_no_message(bob)  # one tab left: alice is still there
        assert receive_text(bob) == "alice left the chat"
        assert_no_message(bob)
        assert run(endpoint.members, "lobby") == ["bob"]


def test_room_json_presence_lists_a_name_once(client_factory: ClientFactory) -> None:
    client = client_factory(app_of(fresh(mode="json")))
    with client.websocket_connect("/rooms/lobby/alice") as one, client.websocket_connect("/rooms/lobby/alice") as two:
        assert receive_json(one) == {"type": "presence", "room": "lobby", "users": ["alice"]}
        assert receive_json(two) == {"type": "presence", "room": "lobby", "users": ["alice"]}
        assert_no_message_each([one, two])  # the second tab is not announced, to the first or to itself
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            assert receive_json(bob) == {"type": "presence", "room": "lobby", "users": ["alice", "bob"]}
            joined = {"type": "join", "room": "lobby", "user": "bob"}
            assert [unid(receive_json(one)), unid(receive_json(two))] == [joined, joined]
            assert_no_message(bob)  # alice joined before it: its snapshot says so, no notice does


def test_room_unique_names_refuses_a_second_connection_of_a_name(client_factory: ClientFactory) -> None:
    endpoint = fresh(unique_names=True)
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/bob") as bob, client.websocket_connect("/rooms/lobby/alice") as alice:
        assert receive_text(bob) == "alice joined the chat"
        with client.websocket_connect("/rooms/lobby/alice") as impostor:
            assert expect_close(impostor) == (CloseCode.POLICY_VIOLATION, "name taken")
        assert_no_message(bob)
        alice.send_text("still here")
        assert receive_text(bob) == "alice: still here"
        assert run(endpoint.members, "lobby") == ["alice", "bob"]
        with client.websocket_connect("/rooms/other/alice") as elsewhere:  # one name per room, not per server
            elsewhere.send_text("hi")
            assert_no_message(elsewhere)


# require_auth


def test_room_require_auth_takes_names_from_the_backend_not_the_url(client_factory: ClientFactory) -> None:
    endpoint = fresh(require_auth=True, mode="json")
    client = client_factory(app_of(endpoint, auth=True))
    with client.websocket_connect("/rooms/lobby/admin?token=t-alice&user=admin") as alice:
        assert receive_json(alice) == {"type": "presence", "room": "lobby", "users": ["alice"]}
        with client.websocket_connect("/rooms/lobby/alice?token=t-bob") as bob:
            assert receive_json(bob)["users"] == ["alice", "bob"]
            assert unid(receive_json(alice)) == {"type": "join", "room": "lobby", "user": "bob"}
            bob.send_json({"text": "it is me"})
            assert unid(receive_json(alice)) == {"type": "message", "room": "lobby", "user": "bob", "text": "it is me"}
    assert run(endpoint.members, "lobby") == []


def test_room_require_auth_works_with_the_room_alone_in_the_path(client_factory: ClientFactory) -> None:
    client = client_factory(app_of(fresh(require_auth=True), auth=True, path="/rooms/{room}"))
    with (
        client.websocket_connect("/rooms/lobby?token=t-bob") as bob,
        client.websocket_connect("/rooms/lobby?token=t-alicia"),
    ):
        assert receive_text(bob) == "alicia joined the chat"


@pytest.mark.parametrize("query", ["", "?token=forged", "?user=alice"])
def test_room_require_auth_closes_the_unauthenticated_1008(client_factory: ClientFactory, query: str) -> None:
    endpoint = fresh(require_auth=True)
    client = client_factory(app_of(endpoint, auth=True, path="/rooms/{room}"))
    with client.websocket_connect("/rooms/lobby?token=t-bob") as bob:
        with client.websocket_connect(f"/rooms/lobby{query}") as stranger:
            assert expect_close(stranger) == (CloseCode.POLICY_VIOLATION, "not authenticated")
        assert_no_message(bob)
        assert run(endpoint.members, "lobby") == ["bob"]


def test_room_require_auth_without_the_middleware_refuses_all_and_warns_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = fresh(require_auth=True)
    client = client_factory(app_of(endpoint))
    for _ in range(3):
        with client.websocket_connect("/rooms/lobby/alice") as ws:
            assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "not authenticated")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "require_auth=True but no AuthenticationMiddleware" in warnings[0]
    assert run(endpoint.members, "lobby") == []


def test_room_require_auth_checks_the_backend_name_against_the_pattern(client_factory: ClientFactory) -> None:
    client = client_factory(app_of(fresh(require_auth=True, name_pattern="[a-z]{1,5}"), auth=True))
    with client.websocket_connect("/rooms/lobby/x?token=t-alicia") as alicia:
        assert expect_close(alicia) == (CloseCode.POLICY_VIOLATION, "invalid user name")


# authorize


class Private(RoomEndpoint):
    """Everyone in the lobby; only alice in "private"; "broken" fails."""

    broker = MemoryBroker()
    require_auth = True

    async def authorize(self, websocket: WebSocket, room: str, user: str) -> bool:
        assert websocket.user.display_name == user
        if room == "broken":
            raise RuntimeError("the permission service is down")
        return room != "private" or user == "alice"


def test_room_authorize_false_closes_1008_and_leaves_no_trace(client_factory: ClientFactory) -> None:
    client = client_factory(app_of(Private, auth=True))
    with client.websocket_connect("/rooms/private/x?token=t-alice") as alice:
        alice.send_text("anyone?")
        with client.websocket_connect("/rooms/private/x?token=t-bob") as bob:
            assert expect_close(bob) == (CloseCode.POLICY_VIOLATION, "not allowed in this room")
        with client.websocket_connect("/rooms/lobby/x?token=t-bob") as bob:
            bob.send_text("hello lobby")
            assert_no_message(bob)
        assert_no_message(alice)  # neither joined nor left, as far as the private room knows
        assert run(Private.members, "private") == ["alice"]


def test_room_authorize_that_raises_closes_1011(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_factory(app_of(Private, auth=True))
    with client.websocket_connect("/rooms/broken/x?token=t-alice") as alice:
        assert expect_close(alice) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert "the permission service is down" in caplog.text
    assert run(Private.members, "broken") == []


# send_to


def test_room_send_to_reaches_all_and_only_the_connections_of_one_user(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(app_of(endpoint))
    with (
        client.websocket_connect("/rooms/lobby/alice") as tab_one,
        client.websocket_connect("/rooms/lobby/alice") as tab_two,
        client.websocket_connect("/rooms/lobby/alicia") as alicia,
        client.websocket_connect("/rooms/other/alice") as elsewhere,
        client.websocket_connect("/rooms/lobby/bob") as bob,
    ):
        assert receive_text_each([tab_one, tab_two, tab_one, tab_two, alicia]) == [
            "alicia joined the chat",
            "alicia joined the chat",
            "bob joined the chat",
            "bob joined the chat",
            "bob joined the chat",
        ]
        assert run(endpoint.send_to, "lobby", "alice", "your export is ready") == 2
        assert receive_text_each([tab_one, tab_two]) == ["your export is ready"] * 2
        assert_no_message_each([alicia, elsewhere, bob])
        assert run(endpoint.send_to, "lobby", "nobody", "hello?") == 0
        assert_no_message_each([tab_one, tab_two, alicia, bob])


def test_room_send_to_in_json_mode_sends_a_direct_envelope(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/alice") as alice:
        assert receive_json(alice)["type"] == "presence"
        assert run(endpoint.send_to, "lobby", "alice", "psst") == 1
        assert receive_json(alice) == {"type": "direct", "room": "lobby", "text": "psst"}


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("lob by", "alice", "x"), ValueError, "room name 'lob by' does not match name_pattern"),
        (("lobby", "al/ice", "x"), ValueError, "user name 'al/ice' does not match name_pattern"),
        ((1, "alice", "x"), TypeError, "room must be a str, got int"),
        (("lobby", None, "x"), TypeError, "user must be a str, got NoneType"),
        (("lobby", "alice", 7), TypeError, "text must be a str, got int"),
        (("lobby", "alice", "\ud800"), ValueError, "text cannot be encoded as UTF-8"),
        (("lobby", "alice", "x" * 11), ValueError, "text is 11 bytes in UTF-8, over max_message_size 10"),
    ],
)
def test_room_send_to_checks_its_arguments(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    endpoint = fresh(max_message_size=10)
    with pytest.raises(error, match=message):
        run(endpoint.send_to, *args)


# kick


def test_room_kick_closes_every_connection_of_the_user_with_one_leave_notice(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(app_of(endpoint))
    with (
        client.websocket_connect("/rooms/lobby/bob") as bob,
        client.websocket_connect("/rooms/lobby/alice") as tab_one,
        client.websocket_connect("/rooms/lobby/alice") as tab_two,
        client.websocket_connect("/rooms/lobby/alicia") as alicia,
    ):
        assert receive_text_each([bob, bob]) == ["alice joined the chat", "alicia joined the chat"]
        assert receive_text_each([tab_one, tab_two]) == ["alicia joined the chat"] * 2
        assert run(endpoint.kick, "lobby", "alice") == 2
        assert expect_close(tab_one) == (CloseCode.POLICY_VIOLATION, "removed from the room")
        assert expect_close(tab_two) == (CloseCode.POLICY_VIOLATION, "removed from the room")
        assert receive_text_each([bob, alicia]) == ["alice left the chat"] * 2
        assert_no_message_each([bob, alicia])
        assert run(endpoint.members, "lobby") == ["alicia", "bob"]
        assert run(endpoint.kick, "lobby", "bob", 4001, "banned for a day") == 1
        run(endpoint.kick, "lobby", "bob", 4002, "and again")  # the first kick closes; this one changes nothing
        assert expect_close(bob) == (4001, "banned for a day")
        assert receive_text(alicia) == "bob left the chat"
        assert_no_message(alicia)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("lobby", "alice", 1005), ValueError, "code must be 1000, 1001, 1008, 1011, 1012, 1013 or 3000-4999"),
        (("lobby", "alice", 5000), ValueError, "got 5000"),
        (("lobby", "alice", True), TypeError, "code must be an int, got True"),
        (("lobby", "alice", 1008, b"no"), TypeError, "reason must be a str, got bytes"),
        (("lobby", "alice", 1008, "\udc00"), ValueError, "reason cannot be encoded as UTF-8"),
        (("lobby", "alice", 1008, "é" * 62), ValueError, "reason is 124 bytes in UTF-8, over the 123"),
        (("lobby!", "alice"), ValueError, "room name 'lobby!' does not match"),
    ],
)
def test_room_kick_checks_its_arguments(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        run(fresh().kick, *args)


def test_room_a_second_kick_leaves_the_first_close_standing() -> None:
    """Two kicks of one connection (two moderators at once, or one user's name kicked twice): the first close stands.

    Driven directly: through a server, whether the second kick finds the connection still in its
    room depends on timing.
    """
    started: list[tuple[Any, ...]] = []
    endpoint = RoomEndpoint({"type": "websocket"}, None, None)  # type: ignore[arg-type]  # never receives nor sends
    endpoint._websocket = cast(WebSocket, object())
    endpoint._start = lambda *args: started.append(args)
    endpoint._start_kick(4003, "first")
    endpoint._start_kick(4004, "second")
    assert endpoint._kicked_with == (4003, "first")
    assert [args[2:] for args in started] == [(4003, "first")]
