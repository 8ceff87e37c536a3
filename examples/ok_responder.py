"""The "OK!" responder: every message, text or bytes, is answered with the text "OK!".

The tutorial endpoint, rebuilt on `OKEndpoint`. Unlike the hand-written one it answers bytes
as well as text, closes with 1009 on messages over 1 MiB, with 1011 (and one log line) if
anything goes wrong, and refuses handshakes from other sites' pages. `examples/ok_check.py`
checks it with Starlette's `TestClient`.

Run: uvicorn examples.ok_responder:app, then connect to ws://127.0.0.1:8000/ws
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from wsendpoints import OKEndpoint

__all__ = ["app"]

app = Starlette(routes=[WebSocketRoute("/ws", OKEndpoint)])
