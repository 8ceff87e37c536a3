from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import anyio
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException, WebSocketException
from starlette.routing import WebSocketRoute
from starlette.testclient import WebSocketDenialResponse
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.conftest import ClientFactory
from wsendpoints import CloseCode, EchoEndpoint, Endpoint
from wsendpoints.endpoints.base import _TaskScope, cut_reason
from wsendpoints.testing import assert_no_message, expect_close, receive_json, receive_text


class Recorder(Endpoint):
    """Echoes text and records every `on_disconnect` call."""

    disconnects: ClassVar[list[tuple[int, str, str | None]]] = []

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if data == "raise":
            raise RuntimeError("secret detail")
        if data == "close":
            await websocket.close(4001, "bye")
            await websocket.close(4009, "again")  # a second close is harmless
            with pytest.raises(RuntimeError, match="once a close message has been sent"):
                await websocket.send_text("after close")
            return
        if data == "long reason":
            await websocket.close(4002, "é" * 100)
            return
        await websocket.send_text(str(data))

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        assert close_code == self.close_code
        self.disconnects.append((close_code, self.close_reason, self.closed_by))
        assert not self.is_open
        await websocket.close()  # harmless once the connection has ended, as in Starlette's own example


@pytest.fixture(autouse=True)
def _clear_recorder() -> None:
    Recorder.disconnects.clear()


def app_for(endpoint: type[Endpoint]) -> Starlette:
    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


# Options


def test_configure_returns_subclass_and_leaves_original() -> None:
    small = EchoEndpoint.configure(max_message_size=10, encoding="text")
    assert issubclass(small, EchoEndpoint)
    assert small is not EchoEndpoint
    assert small.__name__ == "EchoEndpoint"
    assert (small.max_message_size, small.encoding) == (10, "text")
    assert (EchoEndpoint.max_message_size, EchoEndpoint.encoding) == (1024 * 1024, None)


def test_configure_unknown_option_names_it_and_the_valid_ones() -> None:
    with pytest.raises(TypeError, match="unknown option\\(s\\) colour, size; valid options are allowed_origins, "):
        Endpoint.configure(size=1, colour="red")  # type: ignore[call-arg]  # on purpose


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"encoding": 1}, TypeError, "encoding must be a str or None, got 1"),
        ({"send_timeout": 0}, ValueError, "send_timeout must be positive and finite, got 0"),
        ({"max_message_size": 0}, ValueError, "max_message_size must be at least 1, got 0"),
        ({"max_message_size": 1.5}, TypeError, "max_message_size must be an int or None, got 1.5"),
        ({"max_message_size": True}, TypeError, "max_message_size must be an int or None"),
        ({"max_connections": -1}, ValueError, "max_connections must be at least 1"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout must be positive and finite, got 0"),
        ({"idle_timeout": float("inf")}, ValueError, "idle_timeout must be positive and finite"),
        ({"idle_timeout": "5"}, TypeError, "idle_timeout must be a number of seconds or None, got '5'"),
        ({"allowed_origins": "https://a.example"}, TypeError, "allowed_origins must be None or a list"),
        ({"allowed_origins": ["a.example"]}, ValueError, "is not of the form 'scheme://host\\[:port\\]'"),
    ],
)
def test_configure_rejects_bad_values_at_once(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Endpoint.configure(**options)


def test_subclass_with_bad_class_attribute_fails_at_definition() -> None:
    with pytest.raises(ValueError, match="max_message_size must be at least 1"):

        class Broken(Endpoint):
            max_message_size = 0


# Decoding and limits


@pytest.mark.parametrize(
    ("encoding", "send", "reason"),
    [("text", {"bytes": b"x"}, "expected text messages"), ("bytes", {"text": "x"}, "expected binary messages")],
)
def test_wrong_frame_type_closes_1003(
    client_factory: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    encoding: Literal["text", "bytes"],
    send: Message,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, "wsendpoints")
    client = client_factory(app_for(Recorder.configure(encoding=encoding)))
    with client.websocket_connect("/ws") as ws:
        ws.send({"type": "websocket.receive", **send})
        assert expect_close(ws) == (CloseCode.UNSUPPORTED_DATA, reason)
    assert Recorder.disconnects == [(1003, reason, "server")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(reason in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_text_and_bytes_encodings_pass_their_frames(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(EchoEndpoint.configure(encoding="bytes")))
    with client.websocket_connect("/ws") as ws:
        ws.send_bytes(b"\x00\xff")
        assert ws.receive_bytes() == b"\x00\xff"
    client = client_factory(app_for(EchoEndpoint.configure(encoding="text")))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "hi"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"text": '{"a": '}, "malformed JSON"),
        ({"bytes": b'{"a": "\xff"}'}, "invalid UTF-8"),
        ({"text": "[NaN]"}, "NaN is not valid JSON"),
        ({"text": '{"x": Infinity}'}, "Infinity is not valid JSON"),
        ({"text": "1" * 5000}, "number too long"),
        ({"text": "[" * 10_000 + "]" * 10_000}, "JSON nested too deeply"),
        ({"text": '"\\ud800"'}, "lone surrogate in JSON string"),
    ],
)
def test_bad_json_closes_1007(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture, frame: Message, reason: str
) -> None:
    client = client_factory(app_for(Recorder.configure(encoding="json")))
    with client.websocket_connect("/ws") as ws:
        ws.send({"type": "websocket.receive", **frame})
        assert expect_close(ws) == (CloseCode.INVALID_DATA, reason)
    assert Recorder.disconnects == [(1007, reason, "server")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_json_encoding_decodes_text_and_bytes(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder.configure(encoding="json")))
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"a": [1, 2.5]})
        assert receive_text(ws) == "{'a': [1, 2.5]}"
        ws.send_json({"b": None}, mode="binary")
        assert receive_text(ws) == "{'b': None}"


