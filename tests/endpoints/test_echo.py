from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from tests.conftest import ClientFactory
from wsendpoints import EchoEndpoint
from wsendpoints.testing import assert_no_message, receive_bytes, receive_text


def test_echo_returns_text_as_text_and_bytes_as_bytes_in_order(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint)]))
    with client.websocket_connect("/echo") as ws:
        for n in range(20):
            ws.send_text(f"t{n}")
            ws.send_bytes(b"b%d" % n)
        for n in range(20):
            assert receive_text(ws) == f"t{n}"
            assert receive_bytes(ws) == b"b%d" % n
        assert_no_message(ws)


def test_echo_template_formats_text_replies_only(client_factory: ClientFactory) -> None:
    endpoint = EchoEndpoint.configure(template="Message text was: {data}")
    client = client_factory(Starlette(routes=[WebSocketRoute("/echo", endpoint)]))
    with client.websocket_connect("/echo") as ws:
        ws.send_text("{data} <b>hi</b>")
        assert receive_text(ws) == "Message text was: {data} <b>hi</b>"
        ws.send_bytes(b"raw")
        assert receive_bytes(ws) == b"raw"


@pytest.mark.parametrize(
    ("template", "error"), [("{other}", ValueError), ("{0}", ValueError), ("{data", ValueError), (3, TypeError)]
)
def test_echo_template_must_use_only_data(template: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="template"):
        EchoEndpoint.configure(template=template)  # type: ignore[arg-type]  # on purpose


def test_echo_with_json_encoding_sends_json_text(client_factory: ClientFactory) -> None:
    client = client_factory(Starlette(routes=[WebSocketRoute("/echo", EchoEndpoint.configure(encoding="json"))]))
    with client.websocket_connect("/echo") as ws:
        ws.send_text('{"a": [1, 2.5, "é"]}')
        assert receive_text(ws) == '{"a":[1,2.5,"é"]}'
        ws.send_bytes(b'"text"')
        assert receive_text(ws) == '"text"'
