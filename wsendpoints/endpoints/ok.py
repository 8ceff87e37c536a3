"""`OKEndpoint`: answer every message with "OK!"."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.websockets import WebSocket

from .._options import OptionCheck, check_text
from .base import Endpoint

__all__ = ["OKEndpoint"]


class OKEndpoint(Endpoint):
    """Answer every message, text or bytes, with the text `reply` ("OK!").

    Example:
        ```python
        routes = [WebSocketRoute("/ok", OKEndpoint), WebSocketRoute("/ack", OKEndpoint.configure(reply="ack"))]
        ```
    """

    reply: str = "OK!"

    _wsendpoints_options: ClassVar[dict[str, OptionCheck]] = {**Endpoint._wsendpoints_options, "reply": check_text()}

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send({"type": "websocket.send", "text": self.reply})