def test_message_at_limit_passes_and_one_byte_over_closes_1009(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder.configure(max_message_size=8)))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("12345678")
        assert receive_text(ws) == "12345678"
        ws.send_text("éééé")  # 4 characters, 8 bytes
        assert receive_text(ws) == "éééé"
        ws.send_bytes(b"12345678")
        assert receive_text(ws) == "b'12345678'"
        ws.send_text("éééé!")  # 5 characters, 9 bytes
        assert expect_close(ws) == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    with client.websocket_connect("/ws") as ws:
        ws.send_bytes(b"123456789")
        assert expect_close(ws) == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    with client.websocket_connect("/ws") as ws:
        ws.send_text("x" * 100)
        assert expect_close(ws) == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    assert [code for code, _, _ in Recorder.disconnects] == [1009, 1009, 1009]


def test_size_is_checked_before_decoding(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder.configure(max_message_size=100, encoding="json")))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("[" * 101)
        assert expect_close(ws) == (CloseCode.MESSAGE_TOO_BIG, "message too big")


def test_max_message_size_none_means_no_limit(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(EchoEndpoint.configure(max_message_size=None)))
    with client.websocket_connect("/ws") as ws:
        ws.send_bytes(b"x" * (2 * 1024 * 1024))
        assert len(ws.receive_bytes()) == 2 * 1024 * 1024


# Handshake


def test_foreign_origin_is_refused_with_403(client_factory: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "wsendpoints")
    client = client_factory(app_for(Recorder))
    with (
        pytest.raises(WebSocketDenialResponse) as info,
        client.websocket_connect("/ws", headers={"origin": "https://evil.example\x1b[31m"}),
    ):
        pass  # pragma: no cover - never reached
    assert info.value.status_code == 403
    assert Recorder.disconnects == []
    assert "\x1b" not in caplog.text
    assert "malformed Origin header" in caplog.text


def test_cross_origin_refusal_logs_what_was_compared_and_how_to_allow_it(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The Starlette docs' chat page served from localhost opening ws://127.0.0.1: the log says how to fix it."""
    caplog.set_level(logging.INFO, "wsendpoints")
    client = client_factory(app_for(Recorder))
    with (
        pytest.raises(WebSocketDenialResponse),
        client.websocket_connect("/ws", headers={"origin": "http://localhost:8000"}),
    ):
        pass  # pragma: no cover - never reached
    assert "cross-origin request (Origin b'http://localhost:8000', compared with Host 'testserver')" in caplog.text
    assert "allowed_origins" in caplog.text


def test_same_origin_and_no_origin_are_allowed(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder))
    for headers in ({}, {"origin": "http://testserver"}):
        with client.websocket_connect("/ws", headers=headers) as ws:
            ws.send_text("hi")
            assert receive_text(ws) == "hi"


