"""A script that checks the "OK!" responder with Starlette's `TestClient`, as you would write one.

`TestClient`'s own `receive_text()` waits forever if no answer comes; the helpers of
`wsendpoints.testing` wait at most a second and raise `TimeoutError`, so a broken app makes the
script fail instead of hang. No server is needed: `TestClient` runs the app in-process.

Run: python -m examples.ok_check
"""

from __future__ import annotations

import sys

from starlette.testclient import TestClient

from examples.ok_responder import app
from wsendpoints import CloseCode, testing

__all__ = ["main"]


def main() -> int:
    """Check the responder; print what was checked and return the exit status."""
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_text("Hello, server!")
        assert testing.receive_text(ws) == "OK!"
        ws.send_bytes(b"\x00\x01")
        assert testing.receive_text(ws) == "OK!"
        testing.assert_no_message(ws)
        ws.send_text("x" * (1024 * 1024 + 1))
        assert testing.expect_close(ws) == (CloseCode.MESSAGE_TOO_BIG, "message too big")
    print("ok_responder: text and bytes answered with OK!, nothing else sent, oversized message closed with 1009")
    return 0


if __name__ == "__main__":
    sys.exit(main())
