"""The ready-made endpoints and their base."""

from __future__ import annotations

from .base import Endpoint
from .echo import EchoEndpoint
from .ok import OKEndpoint
from .room import RoomEndpoint

__all__ = ["EchoEndpoint", "Endpoint", "OKEndpoint", "RoomEndpoint"]