def test_allowed_origins_list_and_star(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder.configure(allowed_origins=["https://app.example"])))
    with client.websocket_connect("/ws", headers={"origin": "https://APP.example"}) as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "hi"
    with (
        pytest.raises(WebSocketDenialResponse),
        client.websocket_connect("/ws", headers={"origin": "http://testserver"}),
    ):
        pass  # pragma: no cover - never reached
    client = client_factory(app_for(Recorder.configure(allowed_origins=["*"])))
    with client.websocket_connect("/ws", headers={"origin": "https://anywhere.example"}) as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "hi"


def test_max_connections_accepts_then_closes_1013(client_factory: ClientFactory) -> None:
    limited = Recorder.configure(max_connections=2)
    client = client_factory(app_for(limited))
    with client.websocket_connect("/ws") as first, client.websocket_connect("/ws") as second:
        with client.websocket_connect("/ws") as third:
            assert expect_close(third) == (CloseCode.TRY_AGAIN_LATER, "too many connections")
        first.send_text("still here")
        assert receive_text(first) == "still here"
        assert_no_message(second)
    with client.websocket_connect("/ws") as again:
        again.send_text("room again")
        assert receive_text(again) == "room again"
    assert limited._open_connections == 0
    assert Recorder._open_connections == 0


def test_idle_timeout_closes_1001(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder.configure(idle_timeout=0.2)))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("keep")
        assert receive_text(ws) == "keep"
        assert expect_close(ws, timeout=5) == (CloseCode.GOING_AWAY, "idle timeout")
    assert Recorder.disconnects == [(1001, "idle timeout", "server")]


# Errors and the close path


def test_handler_error_closes_1011_and_logs_once(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_factory(app_for(Recorder))
    with client.websocket_connect("/ws") as ws, client.websocket_connect("/ws") as bystander:
        ws.send_text("raise")
        assert expect_close(ws) == (CloseCode.INTERNAL_ERROR, "internal error")
        bystander.send_text("fine")
        assert receive_text(bystander) == "fine"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].name == "wsendpoints"
    assert errors[0].exc_info is not None
    assert (1011, "internal error", "error") in Recorder.disconnects


def test_error_after_peer_left_keeps_client_close(client_factory: ClientFactory) -> None:
    class LateError(Endpoint):
        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))
            raise RuntimeError("in on_disconnect")

    client = client_factory(app_for(LateError))
    with client.websocket_connect("/ws") as ws:
        ws.close(4100, "leaving")
    assert Recorder.disconnects == [(4100, "leaving", "client")]


def test_on_disconnect_gets_client_code_and_reason(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder))
    with client.websocket_connect("/ws") as ws:
        ws.close(4321, "done")
    with client.websocket_connect("/ws"):
        pass
    assert Recorder.disconnects == [(4321, "done", "client"), (1000, "", "client")]


def test_server_close_is_reported_once_and_later_sends_are_dropped(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("close")
        assert expect_close(ws) == (4001, "bye")
        assert_no_message(ws)
    assert Recorder.disconnects == [(4001, "bye", "server")]


def test_close_reason_is_cut_to_123_bytes(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Recorder))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("long reason")
        code, reason = expect_close(ws)
    assert (code, reason) == (4002, "é" * 61)
    assert len(reason.encode()) == 122


@pytest.mark.parametrize(
    ("reason", "cut"),
    [("", ""), ("x" * 123, "x" * 123), ("x" * 124, "x" * 123), ("€" * 41, "€" * 41), ("x" + "€" * 41, "x" + "€" * 40)],
)
def test_cut_reason_keeps_whole_characters(reason: str, cut: str) -> None:
    assert cut_reason(reason) == cut


class Greeter(Endpoint):
    """`on_connect` closes the connections it does not like, after or before accepting."""

    async def on_connect(self, websocket: WebSocket) -> None:
        name = websocket.query_params.get("name", "")
        if name == "refuse":
            await websocket.close(CloseCode.POLICY_VIOLATION)
            return
        if name == "ignore":
            return
        if name == "crash":
            raise RuntimeError("before accept")
        await super().on_connect(websocket)
        if name == "crash-later":
            raise RuntimeError("after accept")
        if name == "deny":
            await websocket.close(CloseCode.POLICY_VIOLATION, "name not allowed")
            return
        await websocket.send_text(f"hello {name}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))


def test_close_in_on_connect_reports_its_code(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Greeter))
    with client.websocket_connect("/ws?name=deny") as ws:
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "name not allowed")
    with client.websocket_connect("/ws?name=ann") as ws:
        assert receive_text(ws) == "hello ann"
    assert Recorder.disconnects == [(1008, "name not allowed", "server"), (1000, "", "client")]


