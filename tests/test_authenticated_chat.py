"""`examples/authenticated_chat.py`: names from the session, a private room, moderator routes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from starlette.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from examples import authenticated_chat
from tests.envelopes import unid
from wsendpoints import CloseCode
from wsendpoints.testing import assert_no_message, expect_close, receive_json


@pytest.fixture
def log_in() -> Iterator[ExitStack]:
    """Yield a stack on which `logged_in(stack, name)` makes a client logged in as `name`."""
    with ExitStack() as stack:
        yield stack


def logged_in(stack: ExitStack, name: str | None) -> TestClient:
    """A client of the example (a cookie jar of its own), logged in as `name` unless None."""
    client = stack.enter_context(TestClient(authenticated_chat.app))
    if name is not None:
        response = client.post("/login", data={"user": name}, follow_redirects=False)
        assert response.status_code == 303
    return client


def new_room() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


def test_authenticated_chat_takes_the_name_from_the_session(log_in: ExitStack) -> None:
    room = new_room()
    bob, carol = logged_in(log_in, "bob"), logged_in(log_in, "carol")
    with bob.websocket_connect(f"/rooms/{room}?user=alice") as bob_ws:
        assert receive_json(bob_ws) == {"type": "presence", "room": room, "users": ["bob"]}
        with carol.websocket_connect(f"/rooms/{room}") as carol_ws:
            assert receive_json(carol_ws)["users"] == ["bob", "carol"]
            assert unid(receive_json(bob_ws)) == {"type": "join", "room": room, "user": "carol"}
            carol_ws.send_json({"text": "hi"})
            assert unid(receive_json(bob_ws)) == {"type": "message", "room": room, "user": "carol", "text": "hi"}


def test_authenticated_chat_closes_without_a_log_in(log_in: ExitStack) -> None:
    stranger = logged_in(log_in, None)
    with stranger.websocket_connect(f"/rooms/{new_room()}") as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "not authenticated")
    assert stranger.post("/login", data={"user": "mallory"}).status_code == 403
    forged = logged_in(log_in, None)
    forged.cookies.set("session", "eyJ1c2VyIjogIm1vZCJ9.forged.signature")
    with forged.websocket_connect(f"/rooms/{new_room()}") as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "not authenticated")


def test_authenticated_chat_keeps_the_staff_room_private(log_in: ExitStack) -> None:
    bob, alice = logged_in(log_in, "bob"), logged_in(log_in, "alice")
    with alice.websocket_connect("/rooms/staff") as alice_ws:
        assert receive_json(alice_ws)["type"] == "presence"
        with bob.websocket_connect("/rooms/staff") as bob_ws:
            assert expect_close(bob_ws) == (CloseCode.POLICY_VIOLATION, "not allowed in this room")
        assert_no_message(alice_ws)


def test_authenticated_chat_moderator_sends_to_one_user_and_kicks(log_in: ExitStack) -> None:
    room = new_room()
    mod, alice, bob = logged_in(log_in, "mod"), logged_in(log_in, "alice"), logged_in(log_in, "bob")
    with alice.websocket_connect(f"/rooms/{room}") as alice_ws, bob.websocket_connect(f"/rooms/{room}") as bob_ws:
        assert receive_json(alice_ws)["type"] == "presence"
        assert unid(receive_json(alice_ws)) == {"type": "join", "room": room, "user": "bob"}
        assert receive_json(bob_ws)["users"] == ["alice", "bob"]
        assert mod.post(f"/rooms/{room}/send/alice", content="your export is ready").status_code == 202
        assert receive_json(alice_ws) == {"type": "direct", "room": room, "text": "your export is ready"}
        assert mod.post(f"/rooms/{room}/kick/alice").status_code == 202
        assert expect_close(alice_ws) == (CloseCode.POLICY_VIOLATION, "removed by a moderator")
        assert unid(receive_json(bob_ws)) == {"type": "leave", "room": room, "user": "alice"}
        assert_no_message(bob_ws)
    assert mod.post("/rooms/bad room/send/alice", content="x").status_code == 400
    assert mod.post("/rooms/lobby/kick/a b").status_code == 400


@pytest.mark.parametrize("who", [None, "bob"])
def test_authenticated_chat_moderator_routes_refuse_everyone_else(log_in: ExitStack, who: str | None) -> None:
    room = new_room()
    client, alice = logged_in(log_in, who), logged_in(log_in, "alice")
    with alice.websocket_connect(f"/rooms/{room}") as alice_ws:
        assert receive_json(alice_ws)["type"] == "presence"
        assert client.post(f"/rooms/{room}/send/alice", content="psst").status_code == 403
        assert client.post(f"/rooms/{room}/kick/alice").status_code == 403
        assert_no_message(alice_ws)


def test_authenticated_chat_page_logs_in_and_out(log_in: ExitStack) -> None:
    client = logged_in(log_in, None)
    assert 'data-user=""' in client.get("/").text
    client.post("/login", data={"user": "carol"})
    assert 'data-user="carol"' in client.get("/").text
    assert client.post("/logout", follow_redirects=False).status_code == 303
    assert 'data-user=""' in client.get("/").text


# Under uvicorn, with a real `websockets` client: the close codes as a browser sees them.


@pytest.mark.server
@pytest.mark.anyio
async def test_authenticated_chat_under_uvicorn_closes_strangers_and_kicked_users_with_a_reason(
    serve: Callable[..., str], log_in: ExitStack
) -> None:
    url = serve(authenticated_chat.app)
    room = new_room()
    with pytest.raises(ConnectionClosed) as refused:
        async with connect(f"{url}/rooms/{room}") as stranger:
            await asyncio.wait_for(stranger.recv(), 5)
    received = refused.value.rcvd
    assert received is not None
    assert (received.code, received.reason) == (CloseCode.POLICY_VIOLATION, "not authenticated")
    cookie = logged_in(log_in, "alice").cookies["session"]
    async with connect(f"{url}/rooms/{room}", additional_headers={"Cookie": f"session={cookie}"}) as alice:
        assert json.loads(await asyncio.wait_for(alice.recv(), 5))["users"] == ["alice"]
        assert await authenticated_chat.Chat.kick(room, "alice", reason="removed by a moderator") == 1
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(alice.recv(), 5)
        assert (alice.close_code, alice.close_reason) == (CloseCode.POLICY_VIOLATION, "removed by a moderator")
