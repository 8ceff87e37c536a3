from __future__ import annotations

from examples import quickstart
from tests.conftest import ClientFactory
from wsendpoints.testing import receive_text


def test_quickstart_mounts_echo_ok_and_templated_echo(client_factory: ClientFactory) -> None:
    client = client_factory(quickstart.app)
    with client.websocket_connect("/echo") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "hi"
    with client.websocket_connect("/ok") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "OK!"
    with client.websocket_connect("/chat-echo") as ws:
        ws.send_text("hi")
        assert receive_text(ws) == "Message text was: hi"