def test_on_connect_refusing_before_accept_is_a_refused_handshake(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_factory(app_for(Greeter))
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws?name=refuse"):
        pass  # pragma: no cover - never reached
    assert closed.value.code == CloseCode.POLICY_VIOLATION
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws?name=ignore"):
        pass  # pragma: no cover - never reached
    assert denied.value.status_code == 403
    with pytest.raises(WebSocketDenialResponse) as crashed, client.websocket_connect("/ws?name=crash"):
        pass  # pragma: no cover - never reached
    assert crashed.value.status_code == 500
    assert Recorder.disconnects == []
    assert "before accept" in caplog.text


def test_on_connect_error_after_accept_closes_1011(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Greeter))
    with client.websocket_connect("/ws?name=crash-later") as ws:
        assert expect_close(ws) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert Recorder.disconnects == [(1011, "internal error", "error")]


def test_handler_reading_the_socket_sees_client_leave(client_factory: ClientFactory) -> None:
    class Reader(Endpoint):
        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.receive_text()

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))

    client = client_factory(app_for(Reader))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("first")
        ws.close(4005, "gone")
    assert Recorder.disconnects == [(4005, "gone", "client")]


def test_custom_decode_is_used(client_factory: ClientFactory) -> None:
    class Upper(EchoEndpoint):
        async def decode(self, websocket: WebSocket, message: Message) -> Any:
            return (await super().decode(websocket, message)).upper()

    client = client_factory(app_for(Upper))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("shout")
        assert receive_text(ws) == "SHOUT"


# Driven by hand, for what TestClient cannot do: failing sends and outside cancellation.


def drive(
    endpoint: type[Endpoint],
    incoming: list[Message],
    fail_sends: bool = False,
    headers: Headers = (),
    query: bytes = b"",
    stall: str = "",
    backend: str = "asyncio",
) -> list[Message]:
    """Run one connection of `endpoint` in a thread of its own, cancelled after 0.5 s; return what it sent.

    The thread keeps the cancellation out of the test's frame, where it would confuse the coverage tracer.
    """
    sent: list[Message] = []
    args = (_drive, endpoint, incoming, fail_sends, sent, list(headers), query, stall.split())
    thread = threading.Thread(target=anyio.run, args=args, kwargs={"backend": backend})
    thread.start()
    thread.join(10)
    return sent


Headers = Sequence[tuple[bytes, bytes]]


async def _drive(
    endpoint: type[Endpoint],
    incoming: list[Message],
    fail_sends: bool,
    sent: list[Message],
    headers: Headers,
    query: bytes,
    stall: list[str],
) -> None:
    queue = list(incoming)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover - sleep_forever never returns

    async def send(message: Message) -> None:
        if fail_sends and message["type"] != "websocket.accept":
            raise OSError("connection reset")
        if message["type"] in stall:  # a client that does not read: the send never completes
            await anyio.sleep_forever()
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": headers, "query_string": query}
    with anyio.move_on_after(0.5):
        await endpoint(scope, receive, send)


def test_sending_after_peer_left_raises_websocket_disconnect_1006() -> None:
    """As in Starlette: the handler's send raises, the connection ends as the client's, with no error."""
    incoming: list[Message] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect"},
    ]
    sent = drive(Recorder, incoming, True)
    assert sent == [{"type": "websocket.accept", "subprotocol": None, "headers": []}]
    assert Recorder.disconnects == [(1006, "", "client")]


def test_cancelled_connection_still_gets_on_disconnect() -> None:
    sent = drive(Recorder, [{"type": "websocket.connect"}])
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}
    assert Recorder.disconnects == [(1001, "server shutting down", "server")]


def test_cancelled_connection_whose_peer_left() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    sent = drive(Recorder, incoming, True)
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert Recorder.disconnects == [(1006, "", "client")]


def test_receive_json_helper_with_json_endpoint(client_factory: ClientFactory) -> None:
    class JSONEcho(Endpoint):
        encoding = "json"

        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.send_json(data)

    client = client_factory(app_for(JSONEcho))
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"n": 1})
        assert receive_json(ws) == {"n": 1}


