"""The exceptions wsendpoints raises.

```
WSEndpointsError
└── BrokerError
    ├── BrokerClosedError       the broker was closed
    ├── BrokerUnavailableError  the broker's backend (e.g. Redis) cannot be reached
    └── TooManyRoomsError       the broker holds as many rooms as it may (`max_rooms`)
```

Misconfiguration raises the built-in `TypeError` or `ValueError` when the endpoint class is
configured; bad client input never raises, it closes the connection with a `CloseCode`.
"""

from __future__ import annotations

__all__ = ["BrokerClosedError", "BrokerError", "BrokerUnavailableError", "TooManyRoomsError", "WSEndpointsError"]


class WSEndpointsError(Exception):
    """Base class of every exception wsendpoints raises."""


class BrokerError(WSEndpointsError):
    """A broker could not do what was asked."""


class BrokerClosedError(BrokerError):
    """The broker was closed with `aclose()`."""


class BrokerUnavailableError(BrokerError):
    """The broker's backend cannot be reached."""


class TooManyRoomsError(BrokerError):
    """The broker refused to start one more room: it holds as many as it may (`max_rooms`)."""
