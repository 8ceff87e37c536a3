"""Message ids, history and resume on `RoomEndpoint` with `MemoryBroker`, through `TestClient` (asyncio and trio)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient, WebSocketTestSession

from tests.conftest import ClientFactory
from tests.endpoints.test_room import fresh, room_app
from tests.envelopes import unid
from wsendpoints import BrokerUnavailableError, CloseCode, MemoryBroker, Message, RoomEndpoint
from wsendpoints.brokers import Broker, Deliver, History
from wsendpoints.rooms import SlowConsumerPolicy
from wsendpoints.testing import assert_no_message, check_broker, expect_close, receive_json, receive_text


def say(endpoint: type[RoomEndpoint], *texts: str, room: str = "lobby") -> None:
    for text in texts:
        anyio.run(endpoint.broadcast, room, text)


def texts(envelopes: list[dict[str, Any]]) -> list[str]:
    return [envelope["text"] for envelope in envelopes]


def last_seen(client: TestClient, endpoint: type[RoomEndpoint]) -> str:
    """Connect ann to the lobby, have the server say "seen" there, and return its id as ann saw it."""
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        say(endpoint, "seen")
        message_id: str = receive_json(ann)["id"]
    return message_id


def receive_resume(ws: WebSocketTestSession) -> dict[str, Any]:
    """Receive the presence envelope, then return the resume envelope."""
    assert receive_json(ws)["type"] == "presence"
    resume: dict[str, Any] = receive_json(ws)
    assert resume["type"] == "resume"
    return resume


def test_room_options_for_history_are_checked() -> None:
    assert (RoomEndpoint.history_size, RoomEndpoint.history_ttl, RoomEndpoint.since_param) == (100, 300.0, "since")
    with pytest.raises(ValueError, match="history_size must be at least 0, got -1"):
        RoomEndpoint.configure(history_size=-1)
    with pytest.raises(ValueError, match="history_ttl must be positive and finite"):
        RoomEndpoint.configure(history_ttl=0)
    with pytest.raises(TypeError, match="since_param must be a str"):
        RoomEndpoint.configure(since_param=None)  # type: ignore[arg-type]


def test_room_ids_on_every_envelope_in_room_order(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    broker = endpoint.broker
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        assert "id" not in receive_json(ann)  # presence is this connection's, not the room's
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            receive_json(bob)
            bob.send_json({"text": "hi"})
            received = [receive_json(ann) for _ in range(2)]
            say(endpoint, "news")
            received.append(receive_json(ann))
        received.append(receive_json(ann))
    assert [(e["type"], e.get("text")) for e in received] == [
        ("join", None),
        ("message", "hi"),
        ("message", "news"),
        ("leave", None),
    ]
    positions = [broker.position(e["id"]) or () for e in received]
    assert () not in positions
    assert positions == sorted(positions)
    assert len(set(positions)) == 4


def test_room_text_mode_has_no_ids_and_ignores_since(client_factory: ClientFactory) -> None:
    endpoint = fresh()
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann?since=whatever") as ann:
        say(endpoint, "plain")
        assert receive_text(ann) == "plain"


def test_room_resume_after_missing_five_messages(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(endpoint, *(f"m{n}" for n in range(5)))
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 5}
        missed = [receive_json(ann) for _ in range(5)]
        assert [unid(e) for e in missed] == [
            {"type": "message", "room": "lobby", "user": None, "text": f"m{n}"} for n in range(5)
        ]
        say(endpoint, "live")
        assert receive_json(ann)["text"] == "live"
        assert_no_message(ann)


def test_room_resume_with_nothing_missed(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 0}
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]


def test_room_resume_while_another_member_keeps_sending(client_factory: ClientFactory) -> None:
    """A member on another thread sends all along; the one resuming sees every message once, in order."""
    endpoint = fresh(mode="json", history_size=1000)
    client = client_factory(room_app(endpoint))
    total = 400
    halfway = threading.Event()

    def keep_sending() -> None:
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            receive_json(bob)
            for n in range(total):
                bob.send_json({"text": f"m{n}"})
                if n == total // 4:
                    halfway.set()
            bob.send_json({"text": "done"})

    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            first = receive_json(ann)
            assert first["type"] == "join"
            seen = [receive_json(ann, timeout=5)]
            assert halfway.wait(5)
        finally:
            ann.close()
    try:
        with client.websocket_connect(f"/rooms/lobby/ann?since={seen[-1]['id']}") as ann:
            resume = receive_resume(ann)
            assert resume["recovered"] is True
            after: list[str] = []
            while not after or after[-1] != "done":
                after.append(receive_json(ann, timeout=5)["text"])
    finally:
        sender.join(10)
    assert texts(seen) + after == [f"m{n}" for n in range(total)] + ["done"]
    assert resume["missed"] >= 1


class Lagging(MemoryBroker):
    """A broker whose deliveries can be held back, as a reader behind its room's stream is."""

    def __init__(self) -> None:
        super().__init__()
        self.lagging = False
        self.pending: list[tuple[Deliver, Message]] = []
        self.during_history: list[str] = []
        self.endpoint: type[RoomEndpoint] | None = None

    @asynccontextmanager
    async def subscribe(
        self, room: str, deliver: Deliver, paused: Callable[[], bool] | None = None
    ) -> AsyncIterator[None]:
        def maybe_later(message: Message) -> None:
            if self.lagging:
                self.pending.append((deliver, message))
            else:
                deliver(message)

        async with super().subscribe(room, maybe_later, paused):
            yield

    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        assert self.endpoint is not None
        for text in self.during_history:  # published after the subscription, before the history is read
            await self.endpoint.broadcast("lobby", text)
        self.lagging = True  # published now, read in the history, delivered only later
        await self.endpoint.broadcast("lobby", "late")
        found = await super().history(room, since, limit)
        await self.endpoint.broadcast("lobby", "after")  # delivered later, not in the history
        return found

    def release(self) -> None:
        self.lagging = False
        for deliver, message in self.pending:
            deliver(message)
        self.pending.clear()