def test_refusal_without_denial_response_extension_is_a_close_before_accept() -> None:
    """Servers without the "websocket.http.response" extension turn a close before accept into HTTP 403."""
    sent = drive(Recorder, [{"type": "websocket.connect"}], headers=[(b"origin", b"https://evil.example")])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Origin not allowed"}]
    assert Recorder.disconnects == []


def test_error_after_close_keeps_the_close(client_factory: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    class CloseThenFail(Endpoint):
        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.close(4003, "first")
            raise RuntimeError("then fails")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))

    client = client_factory(app_for(CloseThenFail))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("go")
        assert expect_close(ws) == (4003, "first")
    assert Recorder.disconnects == [(4003, "first", "server")]
    assert "then fails" in caplog.text


def test_closing_after_peer_left_never_raises() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "close"}]
    sent = drive(Recorder, incoming, True)
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert Recorder.disconnects == [(4001, "bye", "server")]


def test_echo_sending_after_peer_left_never_raises() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "bytes": b"hi"}]
    sent = drive(EchoEndpoint, incoming, True)
    assert [m["type"] for m in sent] == ["websocket.accept"]


# Drop-in for Starlette's `WebSocketEndpoint`


def test_client_close_without_a_code_is_1005(caplog: pytest.LogCaptureFixture) -> None:
    for disconnect in ({"type": "websocket.disconnect", "code": None}, {"type": "websocket.disconnect"}):
        Recorder.disconnects.clear()
        drive(Recorder, [{"type": "websocket.connect"}, disconnect])
        assert Recorder.disconnects == [(CloseCode.NO_STATUS_RCVD, "", "client")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class Raiser(Endpoint):
    """Raises Starlette's documented refusals from its handlers."""

    async def on_connect(self, websocket: WebSocket) -> None:
        how = websocket.query_params.get("how", "")
        if how == "http":
            raise HTTPException(401, "who are you?", headers={"WWW-Authenticate": "Bearer"})
        if how == "ws-before":
            raise WebSocketException(CloseCode.POLICY_VIOLATION, "no token")
        await super().on_connect(websocket)
        if how == "ws-after":
            raise WebSocketException(4401, "token expired")
        if how == "http-after":
            raise HTTPException(401)

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        raise WebSocketException(CloseCode.POLICY_VIOLATION, f"not allowed: {data}")

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))


