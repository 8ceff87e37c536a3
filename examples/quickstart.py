"""A complete app mounting the library's endpoints.

Run: uvicorn examples.quickstart:app
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from wsendpoints import EchoEndpoint, OKEndpoint

__all__ = ["app"]

app = Starlette(
    routes=[
        WebSocketRoute("/echo", EchoEndpoint),
        WebSocketRoute("/ok", OKEndpoint),
        WebSocketRoute("/chat-echo", EchoEndpoint.configure(template="Message text was: {data}", idle_timeout=300)),
    ]
)
