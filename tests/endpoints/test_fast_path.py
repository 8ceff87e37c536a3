"""The endpoints' per-message shortcuts: what each relies on, checked so that it fails loudly when it goes."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import anyio
import pytest
from starlette import _exception_handler
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from tests.conftest import ClientFactory
from tests.endpoints.test_base import Recorder, drive
from wsendpoints import CloseCode, EchoEndpoint, Endpoint, MemoryBroker, OKEndpoint, RoomEndpoint
from wsendpoints._deadline import SendWatch
from wsendpoints.brokers.base import Entry
from wsendpoints.endpoints import base
from wsendpoints.endpoints.base import server_send
from wsendpoints.rooms.member import Member
from wsendpoints.rooms.room import Room
from wsendpoints.testing import expect_close

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _clear_recorder() -> None:
    Recorder.disconnects.clear()


def test_starlettes_sender_wrapper_is_found() -> None:
    """If a Starlette release renames or reshapes its exception handler's `sender`, this says so."""
    assert base._STARLETTE_SENDER is not None
    assert base._STARLETTE_SENDER.co_freevars == ("response_started", "send")


def test_a_function_that_is_not_starlettes_sender_is_left_as_it_is() -> None:
    async def send(message: Message) -> None:  # pragma: no cover - never called
        pass

    assert server_send(send) is send
    assert base._code_named(_exception_handler.wrap_app_handling_exceptions.__code__, "nothing") is None


def test_a_starlette_without_its_exception_handler_module_costs_only_the_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "starlette._exception_handler", None)  # what a failed import leaves
    assert base._starlette_sender() is None


def test_without_starlettes_sender_nothing_is_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    async def sender(message: Message) -> None:  # pragma: no cover - never called
        pass

    monkeypatch.setattr(base, "_STARLETTE_SENDER", None)
    assert server_send(sender) is sender


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_data_frames_go_straight_to_the_servers_send_under_a_starlette_app() -> None:
    """The app's `ExceptionMiddleware` and the route each wrap `send`; data events skip both, the rest do not."""
    seen: list[object] = []

    class Probe(Endpoint):
        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            seen.append(self._wsendpoints_socket.data_send)
            await websocket.send_text(data)

    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b"", "root_path": ""}
    await Starlette(routes=[WebSocketRoute("/ws", Probe)])(scope, receive, send)
    assert seen == [send]
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send"]
    assert sent[1]["text"] == "hi"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sending_after_peer_left_without_a_send_timeout(backend: str) -> None:
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect"},
    ]
    sent = drive(Recorder.configure(send_timeout=None), incoming, True, backend=backend)
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert Recorder.disconnects == [(1006, "", "client")]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_send_watch_cancels_a_send_seen_running_for_its_timeout() -> None:
    """The watchdog sees each send by its number: a new send restarts the count, a finished one is forgotten."""
    watch = SendWatch.for_current_loop(1.0)
    assert watch is not None
    task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    try:
        watch.check_stall(0.0)  # nothing in flight, nothing seen
        watch.sending[task] = 1
        watch.check_stall(10.0)  # first seen
        watch.sending[task] = 2  # that send ended, the task's next began
        watch.check_stall(10.9)  # first seen again
        watch.check_stall(11.8)  # 0.9 s: not yet
        assert not task.cancelled()
        assert watch.sending == {task: 2}
        watch.check_stall(11.9)  # 1.0 s
        assert watch.sending == {}
        with pytest.raises(asyncio.CancelledError):
            await task
        assert watch.expired(task)
        assert not watch.expired(task)  # once
        watch.sending[task] = 3
        watch.check_stall(20.0)
        del watch.sending[task]
        watch.check_stall(30.0)  # what it saw is forgotten: the same number later starts afresh
        watch.sending[task] = 3
        watch.check_stall(30.5)
        assert watch.sending == {task: 3}
    finally:
        task.cancel()
        watch.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_send_watch_is_asyncio_only(anyio_backend: str) -> None:
    watch = SendWatch.for_current_loop(1.0)
    assert (watch is None) == (anyio_backend == "trio")
    if watch is not None:
        watch.close()


# A room member's writer sends straight to the server: the socket mutes it as the connection ends.