def test_websocket_exception_closes_with_its_code_and_reason(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_factory(app_for(Raiser))
    with client.websocket_connect("/ws?how=ws-after") as ws:
        assert expect_close(ws) == (4401, "token expired")
    with client.websocket_connect("/ws") as ws:
        ws.send_text("this")
        assert expect_close(ws) == (CloseCode.POLICY_VIOLATION, "not allowed: this")
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws?how=ws-before"):
        pass  # pragma: no cover - never reached
    assert (refused.value.code, refused.value.reason) == (CloseCode.POLICY_VIOLATION, "no token")
    assert Recorder.disconnects == [(4401, "token expired", "server"), (1008, "not allowed: this", "server")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_http_exception_before_accept_is_that_http_response(
    client_factory: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_factory(app_for(Raiser))
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws?how=http"):
        pass  # pragma: no cover - never reached
    assert denied.value.status_code == 401
    assert denied.value.text == "who are you?"
    assert denied.value.headers["www-authenticate"] == "Bearer"
    assert Recorder.disconnects == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_http_exception_without_denial_responses_is_a_403_close() -> None:
    scope_extra: list[tuple[bytes, bytes]] = []
    sent = drive(Raiser, [{"type": "websocket.connect"}], headers=scope_extra, query=b"how=http")
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "who are you?"}]


def test_http_exception_after_accept_is_an_error_1011(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(Raiser))
    with client.websocket_connect("/ws?how=http-after") as ws:
        assert expect_close(ws) == (CloseCode.INTERNAL_ERROR, "internal error")
    assert Recorder.disconnects == [(1011, "internal error", "error")]


def test_sending_before_accept_is_starlettes_runtime_error(client_factory: ClientFactory) -> None:
    class Eager(Endpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            await websocket.send_text("too early")

    client = client_factory(app_for(Eager))
    with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
        pass  # pragma: no cover - never reached
    assert denied.value.status_code == 500


def test_subclass_with_its_own_encoding_and_any_attribute_names(client_factory: ClientFactory) -> None:
    """Valid for Starlette, so valid here: an encoding decoded by the subclass, an attribute named `options`."""

    class Reversed(Endpoint):
        encoding = "reversed"  # type: ignore[assignment]
        options = {"anything": 1}  # noqa: RUF012 - a user's own attribute

        async def decode(self, websocket: WebSocket, message: Message) -> Any:
            return (await super().decode(websocket, message))[::-1]

        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.send_text(f"{data} {self.options['anything']}")

    client = client_factory(app_for(Reversed))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("olleh")
        assert receive_text(ws) == "hello 1"


def test_is_open_until_the_client_leaves(client_factory: ClientFactory) -> None:
    seen: list[bool] = []

    class Watcher(Endpoint):
        async def on_connect(self, websocket: WebSocket) -> None:
            seen.append(self.is_open)
            await super().on_connect(websocket)
            seen.append(self.is_open)

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            seen.append(self.is_open)

    client = client_factory(app_for(Watcher))
    with client.websocket_connect("/ws"):
        pass
    assert seen == [False, True, False]


# send_timeout: a client that does not read


class Stalled(Endpoint):
    send_timeout = 0.05

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        try:
            await websocket.send_text("never taken")
        except WebSocketDisconnect as exc:
            Recorder.disconnects.append((exc.code, exc.reason or "", "raised"))
            with pytest.raises(WebSocketDisconnect):
                await websocket.send_text("still gone")
            raise

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        Recorder.disconnects.append((close_code, self.close_reason, self.closed_by))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_send_timeout_closes_1013_and_releases_the_handler(backend: str) -> None:
    """On asyncio a watch with one timer per connection ends the send; on trio a deadline per send."""
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(Stalled, incoming, stall="websocket.send", backend=backend)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[-1] == {"type": "websocket.close", "code": 1013, "reason": "send timeout"}
    assert Recorder.disconnects == [(1013, "send timeout", "raised"), (1013, "send timeout", "server")]


def test_send_timeout_drops_a_connection_whose_close_cannot_go() -> None:
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(Stalled, incoming, stall="websocket.send websocket.close")
    assert [m["type"] for m in sent] == ["websocket.accept"]
    assert Recorder.disconnects == [(1013, "send timeout", "raised"), (1013, "send timeout", "server")]


@pytest.mark.parametrize("send_timeout", [None, 60])
def test_a_send_within_send_timeout_is_left_alone(send_timeout: float | None) -> None:
    """The connection is cancelled from outside (shutdown) mid-send: that cancellation is not a send timeout."""
    incoming: list[Message] = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    sent = drive(Stalled.configure(send_timeout=send_timeout), incoming, stall="websocket.send")
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert Recorder.disconnects == [(1001, "server shutting down", "server")]


def test_send_timeout_none_sends_as_usual(client_factory: ClientFactory) -> None:
    client = client_factory(app_for(EchoEndpoint.configure(send_timeout=None)))
    with client.websocket_connect("/ws") as ws:
        ws.send_text("no deadline")
        assert receive_text(ws) == "no deadline"


def test_the_receive_loops_scope_takes_back_only_its_own_cancel() -> None:
    """asyncio: a close from another task ends the receive wait; the server's cancel still goes through."""

    async def scenario() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with _TaskScope(task) as scope:  # ours alone: the wait ends, the task goes on uncancelled
            loop.call_soon(scope.cancel)
            await asyncio.sleep(5)
        assert task.cancelling() == 0
        scope.cancel()  # after the exit: too late, a no-op
        await asyncio.sleep(0)
        scope = _TaskScope(task)
        loop.call_soon(scope.cancel)  # ours and the server's
        loop.call_soon(task.cancel)
        with pytest.raises(asyncio.CancelledError), scope:
            await asyncio.sleep(5)
        assert task.cancelling() == 1  # the server's, still to be honoured
        task.uncancel()
        task.cancel()  # a cancel swallowed before the scope began (asyncio.wait_for can do that): not the scope's
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(5)
        with _TaskScope(task) as scope:  # ours alone still ends the wait, and leaves that count as it was
            loop.call_soon(scope.cancel)
            await asyncio.sleep(5)
        assert task.cancelling() == 1
        task.uncancel()
        with _TaskScope(task) as scope:  # a deadline: `idle_timeout`
            scope.deadline = loop.time() + 0.01
            assert scope.deadline < loop.time() + 1
            await asyncio.sleep(5)
        assert task.cancelling() == 0

    asyncio.run(scenario())
