"""Ready-made WebSocket endpoints for Starlette, with deliberate close codes."""

from __future__ import annotations

from .closecodes import CloseCode, describe_close_code
from .endpoints import EchoEndpoint, Endpoint, OKEndpoint
from .exceptions import BrokerClosedError, BrokerError, BrokerUnavailableError, WSEndpointsError

__version__ = "0.1.0.dev0"

__all__ = [
    "BrokerClosedError",
    "BrokerError",
    "BrokerUnavailableError",
    "CloseCode",
    "EchoEndpoint",
    "Endpoint",
    "OKEndpoint",
    "WSEndpointsError",
    "__version__",
    "describe_close_code",
]
