"""Where identity meets resume: direct messages, kicks and presence per name around a reconnect."""

from __future__ import annotations

from tests.conftest import ClientFactory
from tests.endpoints.test_room_identity import app_of, fresh, run
from tests.envelopes import unid
from wsendpoints import CloseCode
from wsendpoints.testing import assert_no_message, expect_close, receive_json


def test_room_direct_messages_have_no_id_and_are_never_replayed(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/alice") as alice:
        receive_json(alice)
        run(endpoint.broadcast, "lobby", "seen")
        last = receive_json(alice)["id"]
        run(endpoint.send_to, "lobby", "alice", "psst")
        assert receive_json(alice) == {"type": "direct", "room": "lobby", "text": "psst"}  # no id to resume from
    run(endpoint.send_to, "lobby", "alice", "while away")
    run(endpoint.broadcast, "lobby", "news")
    with client.websocket_connect(f"/rooms/lobby/alice?since={last}") as alice:
        assert receive_json(alice)["type"] == "presence"
        assert receive_json(alice) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 1}
        assert unid(receive_json(alice)) == {"type": "message", "room": "lobby", "user": None, "text": "news"}
        assert_no_message(alice)
    history = run(endpoint.history, "lobby")
    assert [
        envelope.get("text") for envelope in history if envelope["type"] != "join" and envelope["type"] != "leave"
    ] == [
        "seen",
        "news",
    ]


def test_room_a_kick_is_not_replayed_to_the_kicked_user(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/bob") as bob:
        receive_json(bob)
        run(endpoint.broadcast, "lobby", "seen")
        last = receive_json(bob)["id"]
        with client.websocket_connect("/rooms/lobby/alice") as alice:
            receive_json(alice)
            assert receive_json(bob)["type"] == "join"
            run(endpoint.kick, "lobby", "alice", reason="go away")
            assert expect_close(alice) == (CloseCode.POLICY_VIOLATION, "go away")
            assert receive_json(bob)["type"] == "leave"
    with client.websocket_connect(f"/rooms/lobby/alice?since={last}") as alice:
        assert receive_json(alice)["type"] == "presence"
        assert receive_json(alice)["missed"] == 1  # bob's leave: its own join and leave are not replayed
        assert unid(receive_json(alice)) == {"type": "leave", "room": "lobby", "user": "bob"}
        assert_no_message(alice)


def test_room_a_second_tab_resumes_without_announcing_its_name(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(app_of(endpoint))
    with client.websocket_connect("/rooms/lobby/alice") as tab_one:
        receive_json(tab_one)
        with client.websocket_connect("/rooms/lobby/alice") as tab_two:
            receive_json(tab_two)
            run(endpoint.broadcast, "lobby", "seen")
            last = receive_json(tab_two)["id"]
            assert receive_json(tab_one)["text"] == "seen"
        run(endpoint.broadcast, "lobby", "missed")
        assert receive_json(tab_one)["text"] == "missed"
        with client.websocket_connect(f"/rooms/lobby/alice?since={last}") as tab_two:
            assert receive_json(tab_two) == {"type": "presence", "room": "lobby", "users": ["alice"]}
            assert receive_json(tab_two) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 1}
            assert receive_json(tab_two)["text"] == "missed"
            assert_no_message(tab_two)
        assert_no_message(tab_one)  # alice never left, so no notice either way
