"""Ready-made WebSocket endpoints for Starlette, with deliberate close codes."""

from __future__ import annotations

from .brokers import Broker, History, MemoryBroker, Message
from .closecodes import CloseCode, describe_close_code
from .endpoints import EchoEndpoint, Endpoint, OKEndpoint, RoomEndpoint
from .exceptions import BrokerClosedError, BrokerError, BrokerUnavailableError, TooManyRoomsError, WSEndpointsError

__version__ = "0.1.0.dev0"

__all__ = [
    "Broker",
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "CloseCode",
    "EchoEndpoint",
    "Endpoint",
    "History",
    "MemoryBroker",
    "Message",
    "OKEndpoint",
    "RoomEndpoint",
    "TooManyRoomsError",
    "WSEndpointsError",
    "__version__",
    "describe_close_code",
]
