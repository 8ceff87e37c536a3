from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from tests.conftest import ClientFactory
from wsendpoints import OKEndpoint
from wsendpoints.testing import receive_text


def test_ok_answers_every_message_with_ok(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/ok", OKEndpoint)]))
    with client.websocket_connect("/ok") as ws:
        ws.send_text("hello")
        assert receive_text(ws) == "OK!"
        ws.send_bytes(b"\x00")
        assert receive_text(ws) == "OK!"


def test_ok_reply_option(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/ok", OKEndpoint.configure(reply="{ack}"))]))
    with client.websocket_connect("/ok") as ws:
        ws.send_text("hello")
        assert receive_text(ws) == "{ack}"


def test_ok_reply_must_be_text() -> None:
    with pytest.raises(TypeError, match="reply must be a str, got b'OK'"):
        OKEndpoint.configure(reply=b"OK")  # type: ignore[arg-type]  # the type checker catches it too
