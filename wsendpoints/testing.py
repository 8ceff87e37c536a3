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
from typing import Any

import anyio
from starlette.testclient import WebSocketTestSession
from starlette.types import Message

__all__ = [
    "assert_no_message",
    "expect_close",
    "receive",
    "receive_bytes",
    "receive_json",
    "receive_text",
]


def receive(ws: WebSocketTestSession, timeout: float = 1.0) -> Message:
    """Return the next ASGI message the app sent on `ws`.

    Raises:
        TimeoutError: If none comes within `timeout` seconds.
    """

    async def next_message() -> Message:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    return ws.portal.call(next_message)


def _data(ws: WebSocketTestSession, timeout: float, key: str) -> Any:
    message = receive(ws, timeout)
    ws._raise_on_close(message)
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


def _describe(message: Message) -> str:
    if message["type"] == "websocket.close":
        return f"close {message.get('code', 1000)} {message.get('reason') or ''!r}"
    if message.get("text") is not None:
        return f"text {message['text']!r}"
    return f"bytes {message.get('bytes')!r}"
