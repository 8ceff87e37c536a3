"""`OKEndpoint`: answer every message with "OK!"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from starlette.websockets import WebSocket

from .._options import OptionCheck, check_text
from .base import Endpoint, EndpointOptions

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["OKEndpoint", "OKOptions"]


class OKOptions(EndpointOptions, total=False):
    """The options of `OKEndpoint.configure()`, for the type checker."""

    reply: str


class OKEndpoint(Endpoint):
    """Answer every message, text or bytes, with the text `reply` ("OK!").

    Example:
        ```python
        routes = [WebSocketRoute("/ok", OKEndpoint), WebSocketRoute("/ack", OKEndpoint.configure(reply="ack"))]
        ```
    """

    reply: str = "OK!"

    _wsendpoints_options: ClassVar[dict[str, OptionCheck]] = {**Endpoint._wsendpoints_options, "reply": check_text()}

    @classmethod
    def configure(cls, **options: Unpack[OKOptions]) -> type[Self]:
        """Return a subclass with `options` set; see `Endpoint.configure()`."""
        return cls._configure(options)

    def _reply(self) -> str | bool:
        """`reply`, unless a subclass's `on_receive` says otherwise."""
        return self.reply if type(self).on_receive is OKEndpoint.on_receive else False

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send({"type": "websocket.send", "text": self.reply})
