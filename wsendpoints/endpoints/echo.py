"""`EchoEndpoint`: every message straight back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from starlette.websockets import WebSocket

from .. import _json
from .._options import OptionCheck, check_template
from .base import Endpoint, EndpointOptions

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["EchoEndpoint", "EchoOptions"]


class EchoOptions(EndpointOptions, total=False):
    """The options of `EchoEndpoint.configure()`, for the type checker."""

    template: str | None


class EchoEndpoint(Endpoint):
    """Send each message back: text as text, bytes as bytes, in order.

    With `encoding="json"` the decoded value goes back as compact JSON text.

    Option `template` formats text replies, with the received text as `{data}`.

    Example:
        ```python
        routes = [
            WebSocketRoute("/echo", EchoEndpoint),
            WebSocketRoute("/chat", EchoEndpoint.configure(template="Message text was: {data}")),
        ]
        ```
    """

    template: str | None = None

    _wsendpoints_options: ClassVar[dict[str, OptionCheck]] = {
        **Endpoint._wsendpoints_options,
        "template": check_template("data"),
    }

    @classmethod
    def configure(cls, **options: Unpack[EchoOptions]) -> type[Self]:
        """Return a subclass with `options` set; see `Endpoint.configure()`."""
        return cls._configure(options)

    def _reply(self) -> str | bool:
        """Text goes back as it came, unless a template or a subclass's `on_receive` says otherwise."""
        return self.template is None and type(self).on_receive is EchoEndpoint.on_receive

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        if isinstance(data, bytes):
            await websocket.send({"type": "websocket.send", "bytes": data})
            return
        if self.encoding == "json":  # decoded JSON goes back as JSON text
            data = _json.dumps(data)
        template = self.template
        text = data if template is None else template.format(data=data)
        await websocket.send({"type": "websocket.send", "text": text})