def test_a_writer_whose_peer_left_ends_the_connection_as_the_clients(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[tuple[int | None, str | None]] = []
    tried = threading.Event()

    class Gone(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            async def reset(event: Message) -> None:
                tried.set()
                raise OSError("connection reset")

            websocket.data_send = reset  # type: ignore[attr-defined]  # before the writer starts, in the join
            await super().on_connect(websocket)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            ended.append((self.close_code, self.closed_by))
            await super().on_disconnect(websocket, close_code)

    endpoint = Gone.configure(broker=MemoryBroker(), join_template=None, leave_template=None)
    client = client_factory(Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", endpoint)]))
    with client.websocket_connect("/rooms/lobby/ann"):
        anyio.run(endpoint.broadcast, "lobby", "hello")
        assert tried.wait(5)
    assert ended == [(CloseCode.ABNORMAL_CLOSURE, "client")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_connection_that_ends_before_its_writer_starts_mutes_the_member(client_factory: ClientFactory) -> None:
    members: list[Member] = []

    class Brief(RoomEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await super().on_connect(websocket)
            assert self.member is not None
            members.append(self.member)
            await websocket.close(4000, "brief")  # the writer task has not run yet

    endpoint = Brief.configure(broker=MemoryBroker(), join_template=None, leave_template=None)
    client = client_factory(Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", endpoint)]))
    with client.websocket_connect("/rooms/lobby/ann") as ws:
        assert expect_close(ws) == (4000, "brief")
    members[0].push("after the end")
    assert members[0].queued == (0, 0)


def test_a_connection_closed_during_the_join_mutes_the_member_as_its_writer_starts(
    client_factory: ClientFactory,
) -> None:
    members: list[Member] = []

    class Closing(RoomEndpoint):
        async def authorize(self, websocket: WebSocket, room: str, user: str) -> bool:
            await websocket.close(4000, "closed in the join")  # then lets it in: the join goes on
            return True

        def _joined(self, member: Member, entry: Entry) -> None:
            members.append(member)
            super()._joined(member, entry)

    endpoint = Closing.configure(broker=MemoryBroker(), join_template=None, leave_template=None)
    client = client_factory(Starlette(routes=[WebSocketRoute("/rooms/{room}/{user}", endpoint)]))
    with client.websocket_connect("/rooms/lobby/ann") as ws:
        assert expect_close(ws) == (4000, "closed in the join")
    members[0].push("after the end")
    assert members[0].queued == (0, 0)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_mute_drops_the_queue_releases_the_room_and_ends_the_writer_quietly() -> None:
    room = Room("r")
    member = Member("m", 4, "close", 10.0, room=room)
    for n in range(3):  # past the high-water mark of 2
        member.push(f"m{n}")
    assert room.behind == 1
    stalls: list[str] = []

    async def on_stall(reason: str) -> None:  # pragma: no cover - never called
        stalls.append(reason)

    async def never(event: Message) -> None:
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(member.run, never, on_stall)
            await anyio.wait_all_tasks_blocked()  # the writer waits in its first send
            member.mute()
        assert (room.behind, member.queued, member.stalled, stalls) == (0, (0, 0), None, [])
        member.push("after the end")
        assert member.queued == (0, 0)
        await member.run(never, on_stall)  # muted: returns at once


# Echo and OK answer short text from the receive loop itself, without `on_receive`.


class QuickEcho(EchoEndpoint):
    send_timeout = 0.05

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))


def test_echo_and_ok_answer_short_text_without_their_on_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(self: Endpoint, websocket: WebSocket, data: Any) -> None:
        raise AssertionError("on_receive was called")  # pragma: no cover - runs only if the test fails

    monkeypatch.setattr(EchoEndpoint, "on_receive", never)  # the class's own: the loop answers for it
    monkeypatch.setattr(OKEndpoint, "on_receive", never)
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "one"},
        {"type": "websocket.receive", "text": "two"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent = drive(QuickEcho, incoming)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["one", "two"]
    assert Recorder.disconnects == [(1000, "", "client")]
    sent = drive(OKEndpoint.configure(reply="ack"), incoming)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["ack", "ack"]


def test_a_subclass_with_its_own_on_receive_gets_every_message(client_factory: ClientFactory) -> None:
    class Loud(OKEndpoint):
        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.send_text(f"{self.reply} {data}")

    client = client_factory(Starlette(routes=[WebSocketRoute("/ws", Loud)]))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "OK! hi"


def test_echo_reply_past_send_timeout_closes_1013() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(QuickEcho, incoming, stall="websocket.send")
    assert sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "send timeout"}
    assert Recorder.disconnects == [(1013, "send timeout", "server")]


def test_echo_reply_cancelled_from_outside_is_not_a_send_timeout() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(QuickEcho.configure(send_timeout=60), incoming, stall="websocket.send")
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
    assert Recorder.disconnects == [(1001, "server shutting down", "server")]


def test_echo_reply_to_a_peer_that_left_ends_the_connection_as_the_clients() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(QuickEcho, incoming, fail_sends=True)
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert Recorder.disconnects == [(1006, "", "client")]


def test_an_echo_connection_waiting_for_a_message_cancelled_from_outside_closes_1001() -> None:
    """The loop that answers by itself runs in a task of its own: cancelling the connection's cancels it."""
    sent = drive(QuickEcho.configure(send_timeout=60), [{"type": "websocket.connect"}])
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
    assert Recorder.disconnects == [(1001, "server shutting down", "server")]


def test_an_echo_connection_past_its_idle_timeout_closes_1001() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "one"}]
    sent = drive(QuickEcho.configure(send_timeout=60, idle_timeout=0.05), incoming)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["one"]
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "idle timeout"}
    assert Recorder.disconnects == [(1001, "idle timeout", "server")]


def test_a_loop_with_a_decode_of_its_own_stays_in_the_handlers_task() -> None:
    """Only a loop that answers by itself runs in a task of its own: an own `decode` runs where `on_connect` did."""
    tasks: list[object] = []

    class Decoding(EchoEndpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            tasks.append(asyncio.current_task())
            await super().on_connect(websocket)

        async def decode(self, websocket: WebSocket, message: Message) -> Any:
            tasks.append(asyncio.current_task())
            return await super().decode(websocket, message)

    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent = drive(Decoding, incoming)
    assert [m.get("text") for m in sent if m["type"] == "websocket.send"] == ["hi"]
    assert len(tasks) == 2
    assert tasks[0] is tasks[1]
