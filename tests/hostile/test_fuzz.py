"""Property-based fuzzing of everything that decodes client input.

For any sequence of text and bytes frames, of any content and size, the only outcomes are the
documented replies and close codes, `on_disconnect` runs once with the code exchanged, and
nothing is logged at ERROR.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from tests.envelopes import unid
from wsendpoints import EchoEndpoint, MemoryBroker, RoomEndpoint
from wsendpoints.testing import receive

LIMIT = 200


class Counted(EchoEndpoint):
    """Echo that counts its `on_disconnect` calls."""

    disconnects: ClassVar[list[int]] = []
    max_message_size = LIMIT

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.disconnects.append(close_code)


class CountedRoom(RoomEndpoint):
    disconnects: ClassVar[list[int]] = []
    max_message_size = LIMIT
    broker = MemoryBroker()
    mode = "json"

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        self.disconnects.append(close_code)
        await super().on_disconnect(websocket, close_code)


app = Starlette(
    routes=[
        WebSocketRoute("/any", Counted),
        WebSocketRoute("/text", Counted.configure(encoding="text")),
        WebSocketRoute("/bytes", Counted.configure(encoding="bytes")),
        WebSocketRoute("/json", Counted.configure(encoding="json")),
        WebSocketRoute("/room/{room}/{user}", CountedRoom),
    ]
)
client = TestClient(app)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
json_text = json_values.map(json.dumps)
texts = st.text(max_size=LIMIT + 20) | json_text | st.sampled_from(["NaN", "[1e999]", "1" * 150, "[" * 70 + "]" * 70])
frames = st.lists(
    st.one_of(
        texts.map(lambda t: ("text", t)),
        st.binary(max_size=LIMIT + 20).map(lambda b: ("bytes", b)),
        json_text.map(lambda t: ("bytes", t.encode())),
        st.builds(lambda t: ("text", json.dumps({"text": t})), st.text(max_size=50)),
    ),
    min_size=1,
    max_size=6,
)


def size(kind: str, data: str | bytes) -> int:
    return len(data.encode() if isinstance(data, str) else data)


class Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_errors_logged() -> Iterator[None]:
    records: list[logging.LogRecord] = []
    handler = Keep(records)
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]


def expected(path: str, kind: str, data: Any) -> tuple[str, Any]:
    """The documented outcome of one frame on an echo endpoint: ("reply", frame) or ("close", codes)."""
    if size(kind, data) > LIMIT:
        return "close", {1009}
    if path == "/text" and kind == "bytes":
        return "close", {1003}
    if path == "/bytes" and kind == "text":
        return "close", {1003}
    if path == "/json":
        return "json", {1007}
    return "reply", data


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["/any", "/text", "/bytes", "/json"]), sequence=frames)
def test_fuzz_echo_outcomes_are_documented(path: str, sequence: list[tuple[str, Any]]) -> None:
    Counted.disconnects.clear()
    closed: int | None = None
    with no_errors_logged(), client.websocket_connect(path) as ws:
        for kind, data in sequence:
            ws.send({"type": "websocket.receive", kind: data})
            outcome, value = expected(path, kind, data)
            message = receive(ws, timeout=5)
            if message["type"] == "websocket.close":
                assert outcome in ("close", "json"), (kind, data, message)
                assert message["code"] in value
                closed = message["code"]
                break
            assert outcome != "close", (kind, data, message)
            if outcome == "reply":
                assert message.get(kind) == data
            else:
                assert json.loads(message["text"]) == json.loads(data)
    assert Counted.disconnects == [closed if closed is not None else 1000]


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=frames)
def test_fuzz_room_outcomes_are_documented(sequence: list[tuple[str, Any]]) -> None:
    CountedRoom.disconnects.clear()
    closed: int | None = None
    with (
        no_errors_logged(),
        client.websocket_connect("/room/fuzz/watcher") as watcher,
        client.websocket_connect("/room/fuzz/fuzzer") as fuzzer,
    ):
        assert receive(watcher, 5)["text"].startswith('{"type":"presence"')
        assert receive(watcher, 5)["text"].startswith('{"type":"join"')
        assert receive(fuzzer, 5)["text"].startswith('{"type":"presence"')
        for kind, data in sequence:
            fuzzer.send({"type": "websocket.receive", kind: data})
            try:
                value = json.loads(data)
            except ValueError:
                value = None
            if (
                size(kind, data) <= LIMIT
                and isinstance(value, dict)
                and set(value) == {"text"}
                and isinstance(value["text"], str)
            ):
                envelope = unid(json.loads(receive(watcher, 5)["text"]))
                assert envelope == {"type": "message", "room": "fuzz", "user": "fuzzer", "text": value["text"]}
                continue
            message = receive(fuzzer, 5)
            assert message["type"] == "websocket.close", (kind, data, message)
            assert message["code"] in {1007, 1008, 1009}
            closed = message["code"]
            break
        if closed is not None:
            assert json.loads(receive(watcher, 5)["text"])["type"] == "leave"
    assert sorted(CountedRoom.disconnects) == sorted([closed or 1000, 1000])


def test_no_errors_logged_catches_an_error() -> None:
    with pytest.raises(AssertionError, match="injected"), no_errors_logged():
        logging.getLogger("wsendpoints").error("injected")
