"""The endpoints' per-message shortcuts: what each relies on, checked so that it fails loudly when it goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Message
from starlette.websockets import WebSocket

from tests.endpoints.test_base import Recorder, drive
from wsendpoints import Endpoint
from wsendpoints._deadline import SendWatch
from wsendpoints.endpoints import base
from wsendpoints.endpoints.base import server_send

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
    assert base._code_named(base.server_send.__code__, "nothing") is None


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
            seen.append(self._wsendpoints_socket._data_send)
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


async def test_send_watch_is_asyncio_only(anyio_backend: str) -> None:
    watch = SendWatch.for_current_loop(1.0)
    assert (watch is None) == (anyio_backend == "trio")
    if watch is not None:
        watch.close()