def test_room_resume_boundary_has_no_gap_and_no_duplicate(client_factory: ClientFactory) -> None:
    """Messages held during the history read, and a late delivery the history already had, come once each."""
    broker = Lagging()
    endpoint = broker.endpoint = RoomEndpoint.configure(broker=broker, mode="json")
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(endpoint, "missed")
    broker.during_history = ["held"]
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann)["missed"] == 3  # "missed", "held" and "late"
        assert texts([receive_json(ann) for _ in range(3)]) == ["missed", "held", "late"]
        broker.release()
        assert texts([receive_json(ann)]) == ["after"]
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]
        assert_no_message(ann)


@pytest.mark.parametrize(
    "since",
    ["trimmed", "foreign", "garbage", "", "0-0", "x" * 200],
)
def test_room_resume_from_an_unknown_id_is_not_recovered(client_factory: ClientFactory, since: str) -> None:
    endpoint = fresh(mode="json", history_size=3)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        say(endpoint, "first")
        first = receive_json(ann)["id"]
    say(endpoint, "a", "b", "c")  # "first" is trimmed away
    ids = {"trimmed": first, "foreign": f"{MemoryBroker()._epoch}-1", "garbage": "not an id"}
    with client.websocket_connect("/rooms/lobby/ann", params={"since": ids.get(since, since)}) as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]
        assert_no_message(ann)


def test_room_resume_is_not_recovered_when_more_was_missed_than_it_replays(client_factory: ClientFactory) -> None:
    broker = MemoryBroker()
    keeper = RoomEndpoint.configure(broker=broker, mode="json", history_size=50)
    endpoint = RoomEndpoint.configure(broker=broker, mode="json", history_size=3)
    client = client_factory(room_app(endpoint))
    last = last_seen(client, keeper)
    say(keeper, "a", "b", "c", "d")  # still kept (for `keeper`), but more than 3
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        assert_no_message(ann)


def test_room_history_off(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json", history_size=0)
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)  # ids stay: they cost nothing
    say(endpoint, "missed")
    assert isinstance(endpoint.broker, MemoryBroker)
    assert endpoint.broker.histories() == []
    assert anyio.run(endpoint.history, "lobby") == []
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]


def test_room_resume_skips_own_messages_and_notices(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json")
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        say(endpoint, "seen")
        last = receive_json(ann)["id"]
        with client.websocket_connect("/rooms/lobby/bob") as bob:
            receive_json(bob)
            receive_json(ann)  # bob's join
            ann.send_json({"text": "mine"})
            bob.send_json({"text": "theirs"})
            assert texts([receive_json(ann)]) == ["theirs"]
            ann.close()
            assert unid(receive_json(bob)) == {"type": "message", "room": "lobby", "user": "ann", "text": "mine"}
            assert receive_json(bob)["type"] == "leave"
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann)["missed"] == 3
        replayed = [unid(receive_json(ann)) for _ in range(3)]
        assert replayed == [
            {"type": "join", "room": "lobby", "user": "bob"},
            {"type": "message", "room": "lobby", "user": "bob", "text": "theirs"},
            {"type": "leave", "room": "lobby", "user": "bob"},
        ]
        assert_no_message(ann)


