from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

from tests.conftest import ClientFactory
from wsendpoints import EchoEndpoint, OKEndpoint
from wsendpoints.testing import (
    assert_no_message,
    expect_close,
    receive,
    receive_bytes,
    receive_json,
    receive_text,
)

app = Starlette(
    routes=[
        WebSocketRoute("/echo", EchoEndpoint),
        WebSocketRoute("/small", EchoEndpoint.configure(max_message_size=1)),
        WebSocketRoute("/ok", OKEndpoint),
    ]
)


def test_receive_times_out_instead_of_hanging(client_factory: ClientFactory) -> None:
    with client_factory(app).websocket_connect("/echo") as ws:
        started = time.monotonic()
        for helper in (receive, receive_text, receive_bytes, receive_json, expect_close):
            with pytest.raises(TimeoutError):
                helper(ws, timeout=0.05)
        assert time.monotonic() - started < 5  # generous: five 0.05 s timeouts, on two shared cores
        ws.send_text("still works")
        assert receive_text(ws) == "still works"


def test_receive_helpers_check_the_message_kind(client_factory: ClientFactory) -> None:
    with client_factory(app).websocket_connect("/echo") as ws:
        ws.send_bytes(b"x")
        with pytest.raises(AssertionError, match="expected a text message, got bytes b'x'"):
            receive_text(ws)
        ws.send_text("x")
        with pytest.raises(AssertionError, match="expected a bytes message, got text 'x'"):
            receive_bytes(ws)
        ws.send_text('{"a": 1}')
        assert receive_json(ws) == {"a": 1}


def test_receive_helpers_raise_disconnect_on_close(client_factory: ClientFactory) -> None:
    with client_factory(app).websocket_connect("/small") as ws:
        ws.send_text("too big")
        with pytest.raises(WebSocketDisconnect) as info:
            receive_text(ws)
        assert (info.value.code, info.value.reason) == (1009, "message too big")


def test_assert_no_message_fails_on_message_or_close(client_factory: ClientFactory) -> None:
    with client_factory(app).websocket_connect("/ok") as ws:
        assert_no_message(ws, within=0.01)
        ws.send_text("x")
        with pytest.raises(AssertionError, match=r"expected no message within 0\.5s, got text 'OK!'"):
            assert_no_message(ws, within=0.5)
    with client_factory(app).websocket_connect("/small") as ws:
        ws.send_text("too big")
        with pytest.raises(AssertionError, match="got close 1009 'message too big'"):
            assert_no_message(ws, within=0.5)


def test_expect_close_fails_on_message(client_factory: ClientFactory) -> None:
    with client_factory(app).websocket_connect("/echo") as ws:
        ws.send_text("x")
        with pytest.raises(AssertionError, match="expected a close, got text 'x'"):
            expect_close(ws)


def test_the_private_attributes_the_helpers_rely_on_exist(client_factory: ClientFactory) -> None:
    """Fails loudly when a Starlette release drops what `wsendpoints.testing` needs (it has no public way)."""
    with client_factory(app).websocket_connect("/echo") as ws:
        assert hasattr(ws, "_send_rx"), "WebSocketTestSession._send_rx is gone: rewrite testing.receive()"
        assert callable(ws._raise_on_close), "WebSocketTestSession._raise_on_close is gone: rewrite testing._data()"


def test_helpers_name_the_starlette_they_need() -> None:
    class OldSession:
        """A session of a Starlette before 0.45.1, without `_send_rx`."""

    with pytest.raises(RuntimeError, match=r"needs WebSocketTestSession\._send_rx \(Starlette 0\.45\.1 and later\)"):
        receive(OldSession())  # type: ignore[arg-type]
