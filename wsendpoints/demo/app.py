"""The demo app: every endpoint of the library mounted, and a page listing them."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute

from ..endpoints import EchoEndpoint, OKEndpoint

__all__ = ["create_app"]

_HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>wsendpoints demo</title></head>
<body><h1>wsendpoints demo</h1>
<ul><li><code>/echo</code>: EchoEndpoint</li><li><code>/ok</code>: OKEndpoint</li></ul>
</body></html>
"""


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse(_HOME)


def create_app() -> Starlette:
    """Build the demo app."""
    return Starlette(
        routes=[
            Route("/", home),
            WebSocketRoute("/echo", EchoEndpoint),
            WebSocketRoute("/ok", OKEndpoint),
        ]
    )