def test_room_resume_replays_own_messages_when_echoed(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json", echo_template="")
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        ann.send_json({"text": "first"})
        echoed = receive_json(ann)
        assert unid(echoed) == {"type": "message", "room": "lobby", "user": "ann", "text": "first"}
        ann.send_json({"text": "second"})
        assert receive_json(ann)["text"] == "second"
    with client.websocket_connect(f"/rooms/lobby/ann?since={echoed['id']}") as ann:
        assert receive_resume(ann)["missed"] == 1  # not its own leave notice
        assert texts([receive_json(ann)]) == ["second"]
        assert_no_message(ann)


def test_room_since_param_is_configurable(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json", since_param="last")
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(endpoint, "missed")
    with client.websocket_connect(f"/rooms/lobby/ann?last={last}") as ann:
        assert receive_resume(ann)["missed"] == 1
        assert texts([receive_json(ann)]) == ["missed"]


class Forgetful(MemoryBroker):
    """A broker written before history: it inherits `Broker`'s defaults, which keep none."""

    history = Broker.history
    position = Broker.position


def test_room_resume_on_a_broker_without_history(client_factory: ClientFactory) -> None:
    endpoint = RoomEndpoint.configure(broker=Forgetful(), mode="json")
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann?since=x-1") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]
    assert anyio.run(endpoint.history, "lobby") == []


def test_forgetful_broker_passes_the_contract_without_history() -> None:
    broker = Forgetful()
    assert broker.position("x-1") is None
    anyio.run(functools.partial(check_broker, broker, history=False))


def test_room_resume_replays_other_endpoints_text(client_factory: ClientFactory) -> None:
    broker = MemoryBroker()
    endpoint = RoomEndpoint.configure(broker=broker, mode="json")
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(RoomEndpoint.configure(broker=broker), "plain")
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann)["missed"] == 1
        assert receive_text(ann) == "plain"


class Unreadable(MemoryBroker):
    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        raise BrokerUnavailableError("cannot reach the backend")


def test_room_resume_when_the_history_cannot_be_read(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = RoomEndpoint.configure(broker=Unreadable(), mode="json")
    client = client_factory(room_app(endpoint))
    with caplog.at_level(logging.WARNING, "wsendpoints"), client.websocket_connect("/rooms/lobby/ann?since=1") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        say(endpoint, "live")
        assert texts([receive_json(ann)]) == ["live"]
    assert "could not read room 'rooms/lobby''s history" in caplog.text


class Slow(MemoryBroker):
    """A broker whose history read takes until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.go = threading.Event()

    async def history(self, room: str, since: str | None = None, limit: int | None = None) -> History:
        found = await super().history(room, since, limit)
        self.reading.set()
        await anyio.to_thread.run_sync(self.go.wait, 5)
        return found


@pytest.mark.parametrize(("policy", "outcome"), [("close", "closed"), ("drop_newest", "dropped")])
def test_room_resume_holds_at_most_max_queue_messages(
    client_factory: ClientFactory, policy: SlowConsumerPolicy, outcome: str
) -> None:
    """A burst while the history is read: past `max_queue` held messages, the slow-consumer policy applies."""
    broker = Slow()
    endpoint = RoomEndpoint.configure(broker=broker, mode="json", max_queue=8, slow_consumer=policy)
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    broker.reading.clear()
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert broker.reading.wait(5)
        assert receive_json(ann)["type"] == "presence"  # sent while the history is read
        say(endpoint, *(f"m{n}" for n in range(30)))
        broker.go.set()
        if outcome == "closed":
            assert expect_close(ann) == (CloseCode.TRY_AGAIN_LATER, "slow consumer")
        else:
            assert receive_json(ann) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 0}
            # 8 held; queued behind the resume envelope, 7 fit.
            assert texts([receive_json(ann) for _ in range(7)]) == [f"m{n}" for n in range(7)]
            assert_no_message(ann)


def test_room_history(client_factory: ClientFactory) -> None:
    endpoint = fresh(mode="json", history_size=4)
    client = client_factory(room_app(endpoint))
    with client.websocket_connect("/rooms/lobby/ann") as ann:
        receive_json(ann)
        ann.send_json({"text": "hello"})
    say(endpoint, "a", "b", "c")
    everything = anyio.run(endpoint.history, "lobby")  # the latest 4 of 6: not ann's join, nor "hello"
    assert [unid(e) for e in everything] == [
        {"type": "leave", "room": "lobby", "user": "ann"},
        {"type": "message", "room": "lobby", "user": None, "text": "a"},
        {"type": "message", "room": "lobby", "user": None, "text": "b"},
        {"type": "message", "room": "lobby", "user": None, "text": "c"},
    ]
    assert anyio.run(endpoint.history, "lobby", everything[1]["id"]) == everything[2:]
    assert anyio.run(endpoint.history, "lobby", everything[1]["id"], 1) == everything[2:3]
    assert anyio.run(endpoint.history, "lobby", None, 2) == everything[2:]
    assert anyio.run(endpoint.history, "lobby", None, 0) == []
    assert anyio.run(endpoint.history, "lobby", "garbage") == []
    assert anyio.run(endpoint.history, "elsewhere") == []
    with pytest.raises(ValueError, match="limit must be at least 0, got -1"):
        anyio.run(endpoint.history, "lobby", None, -1)
    with pytest.raises(ValueError, match="room name 'a/b' does not match name_pattern"):
        anyio.run(endpoint.history, "a/b")
    with pytest.raises(TypeError, match="since must be a str or None, got 1"):
        anyio.run(endpoint.history, "lobby", 1)  # type: ignore[arg-type]
    assert anyio.run(endpoint.history, "ｌｏｂｂｙ") == everything  # noqa: RUF001 - NFKC makes it "lobby"


def test_room_history_in_text_mode() -> None:
    endpoint = fresh()
    say(endpoint, "plain")
    (entry,) = anyio.run(endpoint.history, "lobby")
    assert entry == {"id": entry["id"], "text": "plain"}


def test_room_history_in_json_mode_keeps_other_endpoints_text() -> None:
    broker = MemoryBroker()
    say(RoomEndpoint.configure(broker=broker), "plain", "{}", "[1]")
    entries = anyio.run(RoomEndpoint.configure(broker=broker, mode="json").history, "lobby")
    assert [(e["type"], e["user"], e["text"]) for e in entries] == [
        ("message", None, "plain"),
        ("message", None, "{}"),
        ("message", None, "[1]"),
    ]


def test_room_history_expires() -> None:
    broker = MemoryBroker()
    now = [1000.0]
    broker._clock = lambda: now[0]
    endpoint = RoomEndpoint.configure(broker=broker, mode="json", history_ttl=60)
    say(endpoint, "old")
    now[0] += 30
    say(endpoint, "newer")
    say(endpoint, "elsewhere", room="other")
    now[0] += 59  # 89 s after "old", 59 s after "newer"
    assert texts(anyio.run(endpoint.history, "lobby")) == ["old", "newer"]
    assert broker.histories() == ["rooms/lobby", "rooms/other"]
    now[0] += 1
    assert anyio.run(endpoint.history, "lobby") == []
    assert broker.histories() == []
    assert broker.rooms() == []


def test_room_resume_is_not_recovered_when_the_replay_would_not_fit_in_the_queue(
    client_factory: ClientFactory,
) -> None:
    endpoint = fresh(mode="json", max_queue=5)
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(endpoint, "a", "b", "c")
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": True, "missed": 3}
        missed = [receive_json(ann) for _ in range(3)]
        assert texts(missed) == ["a", "b", "c"]
        last = missed[-1]["id"]
    say(endpoint, "d", "e", "f", "g", "h")  # with the resume envelope, 6: more than the queue holds
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}


def test_room_resume_is_not_recovered_when_the_replay_would_not_fit_in_the_queue_bytes(
    client_factory: ClientFactory,
) -> None:
    endpoint = fresh(mode="json", max_queue_bytes=4096)
    client = client_factory(room_app(endpoint))
    last = last_seen(client, endpoint)
    say(endpoint, "x" * 1000)
    with client.websocket_connect(f"/rooms/lobby/ann?since={last}") as ann:
        assert receive_resume(ann)["recovered"] is True
        big = receive_json(ann)
        assert big["text"] == "x" * 1000
    say(endpoint, *("y" * 1000 for _ in range(4)))  # 4 KB and more: not in a queue of 4 KiB
    with client.websocket_connect(f"/rooms/lobby/ann?since={big['id']}") as ann:
        assert receive_resume(ann) == {"type": "resume", "room": "lobby", "recovered": False, "missed": 0}
        assert_no_message(ann)
