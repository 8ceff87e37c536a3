"""Helpers for checking endpoints with Starlette's `TestClient`, where no receive can hang.

`TestClient`'s own `receive_text()` waits forever when no message comes; these wait at most
`timeout` seconds and raise `TimeoutError`.

Example:
    ```python
    from starlette.testclient import TestClient
    from wsendpoints import testing

    with TestClient(app) as client, client.websocket_connect("/ok") as ws:
        ws.send_text("ping")
        assert testing.receive_text(ws) == "OK!"
        testing.assert_no_message(ws)
    ```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any, TypedDict

import anyio
from starlette.testclient import WebSocketTestSession
from starlette.types import Message as ASGIMessage

from .brokers import Broker, Message
from .exceptions import BrokerClosedError

__all__ = [
    "Collector",
    "assert_no_message",
    "assert_no_message_each",
    "check_broker",
    "expect_close",
    "receive",
    "receive_bytes",
    "receive_json",
    "receive_text",
    "receive_text_each",
]


def receive(ws: WebSocketTestSession, timeout: float = 1.0) -> ASGIMessage:
    """Return the next ASGI message the app sent on `ws`.

    Raises:
        TimeoutError: If none comes within `timeout` seconds.
    """

    stream = _private(ws, "_send_rx")

    async def next_message() -> ASGIMessage:
        with anyio.fail_after(timeout):
            message: ASGIMessage = await stream.receive()
            return message

    return ws.portal.call(next_message)


def _private(ws: WebSocketTestSession, name: str) -> Any:
    """Return `ws.<name>`, a private attribute of Starlette's: it has no public receive with a timeout.

    Starlette 0.45.1 and later have both that are used, `_send_rx` and `_raise_on_close`; the
    tests fail loudly if a release drops one.
    """
    try:
        return getattr(ws, name)
    except AttributeError:
        raise RuntimeError(
            f"wsendpoints.testing needs WebSocketTestSession.{name} (Starlette 0.45.1 and later), "
            "which this Starlette does not have"
        ) from None


def _data(ws: WebSocketTestSession, timeout: float, key: str) -> Any:
    message = receive(ws, timeout)
    _private(ws, "_raise_on_close")(message)
    if message.get(key) is None:
        raise AssertionError(f"expected a {key} message, got {_describe(message)}")
    return message[key]


def receive_text(ws: WebSocketTestSession, timeout: float = 1.0) -> str:
    """Return the next message, which must be text.

    Raises:
        TimeoutError: If no message comes within `timeout` seconds.
        starlette.websockets.WebSocketDisconnect: If the app closed the connection instead.
        AssertionError: If the message is bytes.
    """
    text: str = _data(ws, timeout, "text")
    return text


def receive_bytes(ws: WebSocketTestSession, timeout: float = 1.0) -> bytes:
    """Return the next message, which must be bytes; raises as `receive_text` does."""
    data: bytes = _data(ws, timeout, "bytes")
    return data


def receive_json(ws: WebSocketTestSession, timeout: float = 1.0) -> Any:
    """Return the next message, text holding JSON, decoded; raises as `receive_text` does."""
    return json.loads(receive_text(ws, timeout))


def receive_text_each(sockets: Sequence[WebSocketTestSession], timeout: float = 1.0) -> list[str]:
    """Return the next text message of each socket in `sockets`, in order; raises as `receive_text` does.

    Example:
        ```python
        bob.send_text("hi")
        assert receive_text_each([ann, cleo]) == ["bob: hi", "bob: hi"]
        ```
    """
    return [receive_text(ws, timeout) for ws in sockets]


def assert_no_message_each(sockets: Sequence[WebSocketTestSession], within: float = 0.1) -> None:
    """Check that none of `sockets` gets a message; waits `within` seconds for each in turn.

    Raises:
        AssertionError: If one of them gets a message or a close.
    """
    for ws in sockets:
        assert_no_message(ws, within)


def assert_no_message(ws: WebSocketTestSession, within: float = 0.1) -> None:
    """Check that the app sends nothing on `ws` for `within` seconds.

    Raises:
        AssertionError: If a message (or a close) comes.
    """
    try:
        message = receive(ws, within)
    except TimeoutError:
        return
    raise AssertionError(f"expected no message within {within}s, got {_describe(message)}")


def expect_close(ws: WebSocketTestSession, timeout: float = 1.0) -> tuple[int, str]:
    """Wait for the app to close `ws` and return the close `(code, reason)`.

    Raises:
        TimeoutError: If the app does not close within `timeout` seconds.
        AssertionError: If the app sends a message instead.
    """
    message = receive(ws, timeout)
    if message["type"] != "websocket.close":
        raise AssertionError(f"expected a close, got {_describe(message)}")
    return int(message.get("code", 1000)), str(message.get("reason") or "")


def _describe(message: ASGIMessage) -> str:
    if message["type"] == "websocket.close":
        return f"close {message.get('code', 1000)} {message.get('reason') or ''!r}"
    if message.get("text") is not None:
        return f"text {message['text']!r}"
    return f"bytes {message.get('bytes')!r}"


class Collector:
    """A `Deliver` callback that keeps what it gets and lets a test wait for it.

    Example:
        ```python
        collector = Collector()
        async with broker.subscribe("rooms/lobby", collector):
            await broker.publish("rooms/lobby", Message("hi"))
            await collector.wait_for(1)
        assert collector.payloads() == ["hi"]
        ```
    """

    def __init__(self, fail: bool = False) -> None:
        self.messages: list[Message] = []
        self.fail = fail
        self._arrived = anyio.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._arrived.set()
        if self.fail:
            raise RuntimeError("subscriber failure injected by check_broker")

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        """Wait until `count` messages have arrived; raise `TimeoutError` after `within` seconds."""
        with anyio.fail_after(within):
            while len(self.messages) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()

    def payloads(self) -> list[str]:
        return [message.payload for message in self.messages]


async def check_broker(broker: Broker, timeout: float = 5.0, *, history: bool = True) -> None:  # noqa: ASYNC109 - bounds each wait, not the call
    """Check that `broker` keeps the contract of `wsendpoints.Broker`; close it at the end.

    With `history` (the default) it also checks message ids, `history` and `position`, which
    a broker needs for members to resume; pass False for a broker that keeps no history.

    Run it against a new broker, in the event loop the broker will serve:

    ```python
    async def test_my_broker_keeps_the_contract() -> None:
        await check_broker(MyBroker())
    ```

    Raises:
        AssertionError: Saying which part of the contract was broken.
        TimeoutError: If an expected delivery does not come within `timeout` seconds.
    """
    rooms = ["check/a", "check/a*", "check/a?", "check/[a]", "check/a/b", "check/a:b", "check/é", "check/"]
    room = rooms[0]
    first, second, failing = Collector(), Collector(), Collector(fail=True)
    others = {name: Collector() for name in rooms[1:]}
    async with (
        broker.subscribe(room, first),
        broker.subscribe(room, failing),
        broker.subscribe(room, second),
        AsyncExitStack() as stack,
    ):
        for name, collector in others.items():
            await stack.enter_async_context(broker.subscribe(name, collector))
        sent = [Message(f"m{n}", sender=f"member-{n % 3}") for n in range(100)]
        for message in sent:
            await broker.publish(room, message)
        await first.wait_for(100, timeout)
        await second.wait_for(100, timeout)
        expected = [message.payload for message in sent]
        assert first.payloads() == expected, "a subscriber missed messages or got them out of order"
        assert second.payloads() == first.payloads(), "two subscribers saw different orders"
        assert failing.payloads() == expected, "a failing subscriber stopped getting messages"
        assert [m.sender for m in first.messages] == [m.sender for m in sent], "the sender was not kept"
        for name in others:
            await broker.publish(name, Message(f"only {name}"))
        await broker.publish(room, Message("last"))
        await first.wait_for(101, timeout)
        assert first.payloads()[100:] == ["last"], f"room {room!r} got another room's messages"
        for name, collector in others.items():
            await collector.wait_for(1, timeout)
            assert collector.payloads() == [f"only {name}"], f"room {name!r} got another room's messages"
        await second.wait_for(101, timeout)
    async with broker.subscribe(room, second):
        await broker.publish(room, Message("after first left"))
        await second.wait_for(102, timeout)
    assert len(first.messages) == 101, "a subscription went on after it ended"

    assert await broker.members(room) == []
    assert await broker.join(room, "m1", "zoe") == 1
    assert await broker.join(room, "m2", "adam") == 2
    assert await broker.join(room, "m3", "zoe") == 3
    assert await broker.join(rooms[1], "m4", "other") == 1
    assert await broker.members(room) == ["adam", "zoe"], "members() must be sorted, each name once"
    await broker.leave(room, "m1")
    assert await broker.members(room) == ["adam", "zoe"], "a name stays while another member has it"
    await broker.leave(room, "m3")
    await broker.leave(room, "unknown")
    assert await broker.members(room) == ["adam"]
    await broker.leave(room, "m2")
    await broker.leave(rooms[1], "m4")
    assert await broker.members(room) == []
    assert await broker.members(rooms[1]) == []
    await _check_names(broker, room, timeout)

    if history:
        await _check_history(broker, timeout)

    await broker.aclose()
    try:
        await broker.publish(room, Message("after close"))
    except BrokerClosedError:
        pass
    else:
        raise AssertionError("publish() after aclose() must raise BrokerClosedError")


class _Notices(TypedDict):
    greeting: Message
    farewell: Message


async def _check_names(broker: Broker, room: str, timeout: float) -> None:  # noqa: ASYNC109 - as check_broker's
    """Check presence per user name (`enter`, `depart`) and messages to one user (`publish_to`)."""
    heard = Collector()

    def notices(member: str) -> _Notices:
        return {"greeting": Message(f"{member} joined", sender=member), "farewell": Message(f"{member} left")}

    async with broker.subscribe(room, heard):
        first = await broker.enter(room, "a1", "alice", **notices("a1"))
        assert (first.count, first.first, first.users, first.refused) == (1, True, ("alice",), None)
        second = await broker.enter(room, "a2", "alice", **notices("a2"))
        assert (second.count, second.first, second.users) == (2, False, ("alice",)), "a name must be greeted once"
        taken = await broker.enter(room, "a3", "alice", unique=True, **notices("a3"))
        assert (taken.count, taken.refused) == (0, "name taken"), "unique=True must refuse a name present"
        full = await broker.enter(room, "b1", "bob", max_members=2, **notices("b1"))
        assert (full.count, full.refused) == (0, "room full"), "max_members must refuse past the limit"
        assert await broker.members(room) == ["alice"], "a refused member must leave no trace"
        assert not await broker.depart(room, "a1"), "a name stays while another member has it"
        assert await broker.members(room) == ["alice"]
        await broker.publish(room, Message("between"))
        assert await broker.depart(room, "a2"), "the last member of a name must say so"
        assert not await broker.depart(room, "a2"), "an unknown member is not a name's last"
        await heard.wait_for(3, timeout)
        assert heard.payloads() == ["a1 joined", "between", "a2 left"], "one greeting and one farewell per name"
        assert heard.messages[0].sender == "a1", "a greeting keeps its sender"

        entry = await broker.enter(room, "c1", "cleo")
        await broker.publish(room, Message("after cleo"))
        await heard.wait_for(4, timeout)
        after = None if entry.after is None else broker.position(entry.after)
        if after is not None:  # members skip by `position`: a broker without it makes them skip nothing
            ids = [broker.position(message.id or "") or () for message in heard.messages]
            assert max(ids[:3]) <= after < ids[3], "Entry.after must mark where cleo entered"

        assert await broker.publish_to(room, "dora", Message("psst")) in (0, None)
        for member in ("d1", "d2"):
            await broker.enter(room, member, "dora")
        assert await broker.publish_to(room, "dora", Message("bye", close=4000)) in (2, None), "count dora's members"
        await heard.wait_for(6, timeout)
        addressed = [(m.payload, m.to, m.close) for m in heard.messages[4:]]
        assert addressed == [("psst", "dora", None), ("bye", "dora", 4000)], "publish_to must address its message"
        for member in ("c1", "d1", "d2"):
            await broker.depart(room, member)
    assert await broker.members(room) == []


async def _check_history(broker: Broker, timeout: float) -> None:  # noqa: ASYNC109 - bounds each wait, not the call
    """Check ids, `history` and `position`: what resuming members need."""
    room, other = "check/history", "check/history-other"
    collector = Collector()
    async with broker.subscribe(room, collector):
        for n in range(5):
            message = Message(f"h{n}", sender="member-h", id="ignored")
            await broker.publish(room, message, history_size=3, history_ttl=60)
        await collector.wait_for(5, timeout)
    ids = [message.id for message in collector.messages]
    assert all(isinstance(message_id, str) and message_id for message_id in ids), f"messages need ids, got {ids}"
    assert len(set(ids)) == 5, f"ids must be unique in a room, got {ids}"
    known = [broker.position(str(message_id)) for message_id in ids]
    positions = [position for position in known if position is not None]
    assert len(positions) == 5, "position() must know the broker's own ids"
    assert positions == sorted(positions), "position() must follow the room's order"
    assert broker.position("not an id") is None, "position() of a string that is no id must be None"

    latest = await broker.history(room)
    assert latest.recovered, "history() without since must say it keeps history"
    assert latest.messages[-3:] == collector.messages[-3:], "history() must keep history_size messages, oldest first"
    assert (await broker.history(room, limit=2)).messages == collector.messages[3:], "limit keeps the latest"
    after = await broker.history(room, since=ids[2])
    assert after.recovered
    assert after.messages == collector.messages[3:], "history(since=) must return what came after that id"
    assert (await broker.history(room, since=ids[2], limit=1)).messages == collector.messages[3:4], (
        "history(since=, limit=) must return the first messages after that id"
    )
    assert (await broker.history(room, since=ids[4])).messages == [], "nothing came after the latest id"
    for unknown in ("not an id", ids[4]):
        found = await broker.history(other, since=unknown)
        assert (found.recovered, found.messages) == (False, []), f"history(since={unknown!r}) must not recover"
    assert (await broker.history(other)).messages == [], "another room's history must be empty"
